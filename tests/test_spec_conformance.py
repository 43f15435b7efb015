"""The emulator's requests and responses checked against OpenAI's Images API spec (tests/spec/)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import httpx
import openai
import pytest
from fixtures_emulator import TEST_API_KEY
from jsonschema import Draft202012Validator
from PIL import Image, ImageDraw
from spec_validation import (
    SHARED_SPEC_PATH,
    SPEC_PATH,
    load_spec,
    multipart_instance,
    spec_errors,
    validate_against_spec,
)

from prefect_cometapi.emulator import Emulator

STANDARD_SIZES = {"1024x1024", "1536x1024", "1024x1536"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

GENERATIONS: list[dict[str, Any]] = [
    {"model": "gpt-image-2", "prompt": "a fox"},
    {"model": "gpt-image-2", "prompt": "a fox", "size": "1536x1024", "quality": "low", "n": 2},
    {"model": "gpt-image-2", "prompt": "a fox", "size": "1024x1536", "output_format": "webp",
     "output_compression": 70, "background": "transparent", "moderation": "low"},
    {"model": "gpt-image-2", "prompt": "a fox", "size": "2048x1152", "output_format": "jpeg",
     "quality": "high", "background": "opaque", "user": "user-1"},
    {"model": "gpt-image-1.5", "prompt": "a fox", "size": "auto", "quality": "medium"},
    {"model": "gpt-image-2-2026-04-21", "prompt": "a fox", "size": "3840x2160", "quality": "low"},
]  # fmt: skip


def png(size=(1024, 1024), hole=None) -> bytes:
    img = Image.new("RGBA", size, (30, 140, 90, 255))
    if hole:
        ImageDraw.Draw(img).rectangle(hole, fill=(0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def http(emulator: Emulator):
    headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=30) as client:
        yield client


def check_response(body: dict[str, Any]) -> None:
    validate_against_spec(body, "ImagesResponse")
    if body["size"] in STANDARD_SIZES:
        validate_against_spec(body, "ImagesResponse", strict_size=True)


def test_repo_spec_is_the_shared_spec_unchanged() -> None:
    """The copy is the shared original: its text matches the sha256 recorded when it was copied
    (and the original itself, where the workspace has it beside the clone)."""
    lines = SPEC_PATH.read_text().splitlines()
    recorded = [ln.rsplit(" ", 1)[1] for ln in lines if ln.startswith("# sha256 of the copied")]
    ours = [ln for ln in lines if not ln.startswith("#")]
    assert recorded == [hashlib.sha256("\n".join(ours).encode()).hexdigest()]
    if SHARED_SPEC_PATH.exists():
        assert ours == SHARED_SPEC_PATH.read_text().splitlines()
    assert load_spec()["info"]["license"]["identifier"] == "MIT"


def test_helper_rejects_what_the_spec_forbids() -> None:
    assert spec_errors({"prompt": "x", "n": 0}, "CreateImageRequest") == [
        "n: 0 is less than the minimum of 1"
    ]
    assert spec_errors({"n": 1}, "CreateImageRequest")  # prompt is required
    assert spec_errors({"prompt": "x", "quality": "ultra"}, "CreateImageRequest")
    assert not spec_errors({"prompt": "x", "quality": None}, "CreateImageRequest")  # nullable
    assert spec_errors({"data": []}, "ImagesResponse")  # created is required
    assert spec_errors({"created": 1, "size": "2048x1152"}, "ImagesResponse", strict_size=True)
    assert not spec_errors({"created": 1, "size": "2048x1152"}, "ImagesResponse")
    assert spec_errors({"created": 1, "size": "big"}, "ImagesResponse")
    assert spec_errors({"created": 1, "usage": {"input_tokens": 1}}, "ImagesResponse")
    with pytest.raises(AssertionError, match="not a valid CreateImageRequest"):
        validate_against_spec({"prompt": 3}, "CreateImageRequest")
    with pytest.raises(KeyError):
        validate_against_spec({}, "NoSuchSchema")


def test_multipart_instance_conversion() -> None:
    inst = multipart_instance(
        {"prompt": "x", "n": "2", "output_compression": "50", "stream": "false", "size": "auto"},
        {"image[]": [{}, {}], "mask": [{}]},
    )
    assert inst["n"] == 2 and inst["output_compression"] == 50 and inst["stream"] is False
    assert isinstance(inst["image"], list) and len(inst["image"]) == 2
    assert isinstance(inst["mask"], str)
    validate_against_spec(inst, "CreateImageEditRequest")
    assert spec_errors(
        multipart_instance({"prompt": "x", "n": "0"}, {"image": [{}]}), "CreateImageEditRequest"
    )
    assert spec_errors(multipart_instance({"prompt": "x"}, {}), "CreateImageEditRequest")


@pytest.mark.parametrize(
    "body", GENERATIONS, ids=lambda b: f"{b['model']}-{b.get('size', 'default')}"
)
def test_generation_request_and_response_follow_the_spec(
    http: httpx.Client, emulator: Emulator, body: dict[str, Any]
) -> None:
    resp = http.post("/images/generations", json=body)
    assert resp.status_code == 200, resp.text
    check_response(resp.json())
    (record,) = emulator.requests
    validate_against_spec(record.params, "CreateImageRequest")


def test_sdk_traffic_follows_the_spec(emulator: Emulator) -> None:
    client = openai.OpenAI(api_key=TEST_API_KEY, base_url=emulator.base_url, max_retries=0)
    client.images.generate(model="gpt-image-2", prompt="a", size="1536x1024", quality="low", n=2)
    client.images.edit(model="gpt-image-2", image=("a.png", png(), "image/png"), prompt="b")
    client.images.edit(
        model="gpt-image-1.5",
        image=[(f"{i}.png", png(), "image/png") for i in range(3)],
        mask=("m.png", png(hole=(0, 0, 200, 200)), "image/png"),
        prompt="c",
        input_fidelity="high",
        output_format="webp",
        output_compression=80,
        n=2,
        size="1024x1536",
    )
    generation, single, multi = emulator.requests
    validate_against_spec(generation.params, "CreateImageRequest")
    for record in (single, multi):
        validate_against_spec(
            multipart_instance(record.params, record.files), "CreateImageEditRequest"
        )
    assert multipart_instance(multi.params, multi.files)["n"] == 2


def test_edit_responses_follow_the_spec(http: httpx.Client, emulator: Emulator) -> None:
    files = [("image[]", (f"{i}.png", png(), "image/png")) for i in range(2)]
    files.append(("mask", ("m.png", png(hole=(10, 10, 300, 300)), "image/png")))
    data = {"model": "gpt-image-2", "prompt": "x", "n": "2", "background": "transparent"}
    resp = http.post("/images/edits", data=data, files=files)
    assert resp.status_code == 200, resp.text
    check_response(resp.json())
    (record,) = emulator.requests
    validate_against_spec(multipart_instance(record.params, record.files), "CreateImageEditRequest")


@pytest.mark.parametrize(
    "fault", ["429", "insufficient_quota", "500", "500_invalid_request", "503", "moderation", "401"]
)
def test_error_bodies_have_openais_shape(http: httpx.Client, fault: str) -> None:
    resp = http.post(
        "/images/generations",
        json={"model": "gpt-image-2", "prompt": "x"},
        headers={"X-Emulator-Fault": fault},
    )
    assert resp.status_code >= 400
    assert not list(Draft202012Validator(ERROR_SCHEMA).iter_errors(resp.json()))


def test_validation_error_bodies_have_openais_shape(http: httpx.Client) -> None:
    for body in (
        {"model": "gpt-image-2", "prompt": "x", "n": 99},
        {"model": "nope", "prompt": "x"},
    ):
        resp = http.post("/images/generations", json=body)
        assert resp.status_code in (400, 404)
        assert not list(Draft202012Validator(ERROR_SCHEMA).iter_errors(resp.json()))
