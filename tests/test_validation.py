"""Every bad input of issue 2 point 4 is refused before a single byte reaches the API.

Each case runs through the sync and the async client pointed at the emulator; the error must be
typed, name the parameter and the rule, and the emulator's request log must stay empty.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_client import encoded, rgba_mask

from prefect_cometapi import (
    AsyncCometAPIClient,
    CometAPIClient,
    CometAPICredentials,
    MissingAPIKeyError,
    ValidationError,
)
from prefect_cometapi.client.rules import MAX_IMAGE_BYTES, MAX_MASK_BYTES, MAX_PROMPT_CHARS
from prefect_cometapi.emulator import Emulator

PROMPT = "a lighthouse at dawn"

# (kwargs for generate, the parameter the error must name, a regex the message must match)
BAD_GENERATIONS: list[tuple[str, dict[str, Any], str, str]] = [
    ("empty-prompt", {"prompt": ""}, "prompt", "non-empty"),
    ("blank-prompt", {"prompt": "   "}, "prompt", "non-empty"),
    ("long-prompt", {"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "32,000"),
    ("n-0", {"n": 0}, "n", "1 to 10"),
    ("n-11", {"n": 11}, "n", "1 to 10"),
    ("size-not-16", {"size": "1000x1000"}, "size", "divisible by 16"),
    ("size-edge", {"size": "4000x2000"}, "size", "3840"),
    ("size-aspect", {"size": "3840x1024"}, "size", "aspect"),
    ("size-few-pixels", {"size": "1008x640"}, "size", "655,360"),
    ("size-many-pixels", {"size": "3840x2176"}, "size", "8,294,400"),
    ("size-shape", {"size": "large"}, "size", "WIDTHxHEIGHT"),
    ("legacy-size", {"model": "gpt-image-1.5", "size": "2048x2048"}, "size", "gpt-image-1.5"),
    ("legacy-custom", {"model": "gpt-image-1.5", "size": "1024x640"}, "size", "1536x1024"),
    ("quality", {"quality": "ultra"}, "quality", "low, medium, high, auto"),
    ("format", {"output_format": "gif"}, "output_format", "png, jpeg, webp"),
    ("background", {"background": "none"}, "background", "transparent, opaque, auto"),
    ("moderation", {"moderation": "high"}, "moderation", "low, auto"),
    (
        "compression-101",
        {"output_format": "jpeg", "output_compression": 101},
        "output_compression",
        "0 to 100",
    ),
    (
        "compression-neg",
        {"output_format": "webp", "output_compression": -1},
        "output_compression",
        "0 to 100",
    ),
    (
        "compression-png",
        {"output_format": "png", "output_compression": 50},
        "output_compression",
        "png",
    ),
    ("compression-default-png", {"output_compression": 50}, "output_compression", "png"),
    (
        "transparent-jpeg",
        {"background": "transparent", "output_format": "jpeg"},
        "background",
        "jpeg",
    ),
]


def _run(kind: str, emulator: Emulator, api_key: str, call: str, *args: Any, **kw: Any) -> Any:
    """Call ``generate``/``edit`` on a sync or async client (max_retries high: nothing may go)."""
    if kind == "sync":
        with CometAPIClient(api_key, base_url=emulator.base_url, max_retries=3) as client:
            return getattr(client, call)(*args, **kw)

    async def main() -> Any:
        async with AsyncCometAPIClient(
            api_key, base_url=emulator.base_url, max_retries=3
        ) as client:
            return await getattr(client, call)(*args, **kw)

    return asyncio.run(main())


def _assert_names(err: ValidationError, param: str, rule: str) -> None:
    assert err.param == param
    assert isinstance(err, ValueError)
    text = str(err)
    assert repr(param) in text, text
    assert re.search(re.escape(rule), text), f"{rule!r} not in {text!r}"
    assert "No request was sent" in text


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize(
    ("options", "param", "rule"),
    [case[1:] for case in BAD_GENERATIONS],
    ids=[case[0] for case in BAD_GENERATIONS],
)
def test_bad_generation_is_refused_before_sending(
    kind: str, emulator: Emulator, api_key: str, options: dict[str, Any], param: str, rule: str
) -> None:
    options = dict(options)
    prompt = options.pop("prompt", PROMPT)
    with pytest.raises(ValidationError) as info:
        _run(kind, emulator, api_key, "generate", prompt, **options)
    _assert_names(info.value, param, rule)
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("options", "param", "rule"),
    [case[1:] for case in BAD_GENERATIONS],
    ids=[case[0] for case in BAD_GENERATIONS],
)
def test_the_same_rules_apply_to_edits(
    kind: str, emulator: Emulator, api_key: str, options: dict[str, Any], param: str, rule: str
) -> None:
    options = dict(options)
    prompt = options.pop("prompt", PROMPT)
    with pytest.raises(ValidationError) as info:
        _run(kind, emulator, api_key, "edit", prompt, encoded(), **options)
    _assert_names(info.value, param, rule)
    assert emulator.requests == []


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), "red").save(buf, "GIF")
    return buf.getvalue()


def _huge(limit: int) -> bytes:
    """``limit`` bytes starting like a PNG: the size rule must fire before any decoding."""
    return b"\x89PNG\r\n\x1a\n" + bytes(limit - 8)


def _rgb_png(size: tuple[int, int] = (1024, 1024)) -> bytes:
    return encoded(size, (0, 0, 0), fmt="PNG", mode="RGB")


def _jpeg(size: tuple[int, int] = (1024, 1024)) -> bytes:
    return encoded(size, (0, 0, 0), fmt="JPEG")


BAD_EDITS: list[tuple[str, Any, dict[str, Any], str, str]] = [
    ("17-images", lambda: [encoded((64, 64))] * 17, {}, "image", "at most 16"),
    ("gif", lambda: _gif(), {}, "image", "PNG, WebP or JPEG"),
    ("gif-among-others", lambda: [encoded(), _gif()], {}, "image[1]", "PNG, WebP or JPEG"),
    ("not-an-image", lambda: b"hello, world", {}, "image", "not a readable image"),
    ("50MB", lambda: _huge(MAX_IMAGE_BYTES), {}, "image", "50 MB"),
    ("50MB-second", lambda: [encoded(), _huge(MAX_IMAGE_BYTES + 1)], {}, "image[1]", "50 MB"),
    ("mask-jpeg", lambda: encoded(), {"mask": _jpeg()}, "mask", "PNG"),
    ("mask-no-alpha", lambda: encoded(), {"mask": _rgb_png()}, "mask", "alpha"),
    ("mask-4MB", lambda: encoded(), {"mask": _huge(MAX_MASK_BYTES)}, "mask", "4 MB"),
    (
        "mask-other-size",
        lambda: encoded((1024, 1024)),
        {"mask": rgba_mask((1024, 1536))},
        "mask",
        "1024x1024",
    ),
    (
        "mask-vs-first-image",
        lambda: [encoded((1536, 1024)), encoded((1024, 1024))],
        {"mask": rgba_mask((1024, 1024))},
        "mask",
        "1536x1024",
    ),
    (
        "input-fidelity-gpt-image-2",
        lambda: encoded(),
        {"input_fidelity": "high"},
        "input_fidelity",
        "gpt-image-2",
    ),
    (
        "input-fidelity-snapshot",
        lambda: encoded(),
        {"input_fidelity": "low", "model": "gpt-image-2-2026-04-21"},
        "input_fidelity",
        "not supported",
    ),
    (
        "input-fidelity-value",
        lambda: encoded(),
        {"input_fidelity": "medium", "model": "gpt-image-1.5", "size": "1024x1024"},
        "input_fidelity",
        "high, low",
    ),
    ("no-images", lambda: [], {}, "image", "at least one"),
]


@pytest.mark.parametrize(
    ("make_image", "options", "param", "rule"),
    [case[1:] for case in BAD_EDITS],
    ids=[case[0] for case in BAD_EDITS],
)
def test_bad_edit_input_is_refused_before_sending(
    kind: str,
    emulator: Emulator,
    api_key: str,
    make_image: Any,
    options: dict[str, Any],
    param: str,
    rule: str,
) -> None:
    with pytest.raises(ValidationError) as info:
        _run(kind, emulator, api_key, "edit", PROMPT, make_image(), **options)
    _assert_names(info.value, param, rule)
    assert emulator.requests == []


def test_50mb_image_path_is_refused_without_reading_it(
    kind: str, emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as fh:  # a sparse file: 50 MB on paper, nothing on disk
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(MAX_IMAGE_BYTES)
    with pytest.raises(ValidationError) as info:
        _run(kind, emulator, api_key, "edit", PROMPT, [encoded(), path])
    _assert_names(info.value, "image[1]", "50 MB")
    assert emulator.requests == []


def test_missing_image_path_is_a_validation_error(
    kind: str, emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as info:
        _run(kind, emulator, api_key, "edit", PROMPT, tmp_path / "nope.png")
    _assert_names(info.value, "image", "could not be read")
    assert emulator.requests == []


def test_text_mode_file_is_refused(
    kind: str, emulator: Emulator, api_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(b"abc")
    with path.open("r", encoding="latin-1") as fh, pytest.raises(ValidationError) as info:
        _run(kind, emulator, api_key, "edit", PROMPT, fh)
    _assert_names(info.value, "image", "binary mode")
    assert emulator.requests == []


def test_exactly_16_images_are_allowed(emulator: Emulator, api_key: str) -> None:
    """The other side of the 17-image rule: 16 go through as 16 ``image[]`` parts."""
    images = [encoded((64, 64), (i * 15, 0, 0)) for i in range(16)]
    with CometAPIClient(api_key, base_url=emulator.base_url, max_retries=0) as client:
        client.edit(PROMPT, images, size="1024x1024", quality="low")
    (record,) = emulator.requests
    assert record.status == 200
    assert len(record.files["image[]"]) == 16


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_missing_api_key(
    kind: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    cls = CometAPIClient if kind == "sync" else AsyncCometAPIClient
    for key in (None, "", "   "):
        with pytest.raises(MissingAPIKeyError, match="COMETAPI_KEY"):
            cls(key, base_url=emulator.base_url)
    block = CometAPICredentials(base_url=emulator.base_url)
    with pytest.raises(MissingAPIKeyError, match="No request was sent"):
        block.get_client() if kind == "sync" else block.get_async_client()
    assert emulator.requests == []


def test_negative_max_retries_is_refused(emulator: Emulator, api_key: str) -> None:
    with pytest.raises(ValidationError) as info:
        CometAPIClient(api_key, base_url=emulator.base_url, max_retries=-1)
    assert info.value.param == "max_retries"
