"""Upscaling: resize a :class:`~prefect_cometapi.models.GeneratedImage` with Lanczos (Pillow).

The API's largest size is 3840x2160; banners, prints and 4K/8K screens often want more, or an
exact size the API cannot make. :func:`upscale` (and its task twin
:func:`prefect_cometapi.tasks.upscale_image`) takes exactly one target:

* ``size="WxH"`` with a ``mode``:

  - ``"fit"`` (default): the largest size that fits inside WxH keeping the aspect ratio. The
    output is WxH only when the aspects match; otherwise it is smaller on one axis (a 1536x1024
    image with ``size="3840x2160"`` becomes 3240x2160).
  - ``"cover"``: scaled to cover WxH keeping the aspect ratio, then centre-cropped to exactly WxH.
  - ``"stretch"``: exactly WxH; the aspect ratio is not kept.

* ``long_edge=N``: the longer side becomes N, the aspect ratio is kept.
* ``factor=F``: both sides are multiplied by F, the aspect ratio is kept.

Sides are rounded to the nearest integer (halves up). Everything is checked before any pixel is
decoded: a target over ``max_pixels`` (default :data:`MAX_UPSCALE_PIXELS`, 8K = 7680x4320), a
target smaller than the source on either axis (a downscale passed off as an upscale; pass
``allow_downscale=True`` if you mean it) and bad sizes all raise
:class:`~prefect_cometapi.errors.ValidationError`. For ``cover`` the comparison uses the scaled
size before the crop, so cropping alone is not a downscale. JPEG output of an image with
transparent pixels is refused too (use PNG or WebP).

Transparency is kept (RGBA and LA stay so; palette images with transparency become RGBA) and
Pillow resamples them with premultiplied alpha, so transparent pixels do not bleed colour. PNG
output is lossless at every ``png_compress_level``. By default (no level) the row filter and the
zlib strategy are chosen per image by :func:`prefect_cometapi.upscaling.png.encode_png` from a
probe of a few bands of rows: PNG's Average filter with Huffman-only zlib on grain and noise,
PNG's Paeth filter with the run-length strategy (:data:`PNG_FAST_STRATEGY`) on photographs
(both computed with Pillow's image arithmetic: within about 8 % of Pillow's level 6 at a
quarter of its CPU or less), and Pillow's level 6 on flat drawings, where its search pays and
costs little. Images deeper than 8 bits per channel are reduced to 8 bits.
"""

from __future__ import annotations

import io
import math
import zlib
from typing import Literal

from PIL import Image, ImageFilter

from prefect_cometapi.client.params import OUTPUT_FORMATS, ImageFormat
from prefect_cometapi.client.rules import inspect_image, parse_size
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.upscaling.png import encode_png

__all__ = [
    "MAX_UPSCALE_PIXELS",
    "PNG_FAST_STRATEGY",
    "Resample",
    "UpscaleMode",
    "plan_upscale",
    "upscale",
]

MAX_UPSCALE_PIXELS = 7680 * 4320
"""Largest output accepted by default: 8K UHD, 33,177,600 pixels (about 133 MB as RGBA)."""

PNG_FAST_STRATEGY = zlib.Z_RLE
"""zlib strategy of default PNG output on photographic images (behind PNG's Paeth filter):
run-length matching and Huffman coding shrink a resampled photograph's residuals about as well
as level 6's full LZ77 search at a fraction of its cost."""
UpscaleMode = Literal["fit", "cover", "stretch"]
Resample = Literal["lanczos", "bicubic"]

_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_KEPT_MODES = ("L", "LA", "RGB", "RGBA")
_OTHER_COLOUR_SPACES = ("CMYK", "YCbCr", "LAB", "HSV")  # their ICC profile would not fit RGB
_SHARPEN = ImageFilter.UnsharpMask(radius=1, percent=50, threshold=2)

Box = tuple[float, float, float, float]


def _half_up(value: float) -> int:
    return max(1, int(math.floor(value + 0.5)))


def _check_args(
    size: str | None,
    long_edge: int | None,
    factor: float | None,
    mode: str,
    resample: str,
    output_format: str | None,
    quality: int,
    png_compress_level: int | None,
    max_pixels: int,
) -> str:
    given = [
        n
        for n, v in (("size", size), ("long_edge", long_edge), ("factor", factor))
        if v is not None
    ]
    if len(given) != 1:
        raise ValidationError(
            "size",
            "give exactly one of size='WxH', long_edge=N or factor=F"
            + (f"; got {', '.join(given)}" if given else ""),
        )
    if mode not in ("fit", "cover", "stretch"):
        raise ValidationError("mode", "must be one of fit, cover, stretch", mode)
    if resample not in _RESAMPLE:
        raise ValidationError("resample", "must be one of lanczos, bicubic", resample)
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise ValidationError("output_format", "must be one of png, jpeg, webp", output_format)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValidationError("quality", "must be an integer from 1 to 100", quality)
    if png_compress_level is not None and (
        isinstance(png_compress_level, bool)
        or not isinstance(png_compress_level, int)
        or not 0 <= png_compress_level <= 9
    ):
        raise ValidationError(
            "png_compress_level", "must be an integer from 0 to 9", png_compress_level
        )
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValidationError("max_pixels", "must be a positive integer", max_pixels)
    return given[0]


def plan_upscale(
    source: tuple[int, int],
    *,
    size: str | None = None,
    long_edge: int | None = None,
    factor: float | None = None,
    mode: UpscaleMode = "fit",
    allow_downscale: bool = False,
    max_pixels: int = MAX_UPSCALE_PIXELS,
) -> tuple[tuple[int, int], Box | None]:
    """Work out the output size (and the source region, for ``cover``) without touching pixels.

    Args:
        source: ``(width, height)`` of the source image.
        size: ``"WxH"`` target, interpreted by ``mode``.
        long_edge: Target length of the longer side.
        factor: Scale factor for both sides.
        mode: ``fit``, ``cover`` or ``stretch`` (only used with ``size``).
        allow_downscale: Accept a target smaller than the source on an axis.
        max_pixels: Largest accepted output, in pixels.

    Returns:
        ``((width, height), box)``: the output size and the source region to resample from
        (``None`` for the whole image).

    Raises:
        ValidationError: Bad target, over ``max_pixels``, or a downscale not allowed.
    """
    sw, sh = source
    box: Box | None = None
    if size is not None:
        param = "size"
        dims = parse_size(str(size).strip())
        if dims is None:
            raise ValidationError("size", "must be 'WIDTHxHEIGHT', e.g. '3840x2160'", size)
        tw, th = dims
        if mode == "stretch":
            out, scaled = (tw, th), (tw, th)
        elif mode == "cover":
            scale = max(tw / sw, th / sh)
            out, scaled = (tw, th), (_half_up(sw * scale), _half_up(sh * scale))
            bw, bh = tw / scale, th / scale
            x0, y0 = (sw - bw) / 2, (sh - bh) / 2
            box = (x0, y0, x0 + bw, y0 + bh)
            if box == (0.0, 0.0, float(sw), float(sh)) or scaled == out:
                box = None
        else:
            scale = min(tw / sw, th / sh)
            out = (min(tw, _half_up(sw * scale)), min(th, _half_up(sh * scale)))
            scaled = out
    elif long_edge is not None:
        param = "long_edge"
        if isinstance(long_edge, bool) or not isinstance(long_edge, int) or long_edge < 1:
            raise ValidationError("long_edge", "must be a positive integer", long_edge)
        scale = long_edge / max(sw, sh)
        out = (long_edge, _half_up(sh * scale)) if sw >= sh else (_half_up(sw * scale), long_edge)
        scaled = out
    else:
        param = "factor"
        if (
            isinstance(factor, bool)
            or not isinstance(factor, (int, float))
            or not math.isfinite(factor)
            or factor <= 0
        ):
            raise ValidationError("factor", "must be a positive number", factor)
        out = scaled = (_half_up(sw * factor), _half_up(sh * factor))

    pixels = out[0] * out[1]
    if pixels > max_pixels:
        raise ValidationError(
            param,
            f"the output would be {out[0]}x{out[1]} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (8K UHD 7680x4320 by default; raise max_pixels to allow more)",
        )
    if not allow_downscale and (scaled[0] < sw or scaled[1] < sh):
        raise ValidationError(
            param,
            f"the target {scaled[0]}x{scaled[1]} is smaller than the source {sw}x{sh} on at "
            "least one axis: that is a downscale, not an upscale (pass allow_downscale=True if "
            "you mean it)",
        )
    return out, box


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Convert to L, LA, RGB or RGBA, keeping transparency."""
    if img.mode in _KEPT_MODES:
        return img
    transparent = img.has_transparency_data
    if img.mode in ("1", "I;16", "I;16B", "I;16L", "I;16N", "I", "F") and not transparent:
        target = "L"
    elif img.mode == "PA":
        target = "RGBA"
    else:
        target = "RGBA" if transparent else "RGB"
    return img.convert(target)


def _alpha_is_opaque(img: Image.Image) -> bool:
    return img.getchannel("A").getextrema() == (255, 255)


def _sharpen(img: Image.Image) -> Image.Image:
    """Unsharp-mask the colour channels only; the alpha channel is left as resampled."""
    if "A" not in img.getbands():
        return img.filter(_SHARPEN)
    alpha = img.getchannel("A")
    with img.convert(img.mode[:-1]) as colour:
        sharpened = colour.filter(_SHARPEN)
    sharpened.putalpha(alpha)
    alpha.close()
    return sharpened


def _encode(
    img: Image.Image, fmt: str, quality: int, png_compress_level: int | None, icc: bytes | None
) -> bytes:
    buf = io.BytesIO()
    if fmt == "webp" and img.mode in ("L", "LA"):
        icc = None  # the WebP encoder stores RGB; a grey profile would not match
    extra = {"icc_profile": icc} if icc else {}
    if fmt == "png":
        if png_compress_level is None:
            return encode_png(img, icc)
        else:
            img.save(buf, "PNG", compress_level=png_compress_level, **extra)
    elif fmt == "jpeg":
        img.save(buf, "JPEG", quality=quality, **extra)
    else:
        img.save(buf, "WEBP", quality=quality, **extra)
    return buf.getvalue()


def upscale(
    image: GeneratedImage,
    *,
    size: str | None = None,
    long_edge: int | None = None,
    factor: float | None = None,
    mode: UpscaleMode = "fit",
    resample: Resample = "lanczos",
    sharpen: bool = False,
    output_format: ImageFormat | None = None,
    quality: int = 90,
    allow_downscale: bool = False,
    max_pixels: int = MAX_UPSCALE_PIXELS,
    png_compress_level: int | None = None,
) -> GeneratedImage:
    """Upscale an image to a size, a long edge or by a factor (see the module docs for modes).

    Every argument and size check runs before the image is decoded (only the JPEG
    transparency check needs the pixels, and it runs before resizing). The source is read with
    :func:`~prefect_cometapi.client.rules.inspect_image` first, which refuses junk bytes and
    decompression bombs.

    Args:
        image: The image to upscale.
        size: ``"WxH"`` target; with ``mode`` ``fit`` the output may be smaller than WxH on one
            axis (aspect kept), ``cover`` gives exactly WxH (centre crop), ``stretch`` exactly WxH
            (aspect not kept).
        long_edge: Target length of the longer side (aspect kept).
        factor: Scale factor, e.g. ``2`` or ``2.5`` (aspect kept).
        mode: How ``size`` is met: ``fit``, ``cover`` or ``stretch``.
        resample: ``lanczos`` (default, sharpest) or ``bicubic``.
        sharpen: Apply a light unsharp mask (radius 1, 50 %, threshold 2) after resizing.
        output_format: ``png``, ``jpeg`` or ``webp``; default: the input's format (PNG when the
            input is anything else). JPEG cannot store transparency: a transparent image asked
            as JPEG is refused (a fully opaque alpha channel is dropped silently).
        quality: JPEG/WebP quality, 1..100 (ignored for PNG).
        allow_downscale: Accept a target smaller than the source on either axis.
        max_pixels: Largest accepted output in pixels (default 8K UHD, 7680x4320).
        png_compress_level: zlib level 0..9 for PNG output (Pillow's encoder, zlib's default
            strategy), or ``None`` (default): filter and strategy chosen per image by a probe
            (see the module docs), within about 8 % of level 6's size at a fraction of its CPU
            on grain, noise and photographs. Lossless either way; only file size and encode
            time change.

    Returns:
        A new :class:`GeneratedImage` with the new bytes, format and size; model, prompt,
        params, usage and cost are kept and ``source_sha256`` points at the original.

    Raises:
        ValidationError: Bad arguments, unreadable source, target over ``max_pixels``, a
            downscale not allowed, or JPEG output of a transparent image.
    """
    _check_args(
        size, long_edge, factor, mode, resample, output_format, quality, png_compress_level,
        max_pixels,
    )  # fmt: skip
    info = inspect_image(image.data)
    (ow, oh), box = plan_upscale(
        (info.width, info.height),
        size=size,
        long_edge=long_edge,
        factor=factor,
        mode=mode,
        allow_downscale=allow_downscale,
        max_pixels=max_pixels,
    )
    fmt = output_format or (info.format if info.format in OUTPUT_FORMATS else "png")
    if (ow, oh) == (info.width, info.height) and box is None and fmt == info.format and not sharpen:
        return image.with_data(image.data, fmt, ow, oh)

    with Image.open(io.BytesIO(image.data)) as opened:
        opened.load()
        icc = opened.info.get("icc_profile")
        if opened.mode in _OTHER_COLOUR_SPACES:
            icc = None
        src = _normalise_mode(opened)
        try:
            if fmt == "jpeg" and "A" in src.getbands():
                if not _alpha_is_opaque(src):
                    raise ValidationError(
                        "output_format",
                        "the image has transparent pixels, which JPEG cannot store; use "
                        "output_format='png' or 'webp'",
                        fmt,
                    )
                opaque = src.convert(src.mode[:-1])
                if src is not opened:
                    src.close()
                src = opaque
            out = src.resize((ow, oh), _RESAMPLE[resample], box=box)
        finally:
            if src is not opened:
                src.close()
    try:
        if sharpen:
            sharpened = _sharpen(out)
            out.close()
            out = sharpened
        data = _encode(out, fmt, quality, png_compress_level, icc)
    finally:
        out.close()
    return image.with_data(data, fmt, ow, oh)
