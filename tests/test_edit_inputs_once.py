"""Edit inputs: read once and sent as hashed (any number of concurrent edits), counted before
they are read, and the request reached through a few of our frames with no callback."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prefect import flow

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.tasks import aedit_image, agenerate_image, edit_image, generate_image

CONCURRENT_EDITS = 16
MAX_OUR_FRAMES = 6


def _creds(emulator: Any, api_key: str) -> CometAPICredentials:
    return CometAPICredentials(api_key=api_key, base_url=emulator.base_url)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (1024, 1024)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def path_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Counter[str]:
    """How many times each file under ``tmp_path`` was opened for reading (every reader opens
    its file with ``Path.open``)."""
    reads: Counter[str] = Counter()
    lock = threading.Lock()
    real_open = Path.open

    def counting(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "r" in mode and tmp_path in Path(os.path.realpath(self)).parents:
            with lock:
                reads[os.path.realpath(self)] += 1
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting)
    return reads


def test_16_concurrent_async_edits_read_each_path_once_and_send_what_was_hashed(
    emulator: Any, api_key: str, tmp_path: Path, path_reads: Counter[str]
) -> None:
    emulator.configure(latency_s=0.5)
    credentials = _creds(emulator, api_key)
    word = uuid.uuid4().hex[:8]
    paths = []
    for i in range(CONCURRENT_EDITS):
        path = tmp_path / f"in-{i}.png"
        path.write_bytes(_png((i * 15, 255 - i * 15, 90)))
        paths.append(path)

    @flow
    async def edits() -> list[Any]:
        return await asyncio.gather(
            *(
                aedit_image(f"edit {word} {i}", str(p), credentials=credentials, quality="low")
                for i, p in enumerate(paths)
            )
        )

    results = asyncio.run(edits())
    assert dict(path_reads) == {os.path.realpath(p): 1 for p in paths}
    by_prompt = {r.params["prompt"]: r for r in emulator.requests}
    assert len(by_prompt) == CONCURRENT_EDITS
    for i, (path, result) in enumerate(zip(paths, results, strict=True)):
        hashed = hashlib.sha256(path.read_bytes()).hexdigest()
        sent = by_prompt[f"edit {word} {i}"].files["image"][0]["sha256"]
        assert sent == hashed == result.params["image_sha256"][0]


def _big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.png"
    with path.open("wb") as handle:  # 20 MB on paper (sparse): what matters is it is not read
        handle.write(_png((1, 2, 3), (64, 64)))
        handle.truncate(20 * 1024 * 1024)
    return path


def test_60_images_are_refused_before_any_is_read(
    emulator: Any, api_key: str, tmp_path: Path, path_reads: Counter[str]
) -> None:
    path = _big_file(tmp_path)
    credentials = _creds(emulator, api_key)

    @flow
    def too_many() -> Any:
        return edit_image("sixty", [str(path)] * 60, credentials=credentials)

    with pytest.raises(ValidationError, match="at most 16 input images"):
        too_many()
    with pytest.raises(ValidationError, match="at most 16 input images"):
        with credentials.get_client() as client:
            client.edit("sixty", [path] * 60)
    assert path_reads == Counter()
    assert emulator.requests == []


def test_every_size_is_checked_before_the_first_image_is_read(
    emulator: Any, api_key: str, tmp_path: Path, path_reads: Counter[str]
) -> None:
    small = tmp_path / "small.png"
    small.write_bytes(_png((9, 9, 9)))
    huge = tmp_path / "huge.png"
    with huge.open("wb") as handle:
        handle.truncate(60 * 1024 * 1024)
    mask = tmp_path / "mask.png"
    with mask.open("wb") as handle:
        handle.truncate(5 * 1024 * 1024)
    credentials = _creds(emulator, api_key)

    @flow
    def last_is_huge(images: list[str], mask: str | None) -> Any:
        return edit_image("sizes", images, mask, credentials=credentials)

    with pytest.raises(ValidationError, match="50 MB|byte limit") as info:
        last_is_huge([str(small)] * 3 + [str(huge)], None)
    assert info.value.param == "images[3]"
    with pytest.raises(ValidationError, match="4 MB|byte limit") as info:
        last_is_huge([str(small)], str(mask))
    assert info.value.param == "mask"
    with credentials.get_client() as client:
        with pytest.raises(ValidationError, match="50 MB") as info:
            client.edit("sizes", [small] * 3 + [huge])
        assert info.value.param == "image[3]"
        with pytest.raises(ValidationError, match="4 MB") as info:
            client.edit("sizes", small, mask=mask)
        assert info.value.param == "mask"
    assert path_reads == Counter()
    assert emulator.requests == []


# ---------------------------------------------------------------- frames to the wire


@pytest.fixture
def frames_at_send(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[inspect.FrameInfo]]]:
    """Our frames on the stack each time a request is handed to httpx's transport."""
    seen: list[list[inspect.FrameInfo]] = []

    def ours() -> list[inspect.FrameInfo]:
        return [
            f
            for f in inspect.stack(context=0)
            if str(f.frame.f_globals.get("__name__", "")).startswith("prefect_cometapi")
            and f.frame.f_code is not ours.__code__
        ]

    sync_send = httpx.HTTPTransport.handle_request
    async_send = httpx.AsyncHTTPTransport.handle_async_request

    def handle(self: Any, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/images/generations", "/images/edits")):
            seen.append(ours())
        return sync_send(self, request)

    async def ahandle(self: Any, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/images/generations", "/images/edits")):
            seen.append(ours())
        return await async_send(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", ahandle)
    yield seen


@pytest.mark.parametrize("kind", ["generate", "agenerate", "edit", "aedit"])
def test_a_task_reaches_the_wire_through_few_of_our_frames_and_no_lambda(
    kind: str,
    emulator: Any,
    api_key: str,
    tmp_path: Path,
    frames_at_send: list[list[inspect.FrameInfo]],
) -> None:
    credentials = _creds(emulator, api_key)
    prompt = f"frames {kind} {uuid.uuid4().hex[:8]}"
    source = tmp_path / "in.png"
    source.write_bytes(_png((200, 10, 10)))

    @flow
    def sync_flow() -> Any:
        if kind == "generate":
            return generate_image(prompt, credentials, quality="low")
        return edit_image(prompt, str(source), credentials=credentials, quality="low")

    @flow
    async def async_flow() -> Any:
        if kind == "agenerate":
            return await agenerate_image(prompt, credentials, quality="low")
        return await aedit_image(prompt, str(source), credentials=credentials, quality="low")

    if kind.startswith("a"):
        asyncio.run(async_flow())
    else:
        sync_flow()
    (frames,) = frames_at_send
    shown = [f"{f.frame.f_globals['__name__']}.{f.function}" for f in frames]
    print(f"{kind}: {len(frames)} of our frames: {' <- '.join(reversed(shown))}")
    assert len(frames) <= MAX_OUR_FRAMES, shown
    assert not [f for f in frames if f.function == "<lambda>"], shown
    assert any(name.startswith("prefect_cometapi.tasks.images.") for name in shown), shown


def test_the_client_takes_every_image_like_form(
    emulator: Any, api_key: str, tmp_path: Path
) -> None:
    """One name for an image input: what the tasks take, the client takes too."""
    credentials = _creds(emulator, api_key)
    path = tmp_path / "like.png"
    path.write_bytes(_png((5, 50, 150)))
    with credentials.get_client() as client:
        made = client.generate("a source", size="1024x1024", quality="low")
        result = client.edit("combine", [made, made.images[0], path, str(path), path.read_bytes()])
    sent = emulator.requests[-1].files["image[]"]
    assert [part["sha256"] for part in sent] == [made.images[0].sha256] * 2 + [
        hashlib.sha256(path.read_bytes()).hexdigest()
    ] * 3
    assert result.images
