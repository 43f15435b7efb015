"""The cache key of an image request: what determines the image, nothing else."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect_cometapi.allowlist import DEFAULT_BASE_URL, origin
from prefect_cometapi.client.params import cache_key_names
from prefect_cometapi.errors import ValidationError

__all__ = ["CACHE_KEY_VERSION", "image_cache_key"]

CACHE_KEY_VERSION = "v1"


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
    are the same as before the service was part of them.

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
    service = _service(params.get("credentials"))
    if service is not None:
        material["service"] = service
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return f"cometapi-{endpoint}-{hashlib.sha256(blob).hexdigest()}"


def _service(credentials: Any) -> str | None:
    """``scheme://host:port`` of the credentials' base URL; ``None`` for CometAPI's own."""
    if isinstance(credentials, str):  # a saved block's name: its base URL decides
        from prefect_cometapi.blocks.credentials import resolve_credentials

        credentials = resolve_credentials(credentials)
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
