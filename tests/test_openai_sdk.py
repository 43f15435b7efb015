"""The official openai SDK, unchanged, against the emulator (base_url) over real sockets."""

from __future__ import annotations

import asyncio
import base64
import io

import openai
import pytest
from fixtures_emulator import TEST_API_KEY
from PIL import Image, ImageDraw

from prefect_cometapi.billing.prices import estimate_output_tokens
from prefect_cometapi.emulator import Emulator


@pytest.fixture
def client(emulator: Emulator) -> openai.OpenAI:
    return openai.OpenAI(api_key=TEST_API_KEY, base_url=emulator.base_url, max_retries=0)


def png(size=(1024, 1024), colour=(90, 120, 200, 255), hole=None) -> bytes:
    img = Image.new("RGBA", size, colour)
    if hole:
        ImageDraw.Draw(img).rectangle(hole, fill=(0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate(client: openai.OpenAI, emulator: Emulator) -> None:
    result = client.images.generate(
        model="gpt-image-2", prompt="a lighthouse at dawn", size="1536x1024", quality="low", n=2
    )
    assert len(result.data) == 2
    images = [decode(d.b64_json) for d in result.data]
    assert all(img.size == (1536, 1024) and img.format == "PNG" for img in images)
    assert result.data[0].b64_json != result.data[1].b64_json
    assert result.size == "1536x1024" and result.quality == "low"
    assert result.output_format == "png" and result.background == "opaque"
    assert result.usage.output_tokens == 2 * estimate_output_tokens(
        "gpt-image-2", "1536x1024", "low"
    )
    (record,) = emulator.requests
    assert record.params == {
        "model": "gpt-image-2",
        "prompt": "a lighthouse at dawn",
        "size": "1536x1024",
        "quality": "low",
        "n": 2,
    }
    assert record.headers["user-agent"].startswith("OpenAI/Python")
    assert emulator.billed_images == 2


def test_generate_jpeg_custom_size(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="gpt-image-2",
        prompt="a city at night",
        size="2048x1152",
        output_format="jpeg",
        output_compression=60,
        quality="medium",
    )
    img = decode(result.data[0].b64_json)
    assert (img.format, img.size) == ("JPEG", (2048, 1152))
    assert result.size == "2048x1152"


def test_edit_one_image(client: openai.OpenAI, emulator: Emulator) -> None:
    result = client.images.edit(
        model="gpt-image-2",
        image=("photo.png", png((1024, 1536)), "image/png"),
        prompt="paint it like a watercolour",
    )
    assert decode(result.data[0].b64_json).size == (1024, 1536)
    (record,) = emulator.requests
    assert list(record.files) == ["image"]
    assert record.params["prompt"] == "paint it like a watercolour"


def test_edit_three_images_and_mask(client: openai.OpenAI, emulator: Emulator) -> None:
    images = [(f"in{i}.png", png(colour=(40 * i, 80, 160, 255)), "image/png") for i in range(3)]
    mask = ("mask.png", png(hole=(100, 100, 400, 400)), "image/png")
    result = client.images.edit(
        model="gpt-image-2",
        image=images,
        mask=mask,
        prompt="put a red balloon in the corner",
        size="1536x1024",
        n=2,
    )
    assert len(result.data) == 2
    assert all(decode(d.b64_json).size == (1536, 1024) for d in result.data)
    assert result.usage.input_tokens_details.image_tokens == 3 * 768
    (record,) = emulator.requests
    assert len(record.files["image[]"]) == 3 and len(record.files["mask"]) == 1
    assert record.params["n"] == "2" and record.params["size"] == "1536x1024"
    assert emulator.billed_images == 2


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(model="gpt-image-2", prompt="x", size="1920x1080")
    assert bad.value.param == "size" and bad.value.code == "invalid_value"
    assert bad.value.request_id.startswith("req_")

    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="dall-e-3", prompt="x")
    assert missing.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as blocked:
        client.images.generate(model="gpt-image-2", prompt="[[fault:moderation]] x")
    assert blocked.value.code == "moderation_blocked"

    with pytest.raises(openai.RateLimitError) as quota:
        client.images.generate(model="gpt-image-2", prompt="[[fault:insufficient_quota]] x")
    assert quota.value.code == "insufficient_quota"

    with pytest.raises(openai.APIConnectionError):
        client.images.generate(model="gpt-image-2", prompt="[[fault:drop]] x")

    wrong = openai.OpenAI(api_key="sk-wrong-0000", base_url=client.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.images.generate(model="gpt-image-2", prompt="x")
    assert auth.value.code == "invalid_api_key"


def test_sdk_retries_on_429_honouring_retry_after(emulator: Emulator) -> None:
    emulator.configure(retry_after_s=0.2)
    emulator.script("429", "503")
    client = openai.OpenAI(api_key=TEST_API_KEY, base_url=emulator.base_url, max_retries=2)
    result = client.images.generate(model="gpt-image-2", prompt="x", size="1024x640")
    assert len(result.data) == 1
    records = emulator.requests
    assert [r.status for r in records] == [429, 503, 200]
    assert [r.headers.get("x-stainless-retry-count") for r in records] == ["0", "1", "2"]
    assert records[1].started_at - records[0].finished_at >= 0.2
    assert emulator.billed_images == 1


def test_async_client_generates_concurrently(emulator: Emulator) -> None:
    emulator.configure(latency_s=0.3)

    async def run() -> list:
        async with openai.AsyncOpenAI(
            api_key=TEST_API_KEY, base_url=emulator.base_url, max_retries=0
        ) as client:
            return await asyncio.gather(
                *(
                    client.images.generate(model="gpt-image-2", prompt=f"p{i}", size="1024x640")
                    for i in range(4)
                )
            )

    results = asyncio.run(run())
    assert len(results) == 4
    assert emulator.peak_in_flight == 4
