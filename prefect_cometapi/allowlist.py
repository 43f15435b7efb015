"""Where a run parameter may send the worker's secrets: the worker's own allow-lists.

Flow parameters are typed by whoever starts a run, so they may choose *what* to generate, never
*where the key is sent*. Two lists, read from the worker's environment (a run parameter cannot
change them), widen the safe defaults:

``PREFECT_COMETAPI_ALLOWED_BASE_URLS``
    API base URLs, besides CometAPI's own (``https://api.cometapi.com``), that a ``base_url`` run
    parameter or an unsaved credentials block may name, and that the worker's ``COMETAPI_KEY``
    may be sent to. A saved CometAPI Credentials block's own base URL is always allowed for its
    own key.
``PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS``
    S3-compatible endpoints an ``s3.endpoint_url`` run parameter may name (the worker signs its
    requests there with its AWS identity). Without it, only AWS itself (no ``endpoint_url``) or
    the worker's own ``AWS_ENDPOINT_URL_S3`` is used.

Entries are URLs separated by commas or whitespace; they match on scheme, host and port (the
path is ignored), e.g. ``PREFECT_COMETAPI_ALLOWED_BASE_URLS=http://127.0.0.1:8000``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from prefect_cometapi.errors import ValidationError

__all__ = [
    "DEFAULT_BASE_URL",
    "ALLOWED_BASE_URLS_ENV",
    "ALLOWED_S3_ENDPOINTS_ENV",
    "Origin",
    "allowed_origins",
    "allowing",
    "check_base_url",
    "check_s3_endpoint",
    "origin",
]

DEFAULT_BASE_URL = "https://api.cometapi.com/v1"
"""CometAPI's own API base URL: the clients' default, always allowed."""
ALLOWED_BASE_URLS_ENV = "PREFECT_COMETAPI_ALLOWED_BASE_URLS"
ALLOWED_S3_ENDPOINTS_ENV = "PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS"
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]
"""``(scheme, host, port)``, lower-case, with the scheme's default port filled in."""


def origin(url: str, param: str = "base_url") -> Origin:
    """The normalised scheme, host and port of an ``http(s)`` URL.

    Args:
        url: The URL.
        param: The parameter errors blame.

    Returns:
        ``(scheme, host, port)``.

    Raises:
        ValidationError: Not an ``http(s)`` URL with a host, or it carries a user name or
            password.
    """
    text = str(url).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValidationError(param, "must be an http(s) URL with a valid port") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValidationError(param, "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(param, "must not carry a user name or password")
    host = parts.hostname.lower().rstrip(".")
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def allowed_origins(env_name: str) -> set[Origin]:
    """The origins listed in the environment variable ``env_name`` (malformed entries skipped).

    Args:
        env_name: :data:`ALLOWED_BASE_URLS_ENV` or :data:`ALLOWED_S3_ENDPOINTS_ENV`.

    Returns:
        The set of origins.
    """
    found: set[Origin] = set()
    for entry in os.environ.get(env_name, "").replace(",", " ").split():
        try:
            found.add(origin(entry, env_name))
        except ValidationError:
            continue
    return found


def _shown(o: Origin) -> str:
    scheme, host, port = o
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS[scheme] == port else f":{port}")


def check_base_url(url: str, *, param: str = "base_url", also: Iterable[str] = ()) -> str:
    """Refuse an API base URL the worker has not allowed the key to go to.

    Allowed: CometAPI's own base URL, the entries of ``PREFECT_COMETAPI_ALLOWED_BASE_URLS``
    and ``also`` (a saved credentials block's own base URL).

    Args:
        url: The base URL a parameter or an unsaved block names.
        param: The parameter errors blame.
        also: Further allowed base URLs.

    Returns:
        ``url`` without a trailing ``/``.

    Raises:
        ValidationError: ``param`` names a host that is not allowed (the key was not sent).
    """
    wanted = origin(url, param)
    allowed = {origin(DEFAULT_BASE_URL)} | allowed_origins(ALLOWED_BASE_URLS_ENV)
    allowed |= {origin(extra) for extra in also if extra}
    if wanted not in allowed:
        raise ValidationError(
            param,
            f"{_shown(wanted)} is not an allowed API host, so the API key is not sent there; "
            f"a worker allows other hosts with {ALLOWED_BASE_URLS_ENV} (or a saved "
            "CometAPI Credentials block's own base_url)",
        )
    return str(url).strip().rstrip("/")


def check_s3_endpoint(url: str | None, *, param: str = "endpoint_url") -> str | None:
    """Refuse an S3 endpoint the worker has not allowed its AWS identity to sign requests for.

    Args:
        url: The endpoint a parameter names; ``None`` or empty for AWS (or the worker's own
            ``AWS_ENDPOINT_URL_S3``).
        param: The parameter errors blame.

    Returns:
        The endpoint, or ``None``.

    Raises:
        ValidationError: ``param`` names an endpoint not in
            ``PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS``.
    """
    if url is None or not str(url).strip():
        return None
    wanted = origin(url, param)
    if wanted not in allowed_origins(ALLOWED_S3_ENDPOINTS_ENV):
        raise ValidationError(
            param,
            f"{_shown(wanted)} is not an allowed S3 endpoint, so no request is signed for it; "
            f"a worker allows S3-compatible endpoints with {ALLOWED_S3_ENDPOINTS_ENV} (or "
            "sets AWS_ENDPOINT_URL_S3 itself)",
        )
    return str(url).strip()


@contextmanager
def allowing(base_urls: Iterable[str] = (), s3_endpoints: Iterable[str] = ()) -> Iterator[None]:
    """Add entries to this process's allow-lists for a while (the worker owner's own choice).

    For programs that start their own services, such as the offline demo with its emulator and
    S3 server; a deployment's workers set the environment variables instead. Child processes
    started meanwhile inherit the entries.

    Args:
        base_urls: API base URLs to allow.
        s3_endpoints: S3 endpoints to allow.

    Yields:
        Nothing; the previous values are restored on exit.
    """
    added = {ALLOWED_BASE_URLS_ENV: base_urls, ALLOWED_S3_ENDPOINTS_ENV: s3_endpoints}
    saved = {name: os.environ.get(name) for name in added}
    for name, extra in added.items():
        entries = [saved[name] or "", *[e for e in extra if e]]
        os.environ[name] = ",".join(e for e in entries if e)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
