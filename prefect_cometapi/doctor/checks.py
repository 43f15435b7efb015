"""The doctor's checks of the Prefect API, the credentials, the base URL and the Images API.

Each takes the :class:`~.result.DoctorContext` and returns one :class:`~.result.CheckResult`;
none prints, and none puts the API key in its result.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import httpx

from prefect_cometapi.allowlist import (
    ALLOWED_BASE_URLS_ENV,
    DEFAULT_BASE_URL,
    allowed_origins,
    check_base_url,
    origin,
)
from prefect_cometapi.client.keys import resolve_api_key
from prefect_cometapi.client.params import DEFAULT_MODEL
from prefect_cometapi.doctor.result import CheckResult, DoctorContext, Status
from prefect_cometapi.errors import CometAPIError, MissingAPIKeyError, redact

__all__ = [
    "check_api_answers",
    "check_base_url_allowed",
    "check_credentials",
    "check_prefect_api",
]


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _first_line(exc: BaseException, *secrets: str | None) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__, *secrets)[:300]


def check_prefect_api(ctx: DoctorContext) -> CheckResult:
    """The Prefect API the worker talks to answers, and its version.

    Args:
        ctx: The doctor's context (``prefect_ok`` is set).

    Returns:
        ``ok`` with the server's version, ``warning`` when ``PREFECT_API_URL`` is unset (a
        temporary local server would be used), ``problem`` when it does not answer.
    """
    import prefect
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return CheckResult(
            "prefect-api",
            Status.WARNING,
            "PREFECT_API_URL is not set: flow runs here would start a temporary local Prefect "
            "server, not the one your deployments, blocks and limits live on",
            "export PREFECT_API_URL=http://<your server>:4200/api (or prefect cloud login); "
            "the block and limit checks are skipped until then",
        )
    shown = _without_userinfo(url)
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
        if failure is not None:
            return CheckResult(
                "prefect-api",
                Status.PROBLEM,
                f"the Prefect API at {shown} does not answer ({type(failure).__name__}: "
                f"{_first_line(failure)})",
                "start it (prefect server start) or point PREFECT_API_URL at the right server",
                {"url": shown},
            )
        try:
            server_version = client.api_version()
        except Exception as exc:  # noqa: BLE001 - an old server without the endpoint
            server_version = f"unknown ({type(exc).__name__})"
    ctx.prefect_ok = True
    return CheckResult(
        "prefect-api",
        Status.OK,
        f"the Prefect API at {shown} answers (server {server_version}, client "
        f"{prefect.__version__})",
        details={"url": shown, "server_version": server_version, "client": prefect.__version__},
    )


def check_credentials(ctx: DoctorContext) -> CheckResult:
    """The credentials block is found and loads, and its key (or ``COMETAPI_KEY``) is usable.

    The key is checked with :func:`~prefect_cometapi.client.keys.resolve_api_key` (present, no
    character that cannot go in an HTTP header) and kept in ``ctx`` for the API check; it is
    never part of the result.

    Args:
        ctx: The doctor's context (``block`` and ``api_key`` are set).

    Returns:
        The check's result.
    """
    from prefect_cometapi.blocks import CometAPICredentials

    name = ctx.options.credentials
    env_key = os.environ.get("COMETAPI_KEY")
    if name:
        if not ctx.prefect_ok:
            return CheckResult(
                "credentials",
                Status.SKIPPED,
                f"the block {name!r} was not loaded: the Prefect API does not answer",
                "fix the Prefect API first",
            )
        try:
            block = CometAPICredentials.load(name)
        except ValueError as exc:
            if "Unable to find block document" in str(exc) or "not found" in str(exc).lower():
                return CheckResult(
                    "credentials",
                    Status.PROBLEM,
                    f"no CometAPI Credentials block is named {name!r} on this Prefect server",
                    f"create it (UI: Blocks > + > CometAPI Credentials, name {name!r}; or "
                    f"CometAPICredentials(api_key=...).save({name!r})), or leave out "
                    "--credentials to use COMETAPI_KEY",
                    {"block": name},
                )
            return _unloadable(name, exc, env_key)
        except Exception as exc:  # noqa: BLE001 - any load failure is this check's finding
            return _unloadable(name, exc, env_key)
        where = f"the block {name!r} has none and "
    else:
        block = CometAPICredentials()
        where = "no --credentials block was given and "
    ctx.block = block
    own_key = block.api_key is not None and bool(block.api_key.get_secret_value().strip())
    source = f"the block {name!r}" if own_key else "COMETAPI_KEY"
    try:
        key = resolve_api_key(block.api_key)
    except MissingAPIKeyError:
        return CheckResult(
            "credentials",
            Status.PROBLEM,
            f"no API key: {where}COMETAPI_KEY is not set in this environment",
            "export COMETAPI_KEY=sk-... on this worker, or save the key in a CometAPI "
            "Credentials block and pass --credentials NAME",
            {"block": name, "key_source": None},
        )
    except CometAPIError as exc:
        return CheckResult(
            "credentials",
            Status.PROBLEM,
            f"the API key from {source} is malformed: {_first_line(exc, env_key)}",
            "paste the key again (no spaces, line breaks or invisible characters)",
            {"block": name, "key_source": source},
        )
    ctx.api_key = key
    details = {"block": name, "key_source": source}
    if not key.startswith("sk-"):
        return CheckResult(
            "credentials",
            Status.WARNING,
            f"the API key from {source} is well-formed but does not start with 'sk-' as "
            "CometAPI keys do",
            "check that it is a CometAPI key (the API check below tells whether it is accepted)",
            details,
        )
    if not name:
        text = "the API key from COMETAPI_KEY is well-formed"
    elif own_key:
        text = f"the block {name!r} loads and its own API key is well-formed"
    else:
        text = f"the block {name!r} loads (no key of its own); COMETAPI_KEY is well-formed"
    return CheckResult("credentials", Status.OK, text, "", details)


def _unloadable(name: str, exc: BaseException, env_key: str | None) -> CheckResult:
    return CheckResult(
        "credentials",
        Status.PROBLEM,
        f"the block {name!r} does not load ({type(exc).__name__}: {_first_line(exc, env_key)})",
        "open it in the UI (Blocks) and save it again; run prefect block register -m "
        "prefect_cometapi if its type is unknown",
        {"block": name},
    )


def check_base_url_allowed(ctx: DoctorContext) -> CheckResult:
    """The base URL in use is one the worker's allow-list lets the key go to.

    Checked by the code the tasks and flows run: :func:`~prefect_cometapi.blocks.
    resolve_credentials` (a saved block's own base URL, CometAPI's, or a host in
    ``PREFECT_COMETAPI_ALLOWED_BASE_URLS``), then, for the worker's ``COMETAPI_KEY``, the
    client's own check (CometAPI's URL or the allow-list only).

    Args:
        ctx: The doctor's context (``block`` becomes the resolved block and ``base_url`` is
            set when allowed).

    Returns:
        The check's result.
    """
    from prefect_cometapi.blocks import resolve_credentials

    block = ctx.block
    if block is None:
        return CheckResult(
            "base-url", Status.SKIPPED, "not checked: no credentials block", "fix credentials"
        )
    own_key = block.api_key is not None and bool(block.api_key.get_secret_value().strip())
    wanted = ctx.options.base_url or block.base_url
    try:
        resolved = resolve_credentials(block, ctx.options.base_url)
        if not own_key:
            check_base_url(resolved.base_url)  # as the client checks it for COMETAPI_KEY
    except CometAPIError as exc:
        try:
            scheme, host, port = origin(wanted)
            entry = f"{scheme}://{host}:{port}"
        except CometAPIError:
            entry = "an http(s)://host:port URL"
        return CheckResult(
            "base-url",
            Status.PROBLEM,
            f"the allow-list refuses the base URL: {_first_line(exc)}",
            f"on this worker: export {ALLOWED_BASE_URLS_ENV}={entry} (if you trust that host "
            "with the key), or use https://api.cometapi.com/v1",
            {"base_url": entry},
        )
    allowed = str(resolved.base_url).strip().rstrip("/")
    ctx.block, ctx.base_url = resolved, allowed
    listed = origin(allowed) in allowed_origins(ALLOWED_BASE_URLS_ENV)
    why = (
        "CometAPI's own"
        if origin(allowed) == origin(DEFAULT_BASE_URL)
        else f"listed in {ALLOWED_BASE_URLS_ENV}"
        if listed
        else "the saved block's own, for its own key"
    )
    return CheckResult(
        "base-url",
        Status.OK,
        f"the base URL {allowed} is allowed ({why})",
        details={"base_url": allowed},
    )


def check_api_answers(ctx: DoctorContext) -> CheckResult:
    """The API answers a request that costs nothing (``GET {base_url}/models``) with this key.

    Sent only to a base URL the allow-list accepted, without retries or redirects.

    Args:
        ctx: The doctor's context (``models`` and ``api_ok`` are set).

    Returns:
        The check's result.
    """
    if ctx.api_key is None or ctx.base_url is None:
        return CheckResult(
            "api",
            Status.SKIPPED,
            "not checked: the key is sent only once it is well-formed and its host is allowed",
            "fix the credentials and base-url lines first",
        )
    url = f"{ctx.base_url}/models"
    try:
        with httpx.Client(timeout=ctx.options.timeout_s, follow_redirects=False) as http:
            response = http.get(url, headers={"Authorization": f"Bearer {ctx.api_key}"})
    except httpx.HTTPError as exc:
        return CheckResult(
            "api",
            Status.PROBLEM,
            f"GET {url} got no answer ({type(exc).__name__}: {_first_line(exc, ctx.api_key)})",
            "check the base URL, this machine's network, proxy and firewall",
            {"url": url},
        )
    status = response.status_code
    details = {"url": url, "status": status}
    if status in (401, 403):
        return CheckResult(
            "api",
            Status.PROBLEM,
            f"GET {url} answered {status}: the API refuses this key",
            "check the key in your CometAPI console (a typo, a revoked key, no balance), then "
            "paste it again",
            details,
        )
    if status == 404:
        return CheckResult(
            "api",
            Status.WARNING,
            f"GET {url} answered 404: the host answers but has no models list, so the key "
            "was not verified",
            "check that the base URL ends in /v1; --live checks the key with one generation",
            details,
        )
    if status != 200:
        return CheckResult(
            "api",
            Status.WARNING if status == 429 or status >= 500 else Status.PROBLEM,
            f"GET {url} answered {status}",
            "try again in a minute (429 or 5xx is the service's load)"
            if status == 429 or status >= 500
            else "check the base URL (it must be the API's, ending in /v1)",
            details,
        )
    try:
        models = [str(m["id"]) for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        models = []
    ctx.models = models
    ctx.api_ok = True
    details["models"] = len(models)
    if models and not any(m == DEFAULT_MODEL or m.startswith(DEFAULT_MODEL + "-") for m in models):
        return CheckResult(
            "api",
            Status.WARNING,
            f"the API answers and accepts the key, but its {len(models)} models do not include "
            f"{DEFAULT_MODEL}, the tasks' default model",
            "pass model= to the tasks and flows with a model this API lists",
            details,
        )
    return CheckResult(
        "api",
        Status.OK,
        f"the API answers and accepts the key (GET {url}: {len(models)} models, free)",
        details=details,
    )
