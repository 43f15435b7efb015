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
``PREFECT_COMETAPI_INPUT_ROOTS``
    Folders (separated by ``os.pathsep``) besides the working directory and the packaged
    examples from which templates, items files and edit inputs may be read by path.
``PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS``
    Host names (or ``host:port``) that input URLs may name even though they resolve to a
    loopback, link-local, private or reserved address (an intranet file server, a test server).

Entries are URLs separated by commas or whitespace; they match on scheme, host and port (the
path is ignored), e.g. ``PREFECT_COMETAPI_ALLOWED_BASE_URLS=http://127.0.0.1:8000``.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from prefect_cometapi.errors import ValidationError

__all__ = [
    "EXAMPLES_DIR",
    "DEFAULT_BASE_URL",
    "ALLOWED_BASE_URLS_ENV",
    "ALLOWED_S3_ENDPOINTS_ENV",
    "INPUT_ROOTS_ENV",
    "allowed_origins",
    "check_base_url",
    "check_input_url",
    "check_s3_endpoint",
    "confine_path",
    "origin",
    "shown_path",
]

DEFAULT_BASE_URL = "https://api.cometapi.com/v1"
"""CometAPI's own API base URL: the clients' default, always allowed."""
ALLOWED_BASE_URLS_ENV = "PREFECT_COMETAPI_ALLOWED_BASE_URLS"
ALLOWED_S3_ENDPOINTS_ENV = "PREFECT_COMETAPI_ALLOWED_S3_ENDPOINTS"
INPUT_ROOTS_ENV = "PREFECT_COMETAPI_INPUT_ROOTS"
ALLOWED_INPUT_HOSTS_ENV = "PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS"
EXAMPLES_DIR = (
    Path(
        importlib.util.find_spec("prefect_cometapi.flows").submodule_search_locations[0]  # type: ignore[union-attr]
    ).resolve()
    / "examples"
)
"""The example template and products shipped with the flows (``prefect_cometapi.flows``'s
``examples`` folder), found without importing the flows."""
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


def input_roots() -> list[Path]:
    """The folders local inputs may be read from: the working directory, the packaged examples
    and ``PREFECT_COMETAPI_INPUT_ROOTS``.

    Returns:
        Their real paths (symlinks resolved).
    """
    roots = [Path.cwd(), EXAMPLES_DIR]
    roots += [Path(p) for p in os.environ.get(INPUT_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.realpath(root)) for root in roots]


def confine_path(path: str | os.PathLike[str], param: str) -> Path:
    """The real path of a local input, refused unless it lies inside an allowed root.

    ``..`` segments are refused outright; symlinks are resolved first, so a link pointing out of
    the roots is refused too. Read the returned path (not the one given), so that what was
    checked is what is read.

    Args:
        path: The path a parameter gave (relative paths are relative to the working directory).
        param: The parameter errors blame.

    Returns:
        The resolved path.

    Raises:
        ValidationError: ``file://`` URLs, ``..`` segments or a path outside every root (the
            error names the rule, never the file's contents).
    """
    text = os.fsdecode(os.fspath(path))
    if text.lower().startswith("file:"):
        raise ValidationError(param, "file:// URLs are not accepted; give a path")
    if ".." in Path(text).parts:
        raise ValidationError(param, "'..' is not allowed in input paths")
    real = Path(os.path.realpath(Path(text).expanduser()))
    for root in input_roots():
        if real == root or root in real.parents:
            return real
    raise ValidationError(
        param,
        f"{text} is outside the folders inputs may be read from (the working directory and "
        f"the packaged examples; a worker adds more with {INPUT_ROOTS_ENV}); symlinks are "
        "followed before this check",
    )


def shown_path(path: str | os.PathLike[str]) -> str:
    """A local path as an error message may show it: relative to the input root it lies in.

    Error messages reach the run's state, logs and artifacts, which whoever starts runs can
    read; the worker's absolute paths (its home, checkout, mount points) stay out of them. A
    path inside the working directory shows as ``images/a.png``, one inside the packaged
    examples as ``examples/...``, one inside a ``PREFECT_COMETAPI_INPUT_ROOTS`` folder relative to
    it, and any other as its file name only.

    Args:
        path: A path (absolute or relative to the working directory).

    Returns:
        The path to show.
    """
    given = Path(os.fsdecode(os.fspath(path)))
    if not given.is_absolute():
        return given.as_posix()
    real = Path(os.path.realpath(given))
    for number, root in enumerate(input_roots()):
        for candidate in (given, real):
            if candidate == root or root in candidate.parents:
                inside = candidate.relative_to(root).as_posix()
                if number == 0:
                    return inside
                return f"{'examples' if number == 1 else f'<input root {number - 1}>'}/{inside}"
    return f".../{given.name}"


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_input_url(url: str, param: str) -> str | None:
    """Refuse an input URL whose host resolves to an internal address, unless the worker allows it.

    Checked after DNS resolution (every address the name resolves to), and to be called again
    for every redirect. The caller connects to the returned address, not to the name: a second
    lookup could answer differently (DNS rebinding) and reach an address never checked.

    Args:
        url: An ``http(s)://`` URL.
        param: The parameter errors blame.

    Returns:
        The checked address to connect to, or ``None`` for a host the worker allows (connect
        to it by name).

    Raises:
        ValidationError: The host resolves to a loopback, link-local, private, reserved or
            multicast address and is not in ``PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS``, or it
            does not resolve at all.
    """
    scheme, host, port = origin(url, param)
    allowed = {h.strip().lower() for h in os.environ.get(ALLOWED_INPUT_HOSTS_ENV, "").split(",")}
    if host in allowed or f"{host}:{port}" in allowed:
        return None
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise ValidationError(param, f"the host {host} of an input URL does not resolve") from None
    if any(_internal(str(info[4][0])) for info in infos):
        raise ValidationError(
            param,
            f"{scheme}://{host} resolves to a loopback, link-local, private or reserved "
            f"address, which inputs may not be fetched from (a worker allows a host with "
            f"{ALLOWED_INPUT_HOSTS_ENV})",
        )
    if not infos:
        raise ValidationError(param, f"the host {host} of an input URL does not resolve")
    return str(infos[0][4][0]).split("%", 1)[0]
