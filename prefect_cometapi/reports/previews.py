"""Small previews of generated images, embedded in the gallery artifact as ``data:`` URIs.

A preview lives in the artifact itself, so it still shows after the presigned links expire and
when the S3 endpoint is gone (the offline demo's moto server, a private bucket). Prefect's UI
renders ``data:image/...`` sources in markdown artifacts. Only the first
:data:`PREVIEWED_ITEMS` items of a run get one, which bounds the artifact's size and the CPU
spent on them in big batches.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from prefect_cometapi.models import GeneratedImage, ImageResult
from prefect_cometapi.reports.outcomes import DeliveredImage

__all__ = ["PREVIEWED_ITEMS", "PREVIEW_LONG_EDGE", "preview_data_uri", "with_previews"]

PREVIEWED_ITEMS = 24
"""Items (by position in the run) whose images get a preview in the gallery."""
PREVIEW_LONG_EDGE = 320
"""Longer side of a preview in pixels (a 16:9 image gives 320x180, about 10 KB as JPEG)."""
PREVIEW_JPEG_QUALITY = 75
_MATTE = (255, 255, 255)
"""What transparent pixels are laid on (JPEG has no alpha)."""


def preview_data_uri(image: GeneratedImage) -> str:
    """A JPEG thumbnail of an image as a ``data:image/jpeg;base64,...`` URI.

    Args:
        image: The generated image (its bytes).

    Returns:
        The URI.
    """
    out = io.BytesIO()
    with Image.open(io.BytesIO(image.data)) as source:
        source.draft("RGB", (PREVIEW_LONG_EDGE, PREVIEW_LONG_EDGE))  # cheap for JPEG sources
        # In place (no copy of the decoded frame), with a box reduce to within 1-2x of the
        # preview's size before Lanczos: a third of the thumbnail's CPU, the same look at 320 px.
        source.thumbnail(
            (PREVIEW_LONG_EDGE, PREVIEW_LONG_EDGE), Image.Resampling.LANCZOS, reducing_gap=1.0
        )
        thumb: Image.Image = source
        if thumb.mode in ("RGBA", "LA") or (thumb.mode == "P" and "transparency" in thumb.info):
            rgba = thumb.convert("RGBA")
            thumb = Image.new("RGB", rgba.size, _MATTE)
            thumb.paste(rgba, mask=rgba.getchannel("A"))
        elif thumb.mode != "RGB":
            thumb = thumb.convert("RGB")
        thumb.save(out, "JPEG", quality=PREVIEW_JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def with_previews(
    delivered: list[DeliveredImage], result: ImageResult | None, index: int
) -> list[DeliveredImage]:
    """Attach a preview to each delivered image of an item among the first :data:`PREVIEWED_ITEMS`.

    Images are delivered in the result's order, so ``delivered[i]`` holds ``result.images[i]``;
    an image that has a preview already keeps it.

    Args:
        delivered: What was stored.
        result: The API's result (``None`` when the request failed).
        index: The item's position in the run.

    Returns:
        The records, with ``preview`` set where one was made.
    """
    if result is None or index >= PREVIEWED_ITEMS:
        return delivered
    return [
        stored if stored.preview else stored.model_copy(update={"preview": preview_data_uri(image)})
        for stored, image in zip(delivered, result.images, strict=False)
    ] + delivered[len(result.images) :]
