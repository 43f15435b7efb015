"""The cache key of an image request: what determines the image, and whose key may see it.

``PREFECT_COMETAPI_CACHE_SCOPE`` (a worker setting) says whether the image cache is shared
across API keys:

``per-key`` (the default)
    Each API key has its own cache: the key is folded into the cache key as an HMAC-SHA256
    with a fixed salt (never the key, nor anything it can be recovered from). A prompt cached
    by one team's key is not served to another key, a revoked or invalid key gets no cached
    image (its request goes to the API, which refuses it), and nobody can probe whether another
    key generated a prompt.
``shared``
    One cache for every key (the keys are exactly those of the releases before the setting):
    a prompt generated once is free for everyone. Right when one team owns every key.

Per-key is the default because a Prefect server shared by several teams must not serve one
team's paid images to another, or any image to a key the API no longer accepts. It changes
every cache key computed before it: after upgrading, a cached prompt is paid for once more
per key, unless the worker sets ``PREFECT_COMETAPI_CACHE_SCOPE=shared``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from prefect_cometapi.allowlist import DEFAULT_BASE_URL, origin
from prefect_cometapi.client.params import cache_key_names
from prefect_cometapi.errors import ValidationError

__all__ = ["CACHE_SCOPE_ENV", "cache_scope", "image_cache_key"]

CACHE_KEY_VERSION = "v1"
CACHE_SCOPE_ENV = "PREFECT_COMETAPI_CACHE_SCOPE"
CACHE_SCOPES = ("per-key", "shared")
"""The values of :data:`CACHE_SCOPE_ENV`; the first is the default."""
_SCOPE_SALT = b"prefect-cometapi image cache scope v1"


def cache_scope() -> str:
    """The worker's cache scope (:data:`CACHE_SCOPE_ENV`): ``per-key`` (default) or ``shared``.

    Returns:
        The scope.

    Raises:
        ValidationError: Another value.
    """
    value = (os.environ.get(CACHE_SCOPE_ENV) or "").strip().lower() or CACHE_SCOPES[0]
    if value not in CACHE_SCOPES:
        raise ValidationError(CACHE_SCOPE_ENV, "must be 'per-key' or 'shared'", value)
    return value


def image_cache_key(
    endpoint: str,
    params: dict[str, Any],
    image_sha256: list[str] | None = None,
    mask_sha256: str | None = None,
) -> str:
    """The one cache-key function for image requests.

    The service that makes the image is part of the key: the scheme, host and port of the
    ``credentials``' base URL (an emulator's or a test server's images are never served to a
    run against the real API). CometAPI's own base URL adds nothing, so keys of real requests
    are the same as before the service was part of them. In the ``per-key`` cache scope
    (:func:`cache_scope`, the default) an HMAC of the API key in use (the credentials' own, or
    ``COMETAPI_KEY``) is part of it too; in the ``shared`` scope nothing is added.

    Args:
        endpoint: ``"generations"`` or ``"edits"``.
        params: Task inputs; the prompt, the parameters marked ``cache_key`` in
            :data:`~prefect_cometapi.client.params.IMAGE_PARAMS` and the base URL of
            ``credentials`` (a block, or ``None`` for the default) are used.
        image_sha256: The sha256 of every input image, in order (edits).
        mask_sha256: The sha256 of the mask (edits).

    Returns:
        A hex digest, stable across processes and machines.
    """
    material = {
        "v": CACHE_KEY_VERSION,
        "endpoint": endpoint,
        "prompt": params.get("prompt"),
        **{name: params.get(name) for name in cache_key_names()},
        "images": list(image_sha256 or []),
        "mask": mask_sha256,
    }
    credentials = _resolved(params.get("credentials"))
    service = _service(credentials)
    if service is not None:
        material["service"] = service
    if cache_scope() == "per-key":
        material["key_scope"] = _key_scope(credentials)
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return f"cometapi-{endpoint}-{hashlib.sha256(blob).hexdigest()}"


def _resolved(credentials: Any) -> Any:
    """A saved block's name loaded as the block (its base URL and key decide); else as given."""
    if isinstance(credentials, str):
        from prefect_cometapi.blocks.credentials import resolve_credentials

        return resolve_credentials(credentials)
    return credentials


def _key_scope(credentials: Any) -> str:
    """HMAC-SHA256 of the API key the request will use, with a fixed salt (never the key)."""
    key = getattr(credentials, "api_key", None)
    if hasattr(key, "get_secret_value"):
        key = key.get_secret_value()
    text = str(key or os.environ.get("COMETAPI_KEY") or "").strip()
    return hmac.new(_SCOPE_SALT, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _service(credentials: Any) -> str | None:
    """``scheme://host:port`` of the credentials' base URL; ``None`` for CometAPI's own."""
    base_url = getattr(credentials, "base_url", None)
    if not isinstance(base_url, str):
        return None
    try:
        scheme, host, port = origin(base_url)
    except ValidationError:
        return base_url.strip().lower()
    if (scheme, host, port) == origin(DEFAULT_BASE_URL):
        return None
    return f"{scheme}://{host}:{port}"
