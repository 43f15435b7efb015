"""The cache key of an image request: what determines the image, nothing else."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["CACHE_KEY_VERSION", "KEY_PARAMS", "image_cache_key"]

#: The task inputs that determine the image (besides the input images, hashed separately).
KEY_PARAMS = (
    "model", "prompt", "n", "size", "quality", "output_format", "output_compression",
    "background", "moderation", "input_fidelity", "variant",
)  # fmt: skip
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
        params: Task inputs; only the names in :data:`KEY_PARAMS` are used.
        image_sha256: The sha256 of every input image, in order (edits).
        mask_sha256: The sha256 of the mask (edits).

    Returns:
        A hex digest, stable across processes and machines.
    """
    material = {
        "v": CACHE_KEY_VERSION,
        "endpoint": endpoint,
        **{name: params.get(name) for name in KEY_PARAMS},
        "images": list(image_sha256 or []),
        "mask": mask_sha256,
    }
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return f"cometapi-{endpoint}-{hashlib.sha256(blob).hexdigest()}"
