"""The ``upscale_image`` task: Lanczos upscaling of a generated image as a Prefect task.

The work is done by :func:`prefect_cometapi.upscaling.upscale`, which can be used without
Prefect; the task takes the same parameters (its signature is that function's).
``aupscale_image`` is its async twin (the same work in a worker thread).
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_cometapi.inputs.coerce import ImageLike, as_generated_image
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.orchestration.twins import async_twin
from prefect_cometapi.upscaling import MAX_UPSCALE_PIXELS, upscale

__all__ = ["MAX_UPSCALE_PIXELS", "aupscale_image", "upscale_image"]


def _upscale_image(image: ImageLike, **options: Any) -> GeneratedImage:
    """Prefect task: upscale an image to a size, a long edge or by a factor.

    No retries: resizing is deterministic, so a failure would fail again. Every parameter is
    that of :func:`prefect_cometapi.upscaling.upscale`: ``size`` (``"WxH"``, met according to
    ``mode``: ``fit``, ``cover`` or ``stretch``), ``long_edge``, ``factor``, ``resample``,
    ``sharpen``, ``output_format``, ``quality``, ``allow_downscale``, ``max_pixels`` and
    ``png_compress_level``.

    Args:
        image: The image to upscale: a ``GeneratedImage``, an ``ImageResult`` holding one
            image, bytes, a local path, an ``https://`` URL or an ``s3://`` URI.
        **options: As for :func:`prefect_cometapi.upscaling.upscale`.

    Returns:
        The upscaled :class:`~prefect_cometapi.models.GeneratedImage`.
    """
    image = as_generated_image(image, "image")
    result = upscale(image, **options)
    get_run_logger().info(
        "Upscaled %s %s -> %s %s (%d bytes)",
        image.format,
        image.size,
        result.format,
        result.size,
        len(result.data),
    )
    return result


_SIGNATURE = inspect.signature(upscale)
_upscale_image.__signature__ = _SIGNATURE.replace(  # type: ignore[attr-defined]
    parameters=[
        _SIGNATURE.parameters["image"].replace(annotation="ImageLike"),
        *list(_SIGNATURE.parameters.values())[1:],
    ]
)
upscale_image = task(name="upscale-image", cache_policy=NO_CACHE)(_upscale_image)
aupscale_image = async_twin(upscale_image)
