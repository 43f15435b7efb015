"""Lanczos upscaling of generated images (:mod:`.resize`) with a PNG encoder that picks its row
filter and zlib strategy per image from a small probe (:mod:`.png`), lossless in every plan."""

from prefect_cometapi.upscaling.resize import (
    MAX_UPSCALE_PIXELS,
    PNG_FAST_STRATEGY,
    Resample,
    UpscaleMode,
    plan_upscale,
    upscale,
)

__all__ = [
    "MAX_UPSCALE_PIXELS",
    "PNG_FAST_STRATEGY",
    "Resample",
    "UpscaleMode",
    "plan_upscale",
    "upscale",
]
