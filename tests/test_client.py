"""CometAPIClient against the emulator over real sockets: every parameter of both endpoints.

Each test checks three things: what the client sent (as the emulator recorded it, validated
against the spec's request schemas), what came back on the wire (validated against
``ImagesResponse``), and the typed result (pixels, format, sha256, usage and cost).
The async twin is in ``test_client_async.py`` and reuses the helpers defined here.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr
from spec_validation import multipart_instance, validate_against_spec

from prefect_cometapi import CometAPIClient, ImageResult, ModelPrice
from prefect_cometapi.billing.prices import DEFAULT_PRICES, cost_usd, estimate_output_tokens
from prefect_cometapi.emulator import Emulator, RequestRecord

PROMPT = "a red bicycle leaning on a blue wall"
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


# --- helpers (also used by test_client_async.py) ---------------------------------------------


def encoded(
    size: tuple[int, int] = (1024, 1024),
    colour: tuple[int, ...] = (40, 90, 160),
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    """A solid image encoded as ``fmt``."""
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, fmt)
    return buf.getvalue()


def rgba_mask(size: tuple[int, int] = (1024, 1024)) -> bytes:
    """A PNG mask: opaque, with a transparent (to-edit) square in the middle."""
    img = Image.new("RGBA", size, (0, 0, 0, 255))
    w, h = size
    img.paste((0, 0, 0, 0), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def assert_format(data: bytes, fmt: str) -> Image.Image:
    """Assert the bytes really are ``fmt`` (magic bytes and Pillow's verdict); return the image."""
    if fmt == "webp":
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", data[:16]
    else:
        assert data.startswith(MAGIC[fmt]), data[:16]
    img = Image.open(io.BytesIO(data))
    assert img.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    img.load()
    return img


def has_transparent_pixels(img: Image.Image) -> bool:
    """Whether the decoded image has an alpha channel with fully transparent pixels."""
    if "A" not in img.getbands():
        return False
    low, _ = img.getchannel("A").getextrema()
    return low == 0


class WireLog:
    """Response bodies exactly as the client received them (an httpx response hook)."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    async def ahook(self, response: httpx.Response) -> None:
        await response.aread()
        self.responses.append(response)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.responses]


def check_result(
    result: ImageResult,
    *,
    model: str,
    size: tuple[int, int],
    fmt: str = "png",
    n: int = 1,
    prices: dict[str, ModelPrice] | None = None,
) -> None:
    """The typed result is consistent with its bytes, the usage and the price table."""
    assert result.model == model
    assert len(result.images) == n
    assert result.usage is not None and result.usage.output_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.cost_usd == cost_usd(result.usage, model, prices)
    assert result.request_id and result.request_id.startswith("req_")
    assert isinstance(result.created, int)
    for i, image in enumerate(result.images):
        img = assert_format(image.data, fmt)
        assert img.size == size
        assert (image.width, image.height) == size
        assert image.size == f"{size[0]}x{size[1]}"
        assert image.format == fmt
        assert image.content_type == f"image/{fmt}"
        assert image.sha256 == hashlib.sha256(image.data).hexdigest()
        assert image.index == i
        assert image.model == model
        assert image.usage == result.usage
        assert image.cost_usd == round(result.cost_usd / n, 6)
    assert len({image.sha256 for image in result.images}) == n, "the n images must differ"


def check_usage_matches_wire(result: ImageResult, body: dict[str, Any]) -> None:
    """The parsed usage is the one the API sent."""
    usage = body["usage"]
    assert result.usage is not None
    assert result.usage.raw == usage
    assert result.usage.input_tokens == usage["input_tokens"]
    assert result.usage.output_tokens == usage["output_tokens"]
    assert result.usage.total_tokens == usage["total_tokens"]
    assert result.usage.text_input_tokens == usage["input_tokens_details"]["text_tokens"]
    assert result.usage.image_input_tokens == usage["input_tokens_details"]["image_tokens"]


def only_record(emulator: Emulator, endpoint: str) -> RequestRecord:
    """The single request the emulator saw, which must have succeeded."""
    (record,) = emulator.requests
    assert record.endpoint == endpoint
    assert record.status == 200
    return record


def check_generation_record(record: RequestRecord, expected: dict[str, Any]) -> None:
    """The JSON the client sent is exactly the expected body and follows the spec."""
    assert record.params == expected
    validate_against_spec(record.params, "CreateImageRequest")


def check_edit_record(record: RequestRecord, expected: dict[str, str]) -> None:
    """The multipart text fields are exactly the expected ones and the form follows the spec."""
    assert record.params == expected
    validate_against_spec(multipart_instance(record.params, record.files), "CreateImageEditRequest")


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def wire() -> WireLog:
    return WireLog()


@pytest.fixture
def client(emulator: Emulator, api_key: str, wire: WireLog) -> Iterator[CometAPIClient]:
    """A client on the emulator whose raw responses are kept in ``wire``."""
    http = httpx.Client(timeout=60, event_hooks={"response": [wire.hook]})
    with CometAPIClient(api_key, base_url=emulator.base_url, max_retries=0, http_client=http) as c:
        yield c
    http.close()


def check_wire(wire: WireLog, result: ImageResult) -> dict[str, Any]:
    """Exactly one response, valid per the spec, and the result carries its request id."""
    (response,) = wire.responses
    body = response.json()
    validate_against_spec(body, "ImagesResponse")
    assert result.request_id == response.headers["x-request-id"]
    assert result.created == body["created"]
    check_usage_matches_wire(result, body)
    return body


# --- generations ---------------------------------------------------------------------------


def test_generate_minimal(client: CometAPIClient, emulator: Emulator, wire: WireLog) -> None:
    result = client.generate(PROMPT, size="1024x1024", quality="low")
    check_result(result, model="gpt-image-2", size=(1024, 1024))
    body = check_wire(wire, result)
    assert body["size"] == "1024x1024"
    record = only_record(emulator, "generations")
    check_generation_record(
        record,
        {"prompt": PROMPT, "model": "gpt-image-2", "n": 1, "size": "1024x1024", "quality": "low"},
    )
    assert record.headers["content-type"] == "application/json"
    assert result.attempts == 1
    assert result.params == {"model": "gpt-image-2", "n": 1, "size": "1024x1024", "quality": "low"}
    image = result.images[0]
    assert (image.prompt, image.params) == (PROMPT, result.params)
    assert result.usage.output_tokens == estimate_output_tokens("gpt-image-2", "1024x1024", "low")
    price = DEFAULT_PRICES["gpt-image-2"]
    by_hand = (
        result.usage.text_input_tokens * price.text_input
        + result.usage.output_tokens * price.image_output
    ) / 1e6
    assert result.cost_usd == pytest.approx(by_hand, abs=1e-6)
    assert emulator.billed_images == 1


def test_generate_every_parameter(
    client: CometAPIClient, emulator: Emulator, wire: WireLog
) -> None:
    result = client.generate(
        PROMPT,
        model="gpt-image-2",
        n=2,
        size="1536x1024",
        quality="medium",
        background="opaque",
        output_format="webp",
        output_compression=70,
        moderation="low",
        user="end-user-42",
    )
    check_result(result, model="gpt-image-2", size=(1536, 1024), fmt="webp", n=2)
    check_wire(wire, result)
    record = only_record(emulator, "generations")
    check_generation_record(
        record,
        {
            "prompt": PROMPT,
            "model": "gpt-image-2",
            "n": 2,
            "size": "1536x1024",
            "quality": "medium",
            "background": "opaque",
            "output_format": "webp",
            "output_compression": 70,
            "moderation": "low",
            "user": "end-user-42",
        },
    )
    assert result.params["user"] == "end-user-42"
    assert result.params["moderation"] == "low"
    assert emulator.billed_images == 2


def test_dated_snapshot_is_sent_as_is_and_priced_as_its_family(
    client: CometAPIClient, emulator: Emulator, wire: WireLog
) -> None:
    snapshot = "gpt-image-2-2026-04-21"
    result = client.generate(PROMPT, model=snapshot, size="1024x640", quality="low")
    check_result(result, model=snapshot, size=(1024, 640))
    check_wire(wire, result)
    assert only_record(emulator, "generations").params["model"] == snapshot
    assert result.cost_usd == cost_usd(result.usage, "gpt-image-2")


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536"])
def test_gpt_image_1_5_fixed_sizes(
    client: CometAPIClient, emulator: Emulator, wire: WireLog, size: str
) -> None:
    result = client.generate(PROMPT, model="gpt-image-1.5", size=size, quality="low")
    w, h = (int(v) for v in size.split("x"))
    check_result(result, model="gpt-image-1.5", size=(w, h))
    check_wire(wire, result)
    check_generation_record(
        only_record(emulator, "generations"),
        {"prompt": PROMPT, "model": "gpt-image-1.5", "n": 1, "size": size, "quality": "low"},
    )
    assert result.cost_usd != cost_usd(result.usage, "gpt-image-2"), "priced as gpt-image-1.5"


@pytest.mark.parametrize(
    "size", ["2048x1152", "1024x640", "640x1024", "1920x640", "1008x656", "auto"]
)
def test_gpt_image_2_custom_sizes(
    client: CometAPIClient, emulator: Emulator, wire: WireLog, size: str
) -> None:
    result = client.generate(PROMPT, size=size, quality="low")
    expected = (1024, 1024) if size == "auto" else tuple(int(v) for v in size.split("x"))
    check_result(result, model="gpt-image-2", size=expected)
    check_wire(wire, result)
    assert only_record(emulator, "generations").params["size"] == size


@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
def test_quality(client: CometAPIClient, emulator: Emulator, wire: WireLog, quality: str) -> None:
    result = client.generate(PROMPT, size="1024x640", quality=quality)
    check_result(result, model="gpt-image-2", size=(1024, 640))
    body = check_wire(wire, result)
    assert only_record(emulator, "generations").params["quality"] == quality
    resolved = "high" if quality == "auto" else quality
    assert body["quality"] == resolved
    assert result.usage.output_tokens == estimate_output_tokens("gpt-image-2", "1024x640", quality)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_format_bytes_really_are_that_format(
    client: CometAPIClient, emulator: Emulator, wire: WireLog, fmt: str
) -> None:
    result = client.generate(PROMPT, size="1024x640", quality="low", output_format=fmt)
    check_result(result, model="gpt-image-2", size=(1024, 640), fmt=fmt)
    assert check_wire(wire, result)["output_format"] == fmt
    assert only_record(emulator, "generations").params["output_format"] == fmt


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background_gives_alpha(
    client: CometAPIClient, emulator: Emulator, wire: WireLog, fmt: str
) -> None:
    result = client.generate(
        PROMPT, size="1024x1024", quality="low", background="transparent", output_format=fmt
    )
    check_result(result, model="gpt-image-2", size=(1024, 1024), fmt=fmt)
    assert check_wire(wire, result)["background"] == "transparent"
    assert has_transparent_pixels(Image.open(io.BytesIO(result.images[0].data)))
    assert only_record(emulator, "generations").params["background"] == "transparent"


def test_opaque_background_has_no_transparent_pixels(client: CometAPIClient) -> None:
    result = client.generate(PROMPT, size="1024x1024", quality="low", background="opaque")
    assert not has_transparent_pixels(Image.open(io.BytesIO(result.images[0].data)))


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_output_compression_is_sent_and_changes_the_bytes(
    client: CometAPIClient, emulator: Emulator, fmt: str
) -> None:
    strong = client.generate(
        PROMPT, size="1024x640", quality="low", output_format=fmt, output_compression=5
    )
    light = client.generate(
        PROMPT, size="1024x640", quality="low", output_format=fmt, output_compression=95
    )
    assert_format(strong.images[0].data, fmt)
    assert len(strong.images[0].data) < len(light.images[0].data)
    assert [r.params["output_compression"] for r in emulator.requests] == [5, 95]
    assert strong.params["output_compression"] == 5


@pytest.mark.parametrize("moderation", ["low", "auto"])
def test_moderation_and_user_are_sent(
    client: CometAPIClient, emulator: Emulator, moderation: str
) -> None:
    client.generate(PROMPT, size="1024x640", quality="low", moderation=moderation, user="u-7")
    record = only_record(emulator, "generations")
    assert (record.params["moderation"], record.params["user"]) == (moderation, "u-7")
    validate_against_spec(record.params, "CreateImageRequest")


def test_n_images_are_distinct_and_share_the_cost(
    client: CometAPIClient, emulator: Emulator, wire: WireLog
) -> None:
    result = client.generate(PROMPT, n=3, size="1024x640", quality="low")
    check_result(result, model="gpt-image-2", size=(1024, 640), n=3)
    assert len(check_wire(wire, result)["data"]) == 3
    assert emulator.billed_images == 3
    one = estimate_output_tokens("gpt-image-2", "1024x640", "low")
    assert result.usage.output_tokens == 3 * one


def test_price_override_changes_the_cost(emulator: Emulator, api_key: str) -> None:
    custom = ModelPrice(text_input=1.0, image_input=2.0, image_output=1000.0)
    with CometAPIClient(api_key, base_url=emulator.base_url) as default_client:
        default = default_client.generate(PROMPT, size="1024x640", quality="low")
    with CometAPIClient(
        api_key, base_url=emulator.base_url, prices={"gpt-image-2": custom}
    ) as client:
        priced = client.generate(PROMPT, size="1024x640", quality="low")
    assert priced.usage == default.usage
    expected = (
        priced.usage.text_input_tokens * 1.0
        + priced.usage.image_input_tokens * 2.0
        + priced.usage.output_tokens * 1000.0
    ) / 1e6
    assert priced.cost_usd == pytest.approx(expected, abs=1e-6)
    assert priced.cost_usd == cost_usd(priced.usage, "gpt-image-2", {"gpt-image-2": custom})
    assert priced.cost_usd != default.cost_usd
    assert priced.images[0].cost_usd == priced.cost_usd


def test_price_override_applies_to_snapshots(emulator: Emulator, api_key: str) -> None:
    custom = ModelPrice(text_input=0.0, image_input=0.0, image_output=1_000_000.0)
    with CometAPIClient(
        api_key, base_url=emulator.base_url, prices={"gpt-image-2": custom}
    ) as client:
        result = client.generate(
            PROMPT, model="gpt-image-2-2026-04-21", size="1024x640", quality="low"
        )
    assert result.cost_usd == float(result.usage.output_tokens)


def test_secret_str_key_and_trailing_slash_base_url(emulator: Emulator, api_key: str) -> None:
    with CometAPIClient(SecretStr(api_key), base_url=emulator.base_url + "/") as client:
        result = client.generate(PROMPT, size="1024x640", quality="low")
    assert result.images[0].width == 1024
    assert only_record(emulator, "generations").status == 200


# --- edits -------------------------------------------------------------------------------


def test_edit_one_image_from_bytes(
    client: CometAPIClient, emulator: Emulator, wire: WireLog
) -> None:
    source = encoded((1024, 1024))
    result = client.edit("add a small red hat", source, size="1024x1024", quality="low")
    check_result(result, model="gpt-image-2", size=(1024, 1024))
    check_wire(wire, result)
    record = only_record(emulator, "edits")
    check_edit_record(
        record,
        {
            "prompt": "add a small red hat",
            "model": "gpt-image-2",
            "n": "1",
            "size": "1024x1024",
            "quality": "low",
        },
    )
    assert record.headers["content-type"].startswith("multipart/form-data")
    assert list(record.files) == ["image"]
    (part,) = record.files["image"]
    assert part["sha256"] == hashlib.sha256(source).hexdigest()
    assert part["size"] == len(source)
    assert part["content_type"] == "image/png"
    assert part["filename"].endswith(".png")
    assert result.params["image_sha256"] == [part["sha256"]]
    assert result.usage.image_input_tokens > 0
    assert result.cost_usd == cost_usd(result.usage, "gpt-image-2")


def test_edit_size_auto_keeps_the_input_size(client: CometAPIClient, emulator: Emulator) -> None:
    result = client.edit("make it night", encoded((1536, 1024)), quality="low")
    assert (result.images[0].width, result.images[0].height) == (1536, 1024)
    assert only_record(emulator, "edits").params["size"] == "auto"


def test_edit_three_images_from_bytes_path_and_file_object(
    client: CometAPIClient, emulator: Emulator, wire: WireLog, tmp_path: Path
) -> None:
    first = encoded((1024, 1024), (200, 30, 30))
    second = encoded((640, 480), (30, 200, 30), fmt="JPEG")
    third = encoded((512, 512), (30, 30, 200), fmt="WEBP")
    path = tmp_path / "second-photo.jpg"
    path.write_bytes(second)
    (tmp_path / "third.webp").write_bytes(third)
    with open(tmp_path / "third.webp", "rb") as fh:
        result = client.edit(
            "put all three objects on one table", [first, path, fh], size="1024x1024", quality="low"
        )
    check_result(result, model="gpt-image-2", size=(1024, 1024))
    check_wire(wire, result)
    record = only_record(emulator, "edits")
    check_edit_record(
        record,
        {
            "prompt": "put all three objects on one table",
            "model": "gpt-image-2",
            "n": "1",
            "size": "1024x1024",
            "quality": "low",
        },
    )
    assert list(record.files) == ["image[]"], "several images go as repeated image[] parts"
    parts = record.files["image[]"]
    assert [p["sha256"] for p in parts] == [
        hashlib.sha256(b).hexdigest() for b in (first, second, third)
    ]
    assert [p["content_type"] for p in parts] == ["image/png", "image/jpeg", "image/webp"]
    assert parts[1]["filename"] == "second-photo.jpg"
    assert parts[2]["filename"] == "third.webp"
    assert result.params["image_sha256"] == [p["sha256"] for p in parts]
    one_image = client.edit("one", first, size="1024x1024", quality="low")
    assert result.usage.image_input_tokens == 3 * one_image.usage.image_input_tokens


def test_edit_one_image_from_path_and_from_file_object(
    client: CometAPIClient, emulator: Emulator, tmp_path: Path
) -> None:
    source = encoded((1024, 1024), (10, 120, 10))
    path = tmp_path / "input.png"
    path.write_bytes(source)
    from_path = client.edit("add snow", path, size="1024x1024", quality="low")
    from_str = client.edit("add snow", str(path), size="1024x1024", quality="low")
    with path.open("rb") as fh:
        from_file = client.edit("add snow", fh, size="1024x1024", quality="low")
    records = emulator.requests
    assert len(records) == 3
    for record in records:
        assert record.status == 200
        (part,) = record.files["image"]
        assert part["sha256"] == hashlib.sha256(source).hexdigest()
        assert part["filename"] == "input.png"
    assert from_path.images[0].sha256 == from_str.images[0].sha256 == from_file.images[0].sha256


def test_edit_with_mask_sends_it_and_only_the_masked_area_changes(
    client: CometAPIClient, emulator: Emulator, wire: WireLog
) -> None:
    source = encoded((1024, 1024), (20, 140, 220))
    mask = rgba_mask((1024, 1024))
    result = client.edit(
        "a goldfish bowl", source, mask=mask, size="1024x1024", quality="low", output_format="png"
    )
    check_result(result, model="gpt-image-2", size=(1024, 1024))
    check_wire(wire, result)
    record = only_record(emulator, "edits")
    validate_against_spec(multipart_instance(record.params, record.files), "CreateImageEditRequest")
    (mask_part,) = record.files["mask"]
    assert mask_part["sha256"] == hashlib.sha256(mask).hexdigest()
    assert mask_part["content_type"] == "image/png"
    assert result.params["mask_sha256"] == mask_part["sha256"]
    out = Image.open(io.BytesIO(result.images[0].data)).convert("RGB")
    assert out.getpixel((1000, 1000)) == (20, 140, 220), "outside the mask: untouched"
    assert out.getpixel((600, 700)) != (20, 140, 220), "inside the mask: edited"


def test_edit_every_parameter(client: CometAPIClient, emulator: Emulator, wire: WireLog) -> None:
    result = client.edit(
        "turn it into a watercolour",
        [encoded((1024, 1024)), encoded((1024, 1024), (250, 250, 0))],
        n=2,
        size="1024x640",
        quality="low",
        background="transparent",
        output_format="webp",
        output_compression=60,
        moderation="low",
        user="editor-9",
    )
    check_result(result, model="gpt-image-2", size=(1024, 640), fmt="webp", n=2)
    check_wire(wire, result)
    for image in result.images:
        assert has_transparent_pixels(Image.open(io.BytesIO(image.data)))
    check_edit_record(
        only_record(emulator, "edits"),
        {
            "prompt": "turn it into a watercolour",
            "model": "gpt-image-2",
            "n": "2",
            "size": "1024x640",
            "quality": "low",
            "background": "transparent",
            "output_format": "webp",
            "output_compression": "60",
            "moderation": "low",
            "user": "editor-9",
        },
    )
    assert emulator.billed_images == 2


@pytest.mark.parametrize("fidelity", ["high", "low"])
def test_edit_input_fidelity_on_gpt_image_1_5(
    client: CometAPIClient, emulator: Emulator, wire: WireLog, fidelity: str
) -> None:
    result = client.edit(
        "keep the face, change the shirt",
        encoded((1024, 1536)),
        model="gpt-image-1.5",
        size="1024x1536",
        quality="low",
        input_fidelity=fidelity,
        output_format="jpeg",
    )
    check_result(result, model="gpt-image-1.5", size=(1024, 1536), fmt="jpeg")
    check_wire(wire, result)
    record = only_record(emulator, "edits")
    assert record.params["input_fidelity"] == fidelity
    assert record.params["model"] == "gpt-image-1.5"
    validate_against_spec(multipart_instance(record.params, record.files), "CreateImageEditRequest")
    assert result.params["input_fidelity"] == fidelity


def test_edit_without_input_fidelity_does_not_send_it(
    client: CometAPIClient, emulator: Emulator
) -> None:
    client.edit("x", encoded(), size="1024x1024", quality="low")
    assert "input_fidelity" not in only_record(emulator, "edits").params


def test_edit_price_override_prices_image_input(emulator: Emulator, api_key: str) -> None:
    custom = ModelPrice(text_input=0.0, image_input=1_000_000.0, image_output=0.0)
    with CometAPIClient(
        api_key, base_url=emulator.base_url, prices={"gpt-image-2": custom}
    ) as client:
        result = client.edit("x", [encoded(), encoded()], size="1024x1024", quality="low")
    assert result.usage.image_input_tokens > 0
    assert result.cost_usd == float(result.usage.image_input_tokens)


def test_unset_options_are_not_sent(client: CometAPIClient, emulator: Emulator) -> None:
    client.generate(PROMPT)
    record = only_record(emulator, "generations")
    assert record.params == {"prompt": PROMPT, "model": "gpt-image-2", "n": 1, "size": "auto"}
    validate_against_spec(record.params, "CreateImageRequest")
