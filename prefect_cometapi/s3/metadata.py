"""The user metadata stored with an image in S3 (``x-amz-meta-*``): ASCII, bounded, no secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prefect_cometapi.errors import ValidationError, redact
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.text import ascii_text

__all__ = ["build_metadata"]

MAX_METADATA_BYTES = 2048
"""S3 caps user metadata (keys + values) at 2 KB."""
PROMPT_METADATA_CHARS = 200

_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9\-]*$")


def build_metadata(
    image: GeneratedImage, metadata_extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The user metadata stored with an image (``x-amz-meta-*``), all ASCII.

    Holds ``model``, ``size``, ``quality`` (when known), ``sha256``, ``source-sha256`` (for an
    upscale) and ``prompt`` (an ASCII excerpt of at most :data:`PROMPT_METADATA_CHARS`
    characters). Nothing else from ``image.params`` and never a credential.

    Args:
        image: The image.
        metadata_extra: More entries; keys are lowercased, values made ASCII and scrubbed of
            anything that looks like a key or bearer token.

    Returns:
        The metadata dict.

    Raises:
        ValidationError: ``param="metadata_extra"`` for a bad key or metadata over 2 KB.
    """
    meta: dict[str, str] = {
        "model": ascii_text(str(image.model), 100),
        "size": image.size,
        "sha256": image.sha256,
    }
    quality = (image.params or {}).get("quality")
    if quality:
        meta["quality"] = ascii_text(str(quality), 20)
    if image.source_sha256:
        meta["source-sha256"] = image.source_sha256
    meta["prompt"] = ascii_text(redact(image.prompt or ""), PROMPT_METADATA_CHARS)
    for raw_key, value in (metadata_extra or {}).items():
        key = str(raw_key).lower()
        if not _META_KEY_RE.match(key):
            raise ValidationError(
                "metadata_extra",
                "metadata keys use lowercase letters, digits and hyphens",
                raw_key,
            )
        if value is None:
            continue
        meta[key] = ascii_text(redact(str(value)), 512)
    total = sum(len(k) + len(v) for k, v in meta.items())
    if total > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata_extra", f"S3 user metadata is limited to {MAX_METADATA_BYTES} bytes", total
        )
    return meta
