"""Real images drawn with Pillow: a seeded gradient and shapes with the prompt's words on top.

By default the drawing carries photographic weight: a film-grain layer (fine Gaussian noise per
channel over a soft, cloudy luminance texture) is added under the text panel, so a 1024x1024 PNG
is about 2 MB, like the real API's photographs, and every step that touches image bytes costs
what it costs in production. ``light=True`` keeps the flat drawing (about 0.1 MB) for tests that
want speed.

Everything is deterministic (the same request gives the same bytes, in every process) and fast
even at 3840x2160: only whole-image Pillow operations, no per-pixel Python, PNG
``compress_level=1``. The grain is made once per process (:func:`grain_tile`) from a seeded
generator and a lookup table, then each image adds a crop of it at an offset of its own.
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
import struct
import textwrap
import zlib
from collections.abc import Sequence
from statistics import NormalDist

from PIL import Image, ImageChops, ImageDraw, ImageFont

__all__ = [
    "add_grain",
    "encode",
    "fast_png",
    "pooled_generation",
    "render_edit",
    "render_generation",
]

_MAX_PROMPT_DRAWN = 600
GRAIN_SIGMA = 7.0
"""Standard deviation of the per-channel grain (0-255 scale)."""
TEXTURE_AMPLITUDE = 24
"""Peak deviation of the soft luminance texture (0-255 scale)."""
_TILE_SIZE = (4096, 512)
"""Wider than the largest side the API makes (3840), so a row never repeats inside the PNG
compressor's 32 KB window; 512 rows, so a repeat down the image is far outside it too."""
_TEXTURE_CELL = 32
_GRAIN_SEED = 20260421


def _digest(*parts: object) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\x00")
    return h.digest()


def _colours(digest: bytes, count: int) -> list[tuple[int, int, int]]:
    return [(digest[3 * i], digest[3 * i + 1], digest[3 * i + 2]) for i in range(count)]


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1, or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _gradient(width: int, height: int, digest: bytes) -> Image.Image:
    corners = Image.new("RGB", (2, 2))
    corners.putdata(_colours(digest, 4))
    return corners.resize((width, height), Image.Resampling.BILINEAR)


def _shapes(img: Image.Image, digest: bytes) -> None:
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for i in range(3):
        b = digest[12 + 6 * i : 18 + 6 * i]
        cx, cy = b[0] * w // 255, b[1] * h // 255
        r = max(8, (b[2] % 64 + 32) * min(w, h) // 320)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = (b[3], b[4], b[5])
        if i % 2:
            draw.rectangle(box, fill=fill)
        else:
            draw.ellipse(box, fill=fill)


def _gaussian_lut(sigma: float) -> list[int]:
    """Map a uniform byte to 128 + a Gaussian deviate of ``sigma`` (inverse CDF, clipped)."""
    normal = NormalDist(128.0, sigma)
    return [max(0, min(255, round(normal.inv_cdf((u + 0.5) / 256)))) for u in range(256)]


@functools.cache
def grain_tile() -> tuple[Image.Image, Image.Image]:
    """The process's grain layer: RGB, centred on 128, deterministic; and its mirror image.

    Fine per-channel Gaussian grain plus a shared low-frequency luminance texture (bicubic
    upscale of a small random field), so what is added to a drawing looks like film grain over
    uneven light rather than static. Taller images stack the tile and its top-bottom mirror
    alternately, so the texture has no seam.

    Returns:
        Two :data:`_TILE_SIZE` RGB images whose pixels are 128 + deviation.
    """
    rng = random.Random(_GRAIN_SEED)
    width, height = _TILE_SIZE
    lut = _gaussian_lut(GRAIN_SIGMA)
    channels = [
        Image.frombytes("L", _TILE_SIZE, rng.randbytes(width * height)).point(lut) for _ in range(3)
    ]
    small = (width // _TEXTURE_CELL, height // _TEXTURE_CELL)
    scale = TEXTURE_AMPLITUDE / 127.5
    texture = (
        Image.frombytes("L", small, rng.randbytes(small[0] * small[1]))
        .point([round(128 + (u - 127.5) * scale) for u in range(256)])
        .resize(_TILE_SIZE, Image.Resampling.BICUBIC)
    )
    tile = Image.merge("RGB", [ImageChops.add(c, texture, 1.0, -128) for c in channels])
    return tile, tile.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


def add_grain(img: Image.Image, digest: bytes) -> Image.Image:
    """Add the grain layer to an image at an offset chosen by ``digest``.

    Args:
        img: An RGB or RGBA image (alpha is kept).
        digest: Picks the offset, so two images get different grain.

    Returns:
        A new image of the same size and mode.
    """
    tiles = grain_tile()
    tile_w, tile_h = tiles[0].size
    width, height = img.size
    dx = int.from_bytes(digest[20:22], "big") % max(1, tile_w - width + 1)
    dy = int.from_bytes(digest[22:24], "big") % tile_h
    layer = Image.new("RGB", (width, height))
    for number, top in enumerate(range(-dy, height, tile_h)):
        layer.paste(tiles[number % 2], (-dx, top))
    if img.mode == "RGBA":
        out = ImageChops.add(img.convert("RGB"), layer, 1.0, -128)
        out.putalpha(img.getchannel("A"))
        return out
    return ImageChops.add(img, layer, 1.0, -128)


def _text_panel(img: Image.Image, lines_text: str, footer: str) -> None:
    """Draw the words (and a small footer) on a dark panel in the upper part of the image."""
    w, h = img.size
    size = max(12, min(w, h) // 18)
    small = max(10, size // 2)
    font, small_font = _font(size), _font(small)
    chars = max(8, int(w * 0.86 / (size * 0.55)))
    max_lines = max(1, int(h * 0.55 / (size * 1.25)) - 1)
    lines = textwrap.wrap(" ".join(lines_text[:_MAX_PROMPT_DRAWN].split()), width=chars)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1][: chars - 3] + "..."]
    step = int(size * 1.25)
    x0, y0 = int(w * 0.05), int(h * 0.06)
    bottom = y0 + step * len(lines) + int(small * 1.4)
    panel = (x0 - size // 3, y0 - size // 3, w - x0 + size // 3, bottom + size // 3)
    overlay = ImageDraw.Draw(img, "RGBA")
    overlay.rectangle(panel, fill=(0, 0, 0, 200 if img.mode == "RGB" else 255))
    for i, line in enumerate(lines):
        overlay.text((x0, y0 + i * step), line, fill=(255, 255, 255, 255), font=font)
    overlay.text((x0, y0 + step * len(lines)), footer, fill=(220, 220, 220, 255), font=small_font)


def _transparent(img: Image.Image) -> Image.Image:
    """Keep only a central ellipse (and the text later drawn); the rest gets alpha 0."""
    w, h = img.size
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).ellipse((w // 8, h // 8, w - w // 8, h - h // 8), fill=255)
    out = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    out.paste(img.convert("RGB"), (0, 0), mask)
    if img.mode == "RGBA":  # keep existing transparency inside the ellipse
        alpha = Image.composite(img.getchannel("A"), mask, mask)
        out.putalpha(alpha)
    return out


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def fast_png(img: Image.Image) -> bytes:
    """A valid, lossless PNG of a photographic RGB or RGBA image, several times faster than
    Pillow's encoder on this kind of content.

    Every row uses PNG's ``Sub`` filter (computed for the whole image at once with
    ``ImageChops.subtract_modulo`` against the image shifted one pixel right) and the rows are
    Huffman-coded only (``Z_HUFFMAN_ONLY``: no LZ77 search, which finds nothing in grain
    anyway). The size lands where a photograph's does: about 2 bytes per pixel for RGB.

    Args:
        img: An RGB or RGBA image.

    Returns:
        The PNG bytes.
    """
    width, height = img.size
    shifted = Image.new(img.mode, (width, height))
    shifted.paste(img, (1, 0))
    filtered = ImageChops.subtract_modulo(img, shifted).tobytes()
    stride = width * len(img.getbands())
    rows = b"".join(
        b"\x01" + filtered[start : start + stride] for start in range(0, len(filtered), stride)
    )
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = deflate.compress(rows) + deflate.flush()
    colour_type = 6 if img.mode == "RGBA" else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", idat),
            _png_chunk(b"IEND", b""),
        )
    )


def encode(
    img: Image.Image, output_format: str, compression: int | None, photographic: bool = False
) -> bytes:
    """Encode an image the way the API returns it.

    Args:
        img: The image (RGB or RGBA).
        output_format: ``png``, ``jpeg`` or ``webp``.
        compression: ``output_compression`` (used as quality for jpeg/webp; default 100).
        photographic: The image carries grain: PNGs go through :func:`fast_png`.

    Returns:
        The encoded bytes.
    """
    if output_format not in ("jpeg", "webp") and photographic and img.mode in ("RGB", "RGBA"):
        return fast_png(img)
    buf = io.BytesIO()
    quality = 100 if compression is None else max(1, min(100, compression))
    if output_format == "jpeg":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    elif output_format == "webp":
        img.save(buf, "WEBP", quality=quality, method=0)
    else:
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@functools.lru_cache(maxsize=24)
def render_generation(
    prompt: str,
    index: int,
    n: int,
    width: int,
    height: int,
    output_format: str = "png",
    compression: int | None = None,
    transparent: bool = False,
    model: str = "gpt-image-2",
    quality: str = "high",
    light: bool = False,
) -> bytes:
    """Draw one generated image.

    Args:
        prompt: The prompt (its words are drawn on the image).
        index: Index of the image in the request (changes the colours).
        n: Number of images in the request.
        width: Width in px.
        height: Height in px.
        output_format: ``png``, ``jpeg`` or ``webp``.
        compression: ``output_compression``.
        transparent: Give the background alpha 0 (png/webp).
        model: Model name (drawn in the footer).
        quality: Resolved quality (drawn in the footer).
        light: The flat drawing only, without the photographic grain (small and fast).

    Returns:
        The encoded image.
    """
    digest = _digest("gen", prompt, index, width, height, model, quality, transparent)
    img = _gradient(width, height, digest)
    _shapes(img, digest)
    if not light:
        img = add_grain(img, digest)
    if transparent:
        img = _transparent(img)
    footer = f"#{index + 1}/{n}  {width}x{height}  {model}  {quality}  {digest[:3].hex()}"
    _text_panel(img, prompt, footer)
    return encode(img, output_format, compression, photographic=not light)


def pooled_generation(prompt: str, index: int, width: int, height: int, pool: int) -> bytes:
    """One of ``pool`` pre-drawn realistic PNGs, made this request's own by a text chunk.

    The pool's drawings are as heavy as :func:`render_generation`'s (they are its output for a
    fixed prompt), but drawn once per slot and size; the request's prompt and index go into a
    ``tEXt`` chunk, so every answer's bytes (and sha256) are distinct. For benchmarks, where the
    real API draws on its own servers and the stand-in's drawing should not take the cores of
    the machine under test.

    Args:
        prompt: The request's prompt (written into the chunk, not drawn).
        index: Index of the image in the request.
        width: Width in px.
        height: Height in px.
        pool: How many distinct drawings to choose from.

    Returns:
        The PNG bytes.
    """
    slot = hashlib.sha256(f"{prompt}#{index}".encode()).digest()[0] % max(pool, 1)
    png = render_generation(f"pre-drawn image {slot + 1} of {pool}", 0, 1, width, height)
    text = b"Comment\x00" + f"{prompt} #{index + 1}".encode("latin-1", "replace")
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]))
    return png[:-12] + chunk + png[-12:]


def _open_rgba(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as src:
        return src.convert("RGBA")


def render_edit(
    prompt: str,
    index: int,
    n: int,
    width: int,
    height: int,
    images: Sequence[bytes],
    mask: bytes | None = None,
    output_format: str = "png",
    compression: int | None = None,
    transparent: bool = False,
    model: str = "gpt-image-2",
    quality: str = "high",
    light: bool = False,
) -> bytes:
    """Draw one edited image: the first input, tinted (only where the mask is transparent when a
    mask is given), thumbnails of the other inputs, and the prompt's words.

    Args:
        prompt: The prompt.
        index: Index of the image in the request.
        n: Number of images in the request.
        width: Output width.
        height: Output height.
        images: The encoded input images (the first is the base).
        mask: The encoded PNG mask; alpha 0 marks the area to edit.
        output_format: ``png``, ``jpeg`` or ``webp``.
        compression: ``output_compression``.
        transparent: Give the background alpha 0 (png/webp).
        model: Model name (drawn in the footer).
        quality: Resolved quality (drawn in the footer).
        light: Without the photographic grain (small and fast).

    Returns:
        The encoded image.
    """
    input_digests = [hashlib.sha256(data).digest() for data in images]
    digest = _digest("edit", prompt, index, width, height, model, quality, *input_digests)
    base = _open_rgba(images[0])
    if base.size != (width, height):
        base = base.resize((width, height), Image.Resampling.BILINEAR)
    tint_layer = Image.new("RGBA", (width, height), (*_colours(digest, 1)[0], 255))
    tinted = Image.blend(base, tint_layer, 0.55)
    tinted.putalpha(base.getchannel("A"))
    if mask is not None:
        region = _open_rgba(mask).getchannel("A").point(lambda a: 255 if a == 0 else 0)
        if region.size != (width, height):
            region = region.resize((width, height), Image.Resampling.NEAREST)
        out = base.copy()
        out.paste(tinted, (0, 0), region)
    else:
        out = Image.blend(base, tinted, 0.5)
    thumb_h = max(16, height // 6)
    x = width // 40
    for data in images[1:]:
        thumb = _open_rgba(data)
        thumb_w = max(1, thumb.width * thumb_h // max(1, thumb.height))
        if x + thumb_w > width:
            break
        out.paste(
            thumb.resize((thumb_w, thumb_h), Image.Resampling.BILINEAR), (x, height - thumb_h)
        )
        x += thumb_w + width // 80
    if not light:
        out = add_grain(out, digest)
    if transparent:
        out = _transparent(out)
    else:
        flat = Image.new("RGB", (width, height), (255, 255, 255))
        flat.paste(out, (0, 0), out.getchannel("A"))
        out = flat
    footer = f"edit #{index + 1}/{n}  {len(images)} input(s)  {width}x{height}  {model}"
    _text_panel(out, prompt, footer)
    return encode(out, output_format, compression, photographic=not light)
