"""The cache key of an image request: what determines the image, nothing else."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect_cometapi.image_params import cache_key_names

__all__ = ["CACHE_KEY_VERSION", "image_cache_key"]

CACHE_KEY_VERSION = "v1"


def image_cache_key(
    endpoint: str,
    params: dict[str, Any],
    image_sha256: list[str] | None = None,
    mask_sha256: str | None = None,
) -> str:
    """The one cache-key function for image requests.

    Args:
        endpoint: ``"generations"`` or ``"edits"``.
        params: Task inputs; only the prompt and the parameters marked ``cache_key`` in
            :data:`~prefect_cometapi.image_params.IMAGE_PARAMS` are used.
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
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return f"cometapi-{endpoint}-{hashlib.sha256(blob).hexdigest()}"
