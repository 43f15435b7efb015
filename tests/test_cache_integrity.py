"""The image cache is not trusted on read: a tampered record is a cache miss, not a failure."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prefect import flow

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.caching.serializer import IMAGE_RESULT_SERIALIZER
from prefect_cometapi.tasks import generate_image


def test_a_record_whose_bytes_do_not_match_their_sha256_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect_cometapi.models import GeneratedImage, ImageResult

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    data = buf.getvalue()
    image = GeneratedImage(
        data=data, format="png", width=8, height=8, sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2", prompt="p",
    )  # fmt: skip
    result = ImageResult(images=[image], model="gpt-image-2", params={}, usage=None, cost_usd=None)
    assert IMAGE_RESULT_SERIALIZER.loads(IMAGE_RESULT_SERIALIZER.dumps(result)) == result
    swapped = dataclasses.replace(result, images=[dataclasses.replace(image, data=data + b"x")])
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        IMAGE_RESULT_SERIALIZER.loads(IMAGE_RESULT_SERIALIZER.dumps(swapped))
    with pytest.raises(ValueError, match="not an ImageResult"):
        IMAGE_RESULT_SERIALIZER.loads(base64.b64encode(pickle.dumps({"images": []})))
    assert "Ignoring a cached image result" in caplog.text


def test_a_tampered_cache_entry_is_a_miss_and_is_replaced(emulator: Any, api_key: str) -> None:
    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    prompt = f"a tampered cache entry {uuid.uuid4().hex[:8]}"

    @flow
    def once() -> Any:
        return generate_image(prompt, credentials, size="1024x1024", quality="low")

    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    started = time.time()
    once()
    assert len(emulator.requests) == 1
    records = [
        path
        for path in storage.iterdir()
        if path.is_file() and path.stat().st_mtime >= started - 1
        and '"cometapi-pickle"' in path.read_text(errors="replace")
    ]  # fmt: skip
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    cached = IMAGE_RESULT_SERIALIZER.loads(record["result"].encode())
    image = cached.images[0]
    tampered = dataclasses.replace(cached, images=[dataclasses.replace(image, data=b"not it")])
    record["result"] = IMAGE_RESULT_SERIALIZER.dumps(tampered).decode()
    records[0].write_text(json.dumps(record))

    again = once()
    assert len(emulator.requests) == 2, "a tampered entry was served (or failed the run)"
    assert hashlib.sha256(again.images[0].data).hexdigest() == again.images[0].sha256
    replaced = IMAGE_RESULT_SERIALIZER.loads(json.loads(records[0].read_text())["result"].encode())
    assert replaced.images[0].data == again.images[0].data
