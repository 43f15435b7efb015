"""The emulator's images: photographic weight by default, flat drawings on request."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import httpx
import pytest
from fixtures_emulator import TEST_API_KEY
from PIL import Image, ImageChops

from prefect_cometapi.emulator import Emulator, drawing

PROMPT = "A studio product banner of a ceramic lamp, soft light, clean background"
MB = 1_000_000


def _generate(emulator: Emulator, **params: object) -> bytes:
    body = {"model": "gpt-image-2", "prompt": PROMPT, "size": "1024x1024", **params}
    response = httpx.post(
        f"{emulator.base_url}/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def test_realistic_images_weigh_what_the_real_apis_do(emulator: Emulator) -> None:
    emulator.configure(light_images=False)
    heavy = _generate(emulator)
    emulator.configure(light_images=True)
    light = _generate(emulator)
    assert 1.5 * MB <= len(heavy) <= 3 * MB, len(heavy)
    assert len(light) < 0.5 * MB, len(light)
    with Image.open(io.BytesIO(heavy)) as img:
        assert (img.format, img.size, img.mode) == ("PNG", (1024, 1024), "RGB")
        pixels = img.convert("RGB")
    with Image.open(io.BytesIO(light)) as img:
        flat = img.convert("RGB")
    # The grain changes every pixel a little but keeps the drawing (and its words) in place.
    diff = ImageChops.difference(pixels, flat).convert("L")
    assert 3 < sum(i * n for i, n in enumerate(diff.histogram())) / (1024 * 1024) < 40


def test_the_default_config_is_realistic_and_the_cli_flag_makes_it_light() -> None:
    from prefect_cometapi.cli import build_parser
    from prefect_cometapi.emulator import EmulatorConfig

    assert EmulatorConfig().light_images is False
    args = build_parser().parse_args(["emulator", "--light-images"])
    assert args.light_images is True


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_fast_png_is_lossless(mode: str) -> None:
    base = drawing.add_grain(Image.new("RGB", (320, 200), (40, 90, 200)), b"\x07" * 32)
    img = base.convert(mode)
    if mode == "RGBA":
        img.putalpha(Image.linear_gradient("L").resize((320, 200)))
    data = drawing.fast_png(img)
    with Image.open(io.BytesIO(data)) as back:
        back.load()
        assert back.mode == mode and back.size == (320, 200)
        assert back.tobytes() == img.tobytes()


def test_the_same_request_gives_the_same_bytes_in_another_process() -> None:
    here = drawing.render_generation(PROMPT, 0, 1, 1024, 1024)
    code = (
        "import hashlib, sys\n"
        "from prefect_cometapi.emulator import drawing\n"
        f"data = drawing.render_generation({PROMPT!r}, 0, 1, 1024, 1024)\n"
        "sys.stdout.write(hashlib.sha256(data).hexdigest())\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    import hashlib

    assert there == hashlib.sha256(here).hexdigest()
