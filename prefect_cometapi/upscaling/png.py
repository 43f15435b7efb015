"""Lossless PNG encoding that picks its row filter and zlib strategy per image from a probe.

No single PNG setting suits every image. Pillow's encoder tries four PNG row filters on every
row (None, Up, Sub, Paeth; usually Paeth wins on photographs), which costs about as much CPU
as zlib's run-length pass after it; zlib's level 6 search finds the long repeats of flat
drawings but costs five times level 1 on photographs and noise, where it finds almost nothing.
:func:`encode_png` therefore filters the rows itself, one filter for every row, computed for
strips of rows at once with Pillow's 8-bit image arithmetic (exactly PNG's predictors), and
compresses a sample of rows (:data:`PROBE_BANDS` bands of :data:`PROBE_ROWS` rows spread over
the image) to pick one of:

* :data:`AVERAGE_HUFFMAN`, PNG's ``Average`` filter and Huffman-only zlib: the cheapest, kept
  when its sample is within :data:`FAST_TOLERANCE` of the Paeth sample (grain and noise, where
  every predictor does about as well);
* :data:`PAETH_HUFFMAN` or :data:`PAETH_RLE`, PNG's ``Paeth`` filter and Huffman-only zlib, or
  the run-length strategy where it is more than :data:`HUFFMAN_TOLERANCE` smaller (flat
  backgrounds): photographs, where Paeth predicts clearly better (Average is 10-23 % larger);
* :data:`ADAPTIVE_DEFLATE`, Pillow's adaptive filter with zlib level 6, when the Paeth sample
  is flat enough (under :data:`FLAT_RATIO` of its raw bytes) for the search to pay: drawings,
  where it is also fast.

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
    "PAETH_HUFFMAN",
    "PAETH_RLE",
    "PngPlan",
    "choose_png_plan",
    "encode_png",
]

PROBE_BANDS = 8
"""Bands of rows the probe compresses, spread evenly from the top to the bottom."""
PROBE_ROWS = 8
"""Rows per probe band."""
FAST_TOLERANCE = 1.08
"""The Average filter is kept when its sample is at most this much larger than Paeth's."""
FLAT_RATIO = 0.25
"""Level 6 is used when the Paeth + run-length sample is under this fraction of its raw bytes."""
RUNS_RATIO = 0.3
"""The run-length strategy is tried when the Paeth + Huffman sample is under this fraction of
its raw bytes (where it is not, runs of equal residuals are too rare to pay)."""
HUFFMAN_TOLERANCE = 1.05
"""Huffman-only (cheaper) replaces the run-length strategy when at most this much larger."""

_BYTES_PER_PIXEL = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_COLOUR_TYPE = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}
_AVERAGE = 3
_PAETH = 4
_THIRD = [v // 3 for v in range(256)]
_UP_TO_85 = [255 if v <= 85 else 0 for v in range(256)]
_STRIP_ROWS = 32
_IDAT_BYTES = 1 << 18


@dataclass(frozen=True)
class PngPlan:
    """How a PNG is written: who filters the rows and how zlib deflates them.

    Attributes:
        name: A short label (shown by the benchmark).
        filter: PNG filter type used on every row, computed here before :mod:`zlib`
            (``3`` Average, ``4`` Paeth), or ``None`` for Pillow's encoder and its per-row
            adaptive choice.
        level: zlib compression level.
        strategy: zlib strategy (``zlib.Z_RLE``, ``zlib.Z_HUFFMAN_ONLY``, ...).
    """

    name: str
    filter: int | None
    level: int
    strategy: int


AVERAGE_HUFFMAN = PngPlan("average+huffman", _AVERAGE, 1, zlib.Z_HUFFMAN_ONLY)
PAETH_RLE = PngPlan("paeth+rle", _PAETH, 1, zlib.Z_RLE)
PAETH_HUFFMAN = PngPlan("paeth+huffman", _PAETH, 1, zlib.Z_HUFFMAN_ONLY)
ADAPTIVE_RLE = PngPlan("adaptive+rle", None, 1, zlib.Z_RLE)
ADAPTIVE_DEFLATE = PngPlan("adaptive+deflate6", None, 6, zlib.Z_DEFAULT_STRATEGY)


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(tag))
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _paeth(x: Image.Image, a: Image.Image, b: Image.Image, c: Image.Image) -> Image.Image:
    """PNG's Paeth residual of byte planes: ``x`` minus whichever of left ``a``, up ``b`` and
    up-left ``c`` is nearest to ``a + b - c`` (ties in that order), modulo 256.

    With ``lo``/``hi`` the smaller/larger of ``a`` and ``b`` and ``q`` = ``c`` clamped to
    ``[lo, hi]``, the prediction is ``lo`` when ``q - lo >= 2 (hi - q)``, ``hi`` when
    ``hi - q >= 2 (q - lo)``, else ``q`` (outside ``[lo, hi]`` the clamp makes one of the
    first two hold, which is Paeth's ``min(a, b)`` or ``max(a, b)`` there). Both tests read
    ``s <= (s + t) // 3`` with ``s``, ``t`` the two distances; ``(s + t) // 3 - s`` lies in
    ``[-170, 85]``, one byte without ambiguity.
    """
    lo, hi = ImageChops.darker(a, b), ImageChops.lighter(a, b)
    q = ImageChops.darker(ImageChops.lighter(c, lo), hi)
    s, t = ImageChops.subtract_modulo(hi, q), ImageChops.subtract_modulo(q, lo)
    third = ImageChops.add_modulo(s, t).point(_THIRD)
    use_lo = ImageChops.subtract_modulo(third, s).point(_UP_TO_85)  # 255 where s <= third
    use_hi = ImageChops.subtract_modulo(third, t).point(_UP_TO_85)
    # x - pred = (x - q) + t (pred lo) or - s (pred hi); both masks at once only when s = t = 0.
    residual = ImageChops.add_modulo(ImageChops.subtract_modulo(x, q), ImageChops.darker(t, use_lo))
    return ImageChops.subtract_modulo(residual, ImageChops.darker(s, use_hi))


def _filtered_rows(img: Image.Image, y0: int, y1: int, bpp: int, kind: int) -> bytes:
    """Rows ``y0..y1`` filtered with PNG filter ``kind``, each led by its filter-type byte."""
    width = img.width
    stride, rows = width * bpp, y1 - y0
    # One crop from the row above (zeros above the image, as PNG defines it) to the last row,
    # as a plane of bytes: a pixel's left neighbour is ``bpp`` bytes to the left.
    with img.crop((0, y0 - 1, width, y1)) as band:
        plane = Image.frombuffer("L", (stride, rows + 1), band.tobytes(), "raw", "L", 0, 1)
    current = plane.crop((0, 1, stride, rows + 1))
    up = plane.crop((0, 0, stride, rows))
    left = current.crop((-bpp, 0, stride - bpp, rows))  # zeros left of the image
    if kind == _PAETH:
        residual = _paeth(current, left, up, up.crop((-bpp, 0, stride - bpp, rows)))
    else:
        # floor((left + up) / 2), exactly PNG's Average predictor; the residual wraps mod 256.
        residual = ImageChops.subtract_modulo(current, ImageChops.add(left, up, scale=2.0))
    framed = Image.new("L", (stride + 1, rows), kind)
    framed.paste(residual, (1, 0))
    return framed.tobytes()


def _pillow_png(img: Image.Image, plan: PngPlan, icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    img.save(buf, "PNG", compress_level=plan.level, compress_type=plan.strategy, **extra)
    return buf.getvalue()


def _filtered_png(img: Image.Image, plan: PngPlan, icc: bytes | None) -> bytes:
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
        rows = _filtered_rows(img, y0, min(height, y0 + _STRIP_ROWS), bpp, plan.filter)
        pending += deflate.compress(rows)
        if len(pending) >= _IDAT_BYTES:
            out.write(_chunk(b"IDAT", bytes(pending)))
            pending.clear()
    pending += deflate.flush()
    out.write(_chunk(b"IDAT", bytes(pending)))
    out.write(_chunk(b"IEND", b""))
    return out.getvalue()


def _write(img: Image.Image, plan: PngPlan, icc: bytes | None) -> bytes:
    if plan.filter is None or img.mode not in _BYTES_PER_PIXEL:
        return _pillow_png(img, plan, icc)
    return _filtered_png(img, plan, icc)


def _band_tops(height: int) -> list[int]:
    """First rows of the probe's bands, spread evenly from the top to the bottom."""
    if height <= 2 * PROBE_BANDS * PROBE_ROWS:
        return list(range(0, height, PROBE_ROWS))
    step = (height - PROBE_ROWS) / (PROBE_BANDS - 1)
    return [round(i * step) for i in range(PROBE_BANDS)]


def _sample_rows(img: Image.Image, tops: list[int], kind: int) -> list[bytes]:
    # Each band filtered against its real row above, as the full encode would do it.
    bpp = _BYTES_PER_PIXEL[img.mode]
    return [_filtered_rows(img, t, min(img.height, t + PROBE_ROWS), bpp, kind) for t in tops]


def _deflated(rows: list[bytes], plan: PngPlan) -> int:
    deflate = zlib.compressobj(plan.level, zlib.DEFLATED, 15, 9, plan.strategy)
    return sum(len(deflate.compress(r)) for r in rows) + len(deflate.flush())


def choose_png_plan(img: Image.Image) -> tuple[PngPlan, dict[str, int]]:
    """Pick the plan for an image by compressing a sample of its rows with the candidates.

    Args:
        img: The image to encode (L, LA, RGB or RGBA; other modes always get
            :data:`ADAPTIVE_RLE`, Pillow's encoder).

    Returns:
        ``(plan, sizes)``: the chosen plan and the sample's encoded bytes per plan name tried.
    """
    if img.mode not in _BYTES_PER_PIXEL:
        return ADAPTIVE_RLE, {}
    tops = _band_tops(img.height)
    raw = sum(min(img.height, t + PROBE_ROWS) - t for t in tops) * img.width
    raw *= _BYTES_PER_PIXEL[img.mode]
    paeth_rows = _sample_rows(img, tops, _PAETH)
    sizes = {PAETH_HUFFMAN.name: _deflated(paeth_rows, PAETH_HUFFMAN)}
    paeth = PAETH_HUFFMAN
    if sizes[PAETH_HUFFMAN.name] < RUNS_RATIO * raw:
        # Huffman alone spends a bit or more on every byte; runs may pay here.
        sizes[PAETH_RLE.name] = _deflated(paeth_rows, PAETH_RLE)
        if sizes[PAETH_RLE.name] < FLAT_RATIO * raw:
            # Flat: level 6 finds the long repeats, and finds them fast; the Average filter's
            # residuals are never smaller than Paeth's here (no need to try it).
            return ADAPTIVE_DEFLATE, sizes
        if sizes[PAETH_HUFFMAN.name] > HUFFMAN_TOLERANCE * sizes[PAETH_RLE.name]:
            paeth = PAETH_RLE
    sizes[AVERAGE_HUFFMAN.name] = _deflated(_sample_rows(img, tops, _AVERAGE), AVERAGE_HUFFMAN)
    if sizes[AVERAGE_HUFFMAN.name] <= FAST_TOLERANCE * sizes[paeth.name]:
        return AVERAGE_HUFFMAN, sizes
    return paeth, sizes


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
