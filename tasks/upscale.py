"""The ``upscale_image`` task: Lanczos upscaling of a generated image as a Prefect task.

The work is done by :func:`prefect_cometapi.upscaling.upscale`, which can be used without
Prefect; its docstring explains the targets and modes.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.upscaling import (
    MAX_UPSCALE_PIXELS,
    OutputFormat,
    Resample,
    UpscaleMode,
    upscale,
)

__all__ = ["MAX_UPSCALE_PIXELS", "upscale_image"]


@task(name="upscale-image", cache_policy=NO_CACHE)
def upscale_image(
    image: GeneratedImage,
    *,
    size: str | None = None,
    long_edge: int | None = None,
    factor: float | None = None,
    mode: UpscaleMode = "fit",
    resample: Resample = "lanczos",
    sharpen: bool = False,
    output_format: OutputFormat | None = None,
    quality: int = 90,
    allow_downscale: bool = False,
    max_pixels: int = MAX_UPSCALE_PIXELS,
    png_compress_level: int = 1,
) -> GeneratedImage:
    """Prefect task: upscale an image (every parameter as in
    :func:`prefect_cometapi.upscaling.upscale`).

    No retries: resizing is deterministic, so a failure would fail again.

    Args:
        image: The image to upscale.
        size: ``"WxH"`` target, met according to ``mode``.
        long_edge: Target length of the longer side.
        factor: Scale factor for both sides.
        mode: ``fit`` (inside WxH, aspect kept), ``cover`` (exactly WxH, centre crop) or
            ``stretch`` (exactly WxH, aspect not kept).
        resample: ``lanczos`` or ``bicubic``.
        sharpen: Apply a light unsharp mask after resizing.
        output_format: ``png``, ``jpeg`` or ``webp``; default the input's format.
        quality: JPEG/WebP quality, 1..100.
        allow_downscale: Accept a target smaller than the source.
        max_pixels: Largest accepted output in pixels (default 8K UHD).
        png_compress_level: zlib level for PNG output (lossless at every level).

    Returns:
        The upscaled :class:`GeneratedImage`.
    """
    result = upscale(
        image,
        size=size,
        long_edge=long_edge,
        factor=factor,
        mode=mode,
        resample=resample,
        sharpen=sharpen,
        output_format=output_format,
        quality=quality,
        allow_downscale=allow_downscale,
        max_pixels=max_pixels,
        png_compress_level=png_compress_level,
    )
    get_run_logger().info(
        "Upscaled %s %s -> %s %s (%d bytes)",
        image.format,
        image.size,
        result.format,
        result.size,
        len(result.data),
    )
    return result
