"""AsyncCometAPIClient against the emulator: the same parameters and checks as the sync client.

Each test drives the coroutine with ``asyncio.run`` (no async pytest plugin needed).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image
from spec_validation import multipart_instance, validate_against_spec
from test_client import (
    PROMPT,
    WireLog,
    assert_format,
    check_edit_record,
    check_generation_record,
    check_result,
    check_usage_matches_wire,
    encoded,
    has_transparent_pixels,
    only_record,
    rgba_mask,
)

from prefect_cometapi import AsyncCometAPIClient, CometAPIClient, ImageResult, ModelPrice
from prefect_cometapi.billing.prices import cost_usd
from prefect_cometapi.emulator import Emulator

T = TypeVar("T")


def run_with_client(
    emulator: Emulator,
    api_key: str,
    body: Callable[[AsyncCometAPIClient], Awaitable[T]],
    wire: WireLog | None = None,
    **options: Any,
) -> T:
    """Open an async client on the emulator, run ``body`` with it, close it."""

    async def main() -> T:
        hooks = {"response": [wire.ahook]} if wire is not None else {}
        async with httpx.AsyncClient(timeout=60, event_hooks=hooks) as http:
            options.setdefault("max_retries", 0)
            async with AsyncCometAPIClient(
                api_key, base_url=emulator.base_url, http_client=http, **options
            ) as client:
                return await body(client)

    return asyncio.run(main())


def check_wire(wire: WireLog, result: ImageResult) -> dict[str, Any]:
    (response,) = wire.responses
    body = response.json()
    validate_against_spec(body, "ImagesResponse")
    assert result.request_id == response.headers["x-request-id"]
    check_usage_matches_wire(result, body)
    return body


def test_generate_every_parameter(emulator: Emulator, api_key: str) -> None:
    wire = WireLog()
    result = run_with_client(
        emulator,
        api_key,
        lambda c: c.generate(
            PROMPT,
            model="gpt-image-2",
            n=2,
            size="1536x1024",
            quality="medium",
            background="opaque",
            output_format="jpeg",
            output_compression=80,
            moderation="low",
            user="end-user-42",
        ),
        wire,
    )
    check_result(result, model="gpt-image-2", size=(1536, 1024), fmt="jpeg", n=2)
    check_wire(wire, result)
    check_generation_record(
        only_record(emulator, "generations"),
        {
            "prompt": PROMPT,
            "model": "gpt-image-2",
            "n": 2,
            "size": "1536x1024",
            "quality": "medium",
            "background": "opaque",
            "output_format": "jpeg",
            "output_compression": 80,
            "moderation": "low",
            "user": "end-user-42",
        },
    )
    assert emulator.billed_images == 2


def test_generate_defaults(emulator: Emulator, api_key: str) -> None:
    result = run_with_client(emulator, api_key, lambda c: c.generate(PROMPT))
    check_result(result, model="gpt-image-2", size=(1024, 1024))
    record = only_record(emulator, "generations")
    assert {k: record.params[k] for k in ("prompt", "model", "n")} == {
        "prompt": PROMPT,
        "model": "gpt-image-2",
        "n": 1,
    }
    validate_against_spec(record.params, "CreateImageRequest")


def test_defaults_send_the_same_request_as_the_sync_client(
    emulator: Emulator, api_key: str
) -> None:
    """The twins promise the same behaviour: the same call must send the same body and give the
    same ``params`` (tasks key caches and records on them)."""
    source = encoded((1024, 1024))
    with CometAPIClient(api_key, base_url=emulator.base_url, max_retries=0) as sync_client:
        sync_gen = sync_client.generate(PROMPT)
        sync_edit = sync_client.edit(PROMPT, source)
    async_gen = run_with_client(emulator, api_key, lambda c: c.generate(PROMPT))
    async_edit = run_with_client(emulator, api_key, lambda c: c.edit(PROMPT, source))
    sync_gen_rec, sync_edit_rec, async_gen_rec, async_edit_rec = emulator.requests
    assert async_gen_rec.params == sync_gen_rec.params
    assert async_edit_rec.params == sync_edit_rec.params
    assert async_gen.params == sync_gen.params
    assert async_edit.params == sync_edit.params


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("gpt-image-2-2026-04-21", "2048x1152"),
        ("gpt-image-2", "1024x640"),
        ("gpt-image-1.5", "1536x1024"),
        ("gpt-image-1.5", "1024x1536"),
    ],
)
def test_models_and_sizes(emulator: Emulator, api_key: str, model: str, size: str) -> None:
    wire = WireLog()
    result = run_with_client(
        emulator, api_key, lambda c: c.generate(PROMPT, model=model, size=size, quality="low"), wire
    )
    w, h = (int(v) for v in size.split("x"))
    check_result(result, model=model, size=(w, h))
    assert check_wire(wire, result)["size"] == size
    record = only_record(emulator, "generations")
    assert (record.params["model"], record.params["size"]) == (model, size)
    validate_against_spec(record.params, "CreateImageRequest")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_formats(emulator: Emulator, api_key: str, fmt: str) -> None:
    result = run_with_client(
        emulator,
        api_key,
        lambda c: c.generate(PROMPT, size="1024x640", quality="low", output_format=fmt),
    )
    check_result(result, model="gpt-image-2", size=(1024, 640), fmt=fmt)
    assert only_record(emulator, "generations").params["output_format"] == fmt


@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
def test_quality(emulator: Emulator, api_key: str, quality: str) -> None:
    result = run_with_client(
        emulator, api_key, lambda c: c.generate(PROMPT, size="1024x640", quality=quality)
    )
    check_result(result, model="gpt-image-2", size=(1024, 640))
    assert only_record(emulator, "generations").params["quality"] == quality


def test_transparent_webp_has_alpha(emulator: Emulator, api_key: str) -> None:
    result = run_with_client(
        emulator,
        api_key,
        lambda c: c.generate(
            PROMPT, size="1024x1024", quality="low", background="transparent", output_format="webp"
        ),
    )
    image = assert_format(result.images[0].data, "webp")
    assert has_transparent_pixels(image)


def test_output_compression(emulator: Emulator, api_key: str) -> None:
    async def both(c: AsyncCometAPIClient) -> tuple[ImageResult, ImageResult]:
        opts = {"size": "1024x640", "quality": "low", "output_format": "webp"}
        return (
            await c.generate(PROMPT, output_compression=5, **opts),
            await c.generate(PROMPT, output_compression=95, **opts),
        )

    strong, light = run_with_client(emulator, api_key, both)
    assert len(strong.images[0].data) < len(light.images[0].data)
    assert [r.params["output_compression"] for r in emulator.requests] == [5, 95]


def test_price_override(emulator: Emulator, api_key: str) -> None:
    custom = ModelPrice(text_input=1.0, image_input=1.0, image_output=1000.0)
    default = run_with_client(
        emulator, api_key, lambda c: c.generate(PROMPT, size="1024x640", quality="low")
    )
    priced = run_with_client(
        emulator,
        api_key,
        lambda c: c.generate(PROMPT, size="1024x640", quality="low"),
        prices={"gpt-image-2": custom},
    )
    assert priced.cost_usd == cost_usd(priced.usage, "gpt-image-2", {"gpt-image-2": custom})
    assert priced.cost_usd != default.cost_usd


def test_edit_one_image(emulator: Emulator, api_key: str) -> None:
    wire = WireLog()
    source = encoded((1024, 1024))
    result = run_with_client(
        emulator,
        api_key,
        lambda c: c.edit(
            "add a hat", source, size="1024x1024", quality="low", moderation="low", user="u1"
        ),
        wire,
    )
    check_result(result, model="gpt-image-2", size=(1024, 1024))
    check_wire(wire, result)
    record = only_record(emulator, "edits")
    check_edit_record(
        record,
        {
            "prompt": "add a hat",
            "model": "gpt-image-2",
            "n": "1",
            "size": "1024x1024",
            "quality": "low",
            "moderation": "low",
            "user": "u1",
        },
    )
    (part,) = record.files["image"]
    assert part["sha256"] == hashlib.sha256(source).hexdigest()


def test_edit_three_images_bytes_path_file_and_mask(
    emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    first = encoded((1024, 1024), (200, 30, 30))
    second = encoded((800, 600), (30, 200, 30), fmt="JPEG")
    third = encoded((512, 512), (30, 30, 200), fmt="WEBP")
    (tmp_path / "b.jpg").write_bytes(second)
    (tmp_path / "c.webp").write_bytes(third)
    mask = rgba_mask((1024, 1024))
    wire = WireLog()
    with open(tmp_path / "c.webp", "rb") as fh:
        result = run_with_client(
            emulator,
            api_key,
            lambda c: c.edit(
                "one table",
                [first, tmp_path / "b.jpg", fh],
                mask=mask,
                n=2,
                size="1024x1024",
                quality="low",
                background="transparent",
                output_format="png",
            ),
            wire,
        )
    check_result(result, model="gpt-image-2", size=(1024, 1024), n=2)
    check_wire(wire, result)
    for image in result.images:
        assert has_transparent_pixels(Image.open(io.BytesIO(image.data)))
    record = only_record(emulator, "edits")
    validate_against_spec(multipart_instance(record.params, record.files), "CreateImageEditRequest")
    assert sorted(record.files) == ["image[]", "mask"]
    assert [p["sha256"] for p in record.files["image[]"]] == [
        hashlib.sha256(b).hexdigest() for b in (first, second, third)
    ]
    assert record.files["mask"][0]["sha256"] == hashlib.sha256(mask).hexdigest()


def test_edit_input_fidelity_on_gpt_image_1_5(emulator: Emulator, api_key: str) -> None:
    result = run_with_client(
        emulator,
        api_key,
        lambda c: c.edit(
            "same face",
            encoded((1024, 1024)),
            model="gpt-image-1.5",
            size="1024x1024",
            quality="low",
            input_fidelity="high",
        ),
    )
    check_result(result, model="gpt-image-1.5", size=(1024, 1024))
    record = only_record(emulator, "edits")
    assert record.params["input_fidelity"] == "high"
    validate_against_spec(multipart_instance(record.params, record.files), "CreateImageEditRequest")


def test_unknown_option_is_a_type_error_and_sends_nothing(emulator: Emulator, api_key: str) -> None:
    with pytest.raises(TypeError, match="input_fidelity"):
        run_with_client(emulator, api_key, lambda c: c.generate(PROMPT, input_fidelity="high"))
    with pytest.raises(TypeError, match="colour"):
        run_with_client(emulator, api_key, lambda c: c.edit(PROMPT, encoded(), colour="red"))
    assert emulator.requests == []


def test_requests_run_concurrently(emulator: Emulator, api_key: str) -> None:
    emulator.configure(latency_s=0.3)

    async def three(c: AsyncCometAPIClient) -> list[ImageResult]:
        return list(
            await asyncio.gather(
                *(c.generate(f"{PROMPT} #{i}", size="1024x640", quality="low") for i in range(3))
            )
        )

    results = run_with_client(emulator, api_key, three)
    assert len({r.images[0].sha256 for r in results}) == 3
    assert emulator.peak_in_flight >= 2
    assert emulator.billed_images == 3
