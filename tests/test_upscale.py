"""Upscaling: exact sizes per mode, Pillow-identical pixels, alpha, limits refused before work."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageFile, ImageStat
from prefect import flow

from prefect_cometapi.emulator.drawing import render_generation
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.models import GeneratedImage, Usage
from prefect_cometapi.tasks.upscale import upscale_image
from prefect_cometapi.upscaling import MAX_UPSCALE_PIXELS, upscale
from prefect_cometapi.upscaling.png import (
    ADAPTIVE_DEFLATE,
    ADAPTIVE_RLE,
    AVERAGE_HUFFMAN,
    PAETH_HUFFMAN,
    PAETH_RLE,
    PngPlan,
    choose_png_plan,
    encode_png,
)

LANCZOS = Image.Resampling.LANCZOS


def _picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A deterministic image with edges, gradients and noise (so resampling differences show)."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    noise = Image.effect_noise((width, height), 40).convert("RGB")
    img = Image.blend(img, noise, 0.3)
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 5, height // 5, width * 3 // 5, height * 4 // 5), fill=(200, 30, 60))
    draw.rectangle((width // 2, 0, width // 2 + 3, height), fill=(10, 200, 40))
    if mode == "RGBA":
        alpha = Image.new("L", (width, height), 255)
        ImageDraw.Draw(alpha).rectangle((width // 2, 0, width, height), fill=0)
        ImageDraw.Draw(alpha).ellipse((0, 0, width // 3, height // 3), fill=128)
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    return img


def _generated(img: Image.Image, fmt: str = "png", **save: object) -> GeneratedImage:
    buf = io.BytesIO()
    img.save(buf, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt], **save)
    data = buf.getvalue()
    return GeneratedImage(
        data=data,
        format=fmt,
        width=img.width,
        height=img.height,
        sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2",
        prompt="a test card",
        params={"size": f"{img.width}x{img.height}", "quality": "low"},
        usage=Usage(input_tokens=10, output_tokens=200, total_tokens=210),
        cost_usd=0.0123,
    )


def _decode(image: GeneratedImage) -> Image.Image:
    img = Image.open(io.BytesIO(image.data))
    img.load()
    return img


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def landscape() -> Image.Image:
    return _picture(300, 200)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"size": "900x500", "mode": "fit"}, (750, 500)),
        ({"size": "600x900", "mode": "fit"}, (600, 400)),
        ({"size": "900x500", "mode": "cover"}, (900, 500)),
        ({"size": "640x640", "mode": "cover"}, (640, 640)),
        ({"size": "200x400", "mode": "cover"}, (200, 400)),  # x2, then cropped: not a downscale
        ({"size": "1000x300", "mode": "stretch"}, (1000, 300)),
        ({"long_edge": 961}, (961, 641)),
        ({"factor": 2.5}, (750, 500)),
        ({"factor": 3}, (900, 600)),
    ],
)
def test_output_size_is_exact(
    landscape: Image.Image, kwargs: dict[str, object], expected: tuple[int, int]
) -> None:
    out = upscale(_generated(landscape), **kwargs)  # type: ignore[arg-type]
    assert (out.width, out.height) == expected
    assert _decode(out).size == expected


def test_long_edge_on_a_portrait_image() -> None:
    out = upscale(_generated(_picture(200, 300)), long_edge=1000)
    assert out.size == "667x1000"


@pytest.mark.parametrize(
    ("mode", "size"), [("fit", "900x500"), ("fit", "1024x1024"), ("cover", "1200x500")]
)
def test_fit_and_cover_keep_the_aspect(landscape: Image.Image, mode: str, size: str) -> None:
    out = upscale(_generated(landscape), size=size, mode=mode)  # type: ignore[arg-type]
    tw, th = (int(v) for v in size.split("x"))
    if mode == "fit":
        assert out.width <= tw and out.height <= th
        assert out.width == tw or out.height == th
        assert abs(out.width / out.height - 1.5) < 1.5 / min(out.width, out.height)
    else:
        # cover = Pillow's resize of the whole image to the covering size, centre-cropped.
        scale = max(tw / 300, th / 200)
        cw, ch = round(300 * scale), round(200 * scale)
        left, top = (cw - tw) // 2, (ch - th) // 2
        with landscape.resize((cw, ch), LANCZOS) as full:
            reference = full.crop((left, top, left + tw, top + th))
        diff = ImageChops.difference(_decode(out), reference).getextrema()
        assert max(high for _, high in diff) <= 2


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_png_pixels_equal_pillows_own_lanczos(mode: str) -> None:
    src = _picture(240, 135, mode)
    out = upscale(_generated(src), size="640x360")
    assert out.format == "png" and out.size == "640x360"
    decoded = _decode(out)
    assert decoded.mode == mode
    assert _same_pixels(decoded, src.resize((640, 360), LANCZOS))


def test_every_png_level_is_lossless(landscape: Image.Image) -> None:
    reference = landscape.resize((600, 400), LANCZOS)
    sizes = set()
    for level in (0, 1, 6, 9):
        out = upscale(_generated(landscape), factor=2, png_compress_level=level)
        assert _same_pixels(_decode(out), reference)
        sizes.add(len(out.data))
    assert len(sizes) > 1  # the level really reached the encoder


def test_default_png_is_lossless_and_near_level_6_on_grainy_images() -> None:
    # The emulator's realistic image (film grain over a drawing): what a photographic
    # generation gives the encoder.
    source = render_generation("a lamp on a desk", 0, 1, 320, 180)
    image = _generated(Image.open(io.BytesIO(source)))
    with Image.open(io.BytesIO(source)) as picture:
        reference = picture.resize((640, 360), LANCZOS)
    default = upscale(image, factor=2)
    level_1 = upscale(image, factor=2, png_compress_level=1)
    level_6 = upscale(image, factor=2, png_compress_level=6)
    assert _same_pixels(_decode(default), reference)
    assert len(default.data) <= 1.1 * len(level_6.data)
    assert len(default.data) < len(level_1.data)  # the run-length strategy reached the encoder


def test_bicubic_matches_pillow(landscape: Image.Image) -> None:
    out = upscale(_generated(landscape), factor=2, resample="bicubic")
    assert _same_pixels(_decode(out), landscape.resize((600, 400), Image.Resampling.BICUBIC))
    assert not _same_pixels(_decode(out), landscape.resize((600, 400), LANCZOS))


def test_alpha_is_kept_and_scaled() -> None:
    src = _picture(200, 120, "RGBA")
    out = _decode(upscale(_generated(src), factor=2))
    assert out.mode == "RGBA"
    alpha = out.getchannel("A")
    assert alpha.getpixel((300, 120)) == 0  # right half transparent
    assert alpha.getpixel((100, 200)) == 255  # left half opaque
    assert alpha.getpixel((20, 20)) == 128  # the half-transparent ellipse
    expected_alpha = src.getchannel("A").resize((400, 240), LANCZOS)
    diff = ImageChops.difference(alpha, expected_alpha).getextrema()
    assert diff[1] <= 1


def test_palette_with_transparency_becomes_rgba() -> None:
    src = Image.new("P", (64, 48), 0)
    src.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    ImageDraw.Draw(src).rectangle((0, 0, 31, 47), fill=1)
    src.info["transparency"] = 0
    out = _decode(upscale(_generated(src, transparency=0), factor=2))
    assert out.mode == "RGBA" and out.size == (128, 96)
    assert out.getpixel((10, 10)) == (0, 0, 255, 255)
    assert out.getpixel((120, 90))[3] == 0


def test_sharpen_changes_colour_not_alpha() -> None:
    src = _generated(_picture(160, 90, "RGBA"))
    plain = _decode(upscale(src, factor=2))
    sharp = _decode(upscale(src, factor=2, sharpen=True))
    assert sharp.size == plain.size and sharp.mode == "RGBA"
    assert not _same_pixels(sharp.convert("RGB"), plain.convert("RGB"))
    assert _same_pixels(sharp.getchannel("A"), plain.getchannel("A"))


def test_jpeg_and_webp_outputs_and_quality(landscape: Image.Image) -> None:
    src = _generated(landscape)
    for fmt in ("jpeg", "webp"):
        low = upscale(src, factor=2, output_format=fmt, quality=20)  # type: ignore[arg-type]
        high = upscale(src, factor=2, output_format=fmt, quality=95)  # type: ignore[arg-type]
        for out in (low, high):
            assert out.format == fmt and out.content_type == f"image/{fmt}"
            decoded = _decode(out)
            assert decoded.format == fmt.upper() and decoded.size == (600, 400)
        assert len(low.data) < len(high.data)
        reference = landscape.resize((600, 400), LANCZOS)
        error_low = ImageChops.difference(_decode(low).convert("RGB"), reference)
        error_high = ImageChops.difference(_decode(high).convert("RGB"), reference)
        assert sum(ImageStat.Stat(error_high).mean) < sum(ImageStat.Stat(error_low).mean)


def test_output_format_defaults_to_the_input_format(landscape: Image.Image) -> None:
    out = upscale(_generated(landscape, "jpeg", quality=90), factor=2)
    assert out.format == "jpeg" and _decode(out).format == "JPEG"
    out = upscale(_generated(landscape, "webp"), factor=2)
    assert out.format == "webp"


def test_jpeg_of_a_transparent_image_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        upscale(_generated(_picture(100, 80, "RGBA")), factor=2, output_format="jpeg")
    assert info.value.param == "output_format"
    assert "png" in info.value.rule and "webp" in info.value.rule


def test_jpeg_of_an_opaque_rgba_image_drops_the_alpha(landscape: Image.Image) -> None:
    opaque = landscape.convert("RGBA")
    out = upscale(_generated(opaque), factor=2, output_format="jpeg")
    assert _decode(out).mode == "RGB"


def test_metadata_is_kept(landscape: Image.Image) -> None:
    src = _generated(landscape)
    out = upscale(src, factor=2)
    assert (out.model, out.prompt, out.params, out.usage, out.cost_usd) == (
        src.model,
        src.prompt,
        src.params,
        src.usage,
        src.cost_usd,
    )
    assert out.source_sha256 == src.sha256
    assert out.sha256 == hashlib.sha256(out.data).hexdigest() != src.sha256


@pytest.fixture(scope="module")
def png_1536x864() -> bytes:
    return _generated(_picture(1536, 864)).data


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything decodes pixels or resizes."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were touched before the request was refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(Image.Image, "resize", forbidden)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"factor": 6}, "factor"),  # 1536x864 -> 9216x5184
        ({"long_edge": 7681}, "long_edge"),
        ({"size": "7681x4320", "mode": "stretch"}, "size"),
        ({"size": "8000x8000", "mode": "cover"}, "size"),
    ],
)
def test_over_the_cap_is_refused_before_work(
    png_1536x864: bytes, kwargs: dict[str, object], param: str, no_decoding: None
) -> None:
    src = GeneratedImage(
        data=png_1536x864,
        format="png",
        width=1536,
        height=864,
        sha256="0",
        model="m",
        prompt="p",
    )
    with pytest.raises(ValidationError) as info:
        upscale(src, **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param
    assert f"{MAX_UPSCALE_PIXELS:,}" in info.value.rule


def test_exactly_8k_is_allowed_and_max_pixels_is_adjustable() -> None:
    src = _generated(_picture(16, 9))
    with pytest.raises(ValidationError):
        upscale(src, factor=10, max_pixels=160 * 90 - 1)
    assert upscale(src, factor=10, max_pixels=160 * 90).size == "160x90"
    assert upscale(src, size="7680x4320", mode="stretch").size == "7680x4320"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "600x100"}, "size"),  # fit would give 150x100
        ({"size": "299x400", "mode": "stretch"}, "size"),
        ({"size": "250x150", "mode": "cover"}, "size"),
        ({"long_edge": 299}, "long_edge"),
        ({"factor": 0.5}, "factor"),
    ],
)
def test_downscale_is_refused_unless_allowed(
    landscape: Image.Image, kwargs: dict[str, object], param: str
) -> None:
    src = _generated(landscape)
    with pytest.raises(ValidationError) as info:
        upscale(src, **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param and "downscale" in info.value.rule
    out = upscale(src, allow_downscale=True, **kwargs)  # type: ignore[arg-type]
    assert out.width < 300 or out.height < 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"size": "900x600", "factor": 3},
        {"size": "auto"},
        {"size": "900x"},
        {"size": "0x600"},
        {"size": "900 by 600"},
        {"factor": 0},
        {"factor": float("nan")},
        {"factor": True},
        {"long_edge": -5},
        {"long_edge": 900.5},
        {"factor": 2, "mode": "squash"},
        {"factor": 2, "quality": 0},
        {"factor": 2, "png_compress_level": 10},
        {"factor": 2, "output_format": "gif"},
        {"factor": 2, "resample": "nearest"},
    ],
)
def test_bad_arguments_are_refused(
    landscape: Image.Image, kwargs: dict[str, object], no_decoding: None
) -> None:
    with pytest.raises(ValidationError):
        upscale(_generated(landscape), **kwargs)  # type: ignore[arg-type]


def test_junk_bytes_are_refused() -> None:
    junk = GeneratedImage(
        data=b"not an image", format="png", width=10, height=10, sha256="x", model="m", prompt="p"
    )
    with pytest.raises(ValidationError) as info:
        upscale(junk, factor=2)
    assert info.value.param == "image"


def test_upscale_image_in_a_flow(landscape: Image.Image) -> None:
    src = _generated(landscape)

    @flow
    def pipeline(image: GeneratedImage) -> GeneratedImage:
        return upscale_image(image, size="1200x675", mode="cover", output_format="webp")

    out = pipeline(src)
    assert out.format == "webp" and out.size == "1200x675"
    assert _decode(out).size == (1200, 675)
    assert out.source_sha256 == src.sha256


def test_upscale_image_failure_fails_the_flow(landscape: Image.Image) -> None:
    @flow
    def pipeline(image: GeneratedImage) -> GeneratedImage:
        return upscale_image(image, factor=0.5)

    with pytest.raises(ValidationError, match="downscale"):
        pipeline(_generated(landscape))


def _noisy_photo(width: int, height: int) -> Image.Image:
    """A photograph-like image under strong Gaussian noise (what grainy generations look like)."""
    smooth = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(smooth)
    draw.ellipse((width // 4, height // 4, width * 3 // 4, height), fill=(180, 120, 90))
    channels = [Image.effect_noise((width, height), 30) for _ in range(3)]
    noise = Image.merge("RGB", channels)
    return Image.blend(smooth, noise, 0.35)


def test_default_png_on_noisy_content_is_exact_and_not_much_larger_than_pillows() -> None:
    src = _noisy_photo(320, 180)
    out = upscale(_generated(src), size="800x450", mode="stretch")
    reference = src.resize((800, 450), LANCZOS)
    assert _same_pixels(_decode(out), reference)
    pillow = io.BytesIO()
    reference.save(pillow, "PNG")  # Pillow's defaults: adaptive filter, zlib level 6
    assert len(out.data) <= 1.1 * len(pillow.getvalue())


def test_default_png_on_flat_drawings_is_exact_and_not_much_larger_than_pillows() -> None:
    source = render_generation("a flat poster", 0, 1, 320, 180, light=True)
    image = _generated(Image.open(io.BytesIO(source)))
    with Image.open(io.BytesIO(source)) as picture:
        reference = picture.resize((800, 450), LANCZOS)
    out = upscale(image, size="800x450", mode="stretch")
    assert _same_pixels(_decode(out), reference)
    pillow = io.BytesIO()
    reference.save(pillow, "PNG")
    assert len(out.data) <= 1.1 * len(pillow.getvalue())


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize(
    "plan", [AVERAGE_HUFFMAN, PAETH_HUFFMAN, PAETH_RLE, ADAPTIVE_RLE, ADAPTIVE_DEFLATE]
)
def test_every_png_plan_decodes_to_the_exact_pixels(mode: str, plan: PngPlan) -> None:
    # Random bytes make every Average residual wrap somewhere; odd sizes test the edges.
    size = (67, 41)
    img = Image.frombytes(mode, size, random.Random(7).randbytes(size[0] * size[1] * len(mode)))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode_png(img, icc=profile if mode in ("RGB", "RGBA") else None, plan=plan)
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        assert decoded.mode == mode and decoded.size == size
        assert decoded.tobytes() == img.tobytes()
        assert decoded.info.get("icc_profile") == (profile if mode in ("RGB", "RGBA") else None)


def _smooth_texture(width: int, height: int) -> Image.Image:
    """Photograph-like detail: noise at a quarter of the size, smoothed up (no pixel noise)."""
    small = [Image.effect_noise((width // 4, height // 4), 60) for _ in range(3)]
    return Image.merge("RGB", small).resize((width, height), Image.Resampling.BICUBIC)


def test_the_probe_picks_average_for_noise_paeth_for_photos_and_level_6_for_drawings() -> None:
    noisy = _noisy_photo(400, 600).resize((800, 1200), LANCZOS)
    assert choose_png_plan(noisy)[0] == AVERAGE_HUFFMAN
    texture = _smooth_texture(320, 240)
    photo = texture.resize((640, 480), LANCZOS)
    assert choose_png_plan(photo)[0] in (PAETH_HUFFMAN, PAETH_RLE)
    out = upscale(_generated(texture), factor=2)
    assert _same_pixels(_decode(out), photo)
    pillow = io.BytesIO()
    photo.save(pillow, "PNG")
    assert len(out.data) <= 1.1 * len(pillow.getvalue())
    with Image.open(io.BytesIO(render_generation("flat", 0, 1, 400, 600, light=True))) as flat:
        drawing = flat.convert("RGB").resize((800, 1200), LANCZOS)
    assert choose_png_plan(drawing)[0] == ADAPTIVE_DEFLATE
