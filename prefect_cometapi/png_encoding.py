"""Lossless PNG encoding that picks its row filter and zlib strategy per image from a probe.

No single PNG setting suits every image. Pillow's encoder tries all five PNG row filters on
every row (its adaptive choice, usually Paeth on photographs), which costs about as much CPU
as zlib's run-length pass after it; zlib's level 6 search finds the long repeats of flat
drawings but costs five times level 1 on photographs and noise, where it finds almost nothing.
:func:`encode_png` therefore compresses a sample of rows (:data:`PROBE_BANDS` bands of
:data:`PROBE_ROWS` rows spread over the image) with the candidate plans and keeps:

* :data:`AVERAGE_HUFFMAN`, PNG's ``Average`` filter on every row, computed for whole strips
  with Pillow's image arithmetic, then Huffman-only zlib: the cheapest, kept when its sample is
  within :data:`FAST_TOLERANCE` of Pillow's adaptive filter (grain and noise, where every
  predictor does about as well);
* :data:`ADAPTIVE_RLE`, Pillow's adaptive filter with zlib level 1 and the run-length strategy
  (photographs, where Paeth predicts clearly better);
* :data:`ADAPTIVE_DEFLATE`, Pillow's adaptive filter with zlib level 6, when the run-length
  sample is flat enough (under :data:`FLAT_RATIO` of its raw bytes) for the search to pay:
  drawings, where it is also fast.

Every plan is lossless: the PNG decodes to exactly the pixels given. The output holds one
``IHDR``, an ``iCCP`` when a profile is given, ``IDAT`` chunks and ``IEND``.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageChops

__all__ = [
    "ADAPTIVE_DEFLATE",
    "ADAPTIVE_RLE",
    "AVERAGE_HUFFMAN",
    "FAST_TOLERANCE",
    "FLAT_RATIO",
    "PROBE_BANDS",
    "PROBE_ROWS",
    "PngPlan",
    "choose_png_plan",
    "encode_png",
]

PROBE_BANDS = 8
"""Bands of rows the probe compresses, spread evenly from the top to the bottom."""
PROBE_ROWS = 8
"""Rows per probe band."""
FAST_TOLERANCE = 1.05
"""The Average filter is kept when its sample is at most this much larger than Pillow's."""
FLAT_RATIO = 0.25
"""Level 6 is tried only when the run-length sample is under this fraction of its raw bytes."""

_BYTES_PER_PIXEL = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_COLOUR_TYPE = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}
_AVERAGE = 3
_STRIP_ROWS = 32
_IDAT_BYTES = 1 << 18


@dataclass(frozen=True)
class PngPlan:
    """How a PNG is written: who filters the rows and how zlib deflates them.

    Attributes:
        name: A short label (shown by the benchmark).
        adaptive: ``True``: Pillow's encoder with its per-row adaptive filter; ``False``: PNG's
            ``Average`` filter on every row, computed here, then :mod:`zlib`.
        level: zlib compression level.
        strategy: zlib strategy (``zlib.Z_RLE``, ``zlib.Z_HUFFMAN_ONLY``, ...).
    """

    name: str
    adaptive: bool
    level: int
    strategy: int


AVERAGE_HUFFMAN = PngPlan("average+huffman", False, 1, zlib.Z_HUFFMAN_ONLY)
ADAPTIVE_RLE = PngPlan("adaptive+rle", True, 1, zlib.Z_RLE)
ADAPTIVE_DEFLATE = PngPlan("adaptive+deflate6", True, 6, zlib.Z_DEFAULT_STRATEGY)


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _average_rows(img: Image.Image, y0: int, y1: int, bpp: int) -> bytes:
    """Rows ``y0..y1`` Average-filtered, each led by its filter-type byte."""
    width = img.width
    stride, rows = width * bpp, y1 - y0
    # One crop from the row above (zeros above the image, as PNG defines it) to the last row,
    # as a plane of bytes: a pixel's left neighbour is ``bpp`` bytes to the left.
    with img.crop((0, y0 - 1, width, y1)) as band:
        plane = Image.frombuffer("L", (stride, rows + 1), band.tobytes(), "raw", "L", 0, 1)
    current = plane.crop((0, 1, stride, rows + 1))
    up = plane.crop((0, 0, stride, rows))
    left = current.crop((-bpp, 0, stride - bpp, rows))  # zeros left of the image
    # floor((left + up) / 2), exactly PNG's Average predictor; the residual wraps mod 256.
    residual = ImageChops.subtract_modulo(current, ImageChops.add(left, up, scale=2.0))
    framed = Image.new("L", (stride + 1, rows), _AVERAGE)
    framed.paste(residual, (1, 0))
    return framed.tobytes()


def _pillow_png(img: Image.Image, plan: PngPlan, icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    img.save(buf, "PNG", compress_level=plan.level, compress_type=plan.strategy, **extra)
    return buf.getvalue()


def _average_png(img: Image.Image, plan: PngPlan, icc: bytes | None) -> bytes:
    width, height = img.size
    bpp = _BYTES_PER_PIXEL[img.mode]
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[img.mode], 0, 0, 0)
    out.write(_chunk(b"IHDR", header))
    if icc:
        out.write(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    deflate = zlib.compressobj(plan.level, zlib.DEFLATED, 15, 9, plan.strategy)
    pending = bytearray()
    for y0 in range(0, height, _STRIP_ROWS):
        pending += deflate.compress(_average_rows(img, y0, min(height, y0 + _STRIP_ROWS), bpp))
        if len(pending) >= _IDAT_BYTES:
            out.write(_chunk(b"IDAT", bytes(pending)))
            pending.clear()
    pending += deflate.flush()
    out.write(_chunk(b"IDAT", bytes(pending)))
    out.write(_chunk(b"IEND", b""))
    return out.getvalue()


def _write(img: Image.Image, plan: PngPlan, icc: bytes | None) -> bytes:
    if plan.adaptive or img.mode not in _BYTES_PER_PIXEL:
        return _pillow_png(img, plan, icc)
    return _average_png(img, plan, icc)


def _band_tops(height: int) -> list[int]:
    """First rows of the probe's bands, spread evenly from the top to the bottom."""
    if height <= 2 * PROBE_BANDS * PROBE_ROWS:
        return list(range(0, height, PROBE_ROWS))
    step = (height - PROBE_ROWS) / (PROBE_BANDS - 1)
    return [round(i * step) for i in range(PROBE_BANDS)]


def _probe_average(img: Image.Image, tops: list[int], plan: PngPlan) -> int:
    # Each band filtered against its real row above, as the full encode would do it.
    bpp = _BYTES_PER_PIXEL[img.mode]
    deflate = zlib.compressobj(plan.level, zlib.DEFLATED, 15, 9, plan.strategy)
    size = 0
    for top in tops:
        rows = _average_rows(img, top, min(img.height, top + PROBE_ROWS), bpp)
        size += len(deflate.compress(rows))
    return size + len(deflate.flush())


def _probe_adaptive(img: Image.Image, tops: list[int], plans: tuple[PngPlan, ...]) -> list[int]:
    width = img.width
    bands = [img.crop((0, top, width, min(img.height, top + PROBE_ROWS))) for top in tops]
    sample = Image.new(img.mode, (width, sum(b.height for b in bands)))
    y = 0
    for band in bands:
        sample.paste(band, (0, y))
        y += band.height
        band.close()
    with sample:
        return [len(_pillow_png(sample, plan, None)) for plan in plans]


def choose_png_plan(img: Image.Image) -> tuple[PngPlan, dict[str, int]]:
    """Pick the plan for an image by compressing a sample of its rows with each candidate.

    Args:
        img: The image to encode (L, LA, RGB or RGBA for every plan; other modes always get
            :data:`ADAPTIVE_RLE`).

    Returns:
        ``(plan, sizes)``: the chosen plan and the sample's encoded bytes per plan name tried.
    """
    if img.mode not in _BYTES_PER_PIXEL:
        return ADAPTIVE_RLE, {}
    tops = _band_tops(img.height)
    (rle,) = _probe_adaptive(img, tops, (ADAPTIVE_RLE,))
    sizes = {ADAPTIVE_RLE.name: rle}
    raw = sum(min(img.height, t + PROBE_ROWS) - t for t in tops) * img.width
    if rle < FLAT_RATIO * raw * _BYTES_PER_PIXEL[img.mode]:
        # Flat: level 6 finds the long repeats, and finds them fast; the Average filter's
        # residuals are never smaller than the adaptive filter's here (no need to try it).
        return ADAPTIVE_DEFLATE, sizes
    sizes[AVERAGE_HUFFMAN.name] = _probe_average(img, tops, AVERAGE_HUFFMAN)
    fast = sizes[AVERAGE_HUFFMAN.name] <= FAST_TOLERANCE * rle
    plan = AVERAGE_HUFFMAN if fast else ADAPTIVE_RLE
    return plan, sizes


def encode_png(img: Image.Image, icc: bytes | None = None, plan: PngPlan | None = None) -> bytes:
    """Encode an image as a lossless PNG with the plan its probe picks (or the one given).

    Args:
        img: The image; L, LA, RGB and RGBA get every plan, other modes Pillow's encoder.
        icc: An ICC profile to embed, if any.
        plan: Skip the probe and use this plan.

    Returns:
        The PNG bytes; they decode to exactly ``img``'s pixels.
    """
    if plan is None:
        plan, _ = choose_png_plan(img)
    return _write(img, plan, icc)
