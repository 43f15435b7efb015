"""The CometAPI emulator over real sockets with raw httpx: validation, auth, faults, images,
billing, concurrency and the control endpoints."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fixtures_emulator import TEST_API_KEY
from PIL import Image, ImageDraw

from prefect_cometapi.billing.prices import estimate_output_tokens, estimate_text_tokens
from prefect_cometapi.cli import build_parser
from prefect_cometapi.emulator import FAULTS, Emulator, EmulatorConfig

GEN = "/images/generations"
EDIT = "/images/edits"


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=emulator.base_url,
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=30,
    ) as client:
        yield client


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def solid(w: int = 1024, h: int = 1024, colour=(128, 128, 128), fmt: str = "PNG") -> bytes:
    return encode(Image.new("RGB", (w, h), colour), fmt)


def decode_all(body: dict[str, Any]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in body["data"]]


def gen(http: httpx.Client, **params: Any) -> httpx.Response:
    body = {"model": "gpt-image-2", "prompt": "a red fox in the snow", **params}
    return http.post(GEN, json=body)


def edit_parts(n_images: int = 1, field: str = "image", mask: bytes | None = None, **params):
    files = [
        (field, (f"in{i}.png", solid(colour=(40 * i, 90, 160)), "image/png"))
        for i in range(n_images)
    ]
    if mask is not None:
        files.append(("mask", ("mask.png", mask, "image/png")))
    data = {"model": "gpt-image-2", "prompt": "add a small hat", **params}
    return {"data": data, "files": files}


def assert_error(
    resp: httpx.Response, status: int, param: str | None, code: str | None, type_=None
):
    assert resp.status_code == status, resp.text
    assert resp.headers["x-request-id"].startswith("req_")
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["param"] == param
    assert err["code"] == code
    if type_:
        assert err["type"] == type_
    assert err["message"]
    return err


# --- auth -----------------------------------------------------------------------------------


def test_missing_and_wrong_key_are_401(emulator: Emulator) -> None:
    body = {"model": "gpt-image-2", "prompt": "x"}
    with httpx.Client(base_url=emulator.base_url) as client:
        no_key = client.post(GEN, json=body)
        wrong = client.post(GEN, json=body, headers={"Authorization": "Bearer sk-wrong-key-123456"})
        not_bearer = client.post(GEN, json=body, headers={"Authorization": TEST_API_KEY})
    for resp in (no_key, wrong, not_bearer):
        assert_error(resp, 401, None, "invalid_api_key", "invalid_request_error")
        assert "sk-wrong" not in resp.text
    assert [r.status for r in emulator.requests] == [401, 401, 401]
    assert emulator.billed_images == 0


def test_auth_is_checked_before_validation(emulator: Emulator) -> None:
    resp = httpx.post(emulator.base_url + GEN, json={"model": "gpt-image-2", "n": 99})
    assert resp.status_code == 401


def test_any_key_accepted_when_api_keys_is_none(emulator: Emulator) -> None:
    emulator.configure(api_keys=None)
    resp = httpx.post(
        emulator.base_url + GEN,
        json={"model": "gpt-image-2", "prompt": "x", "size": "1024x640"},
        headers={"Authorization": "Bearer anything"},
    )
    assert resp.status_code == 200


def test_models_list_is_free_and_checks_the_key(http: httpx.Client, emulator: Emulator) -> None:
    resp = http.get("/models")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"].startswith("req_")
    body = resp.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "gpt-image-2" in ids and "gpt-image-1-mini" in ids
    assert all(m["object"] == "model" for m in body["data"])
    with httpx.Client(base_url=emulator.base_url) as client:
        no_key = client.get("/models")
        wrong = client.get("/models", headers={"Authorization": "Bearer sk-wrong-key-123456"})
    for bad in (no_key, wrong):
        assert_error(bad, 401, None, "invalid_api_key", "invalid_request_error")
        assert "sk-wrong" not in bad.text
    assert emulator.billed_requests == 0 and emulator.requests == []


def test_authorization_header_is_not_recorded(http: httpx.Client, emulator: Emulator) -> None:
    gen(http, size="1024x640", quality="low")
    record = emulator.requests[0]
    assert "authorization" not in {k.lower() for k in record.headers}
    assert TEST_API_KEY not in repr(record)
    assert record.headers["content-type"] == "application/json"


# --- validation -----------------------------------------------------------------------------

INVALID_GENERATIONS = [
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 32_001}, "prompt"),
    ({"n": 0}, "n"),
    ({"n": 11}, "n"),
    ({"n": "2"}, "n"),
    ({"n": 1.5}, "n"),
    ({"n": True}, "n"),
    ({"size": "1920x1080"}, "size"),
    ({"size": "4096x2048"}, "size"),
    ({"size": "3840x1024"}, "size"),
    ({"size": "1024x576"}, "size"),
    ({"size": "big"}, "size"),
    ({"size": 1024}, "size"),
    ({"model": "gpt-image-1.5", "size": "2048x2048"}, "size"),
    ({"model": "gpt-image-1-mini", "size": "1024x640"}, "size"),
    ({"quality": "hd"}, "quality"),
    ({"output_format": "gif"}, "output_format"),
    ({"background": "none"}, "background"),
    ({"background": "transparent", "output_format": "jpeg"}, "background"),
    ({"moderation": "strict"}, "moderation"),
    ({"output_format": "jpeg", "output_compression": 101}, "output_compression"),
    ({"output_format": "webp", "output_compression": "50"}, "output_compression"),
    ({"output_compression": 50}, "output_compression"),
]


@pytest.mark.parametrize(("changes", "param"), INVALID_GENERATIONS)
def test_invalid_generation_is_400_naming_the_param(
    http: httpx.Client, emulator: Emulator, changes: dict, param: str
) -> None:
    body = {"model": "gpt-image-2", "prompt": "a fox", **changes}
    body = {k: v for k, v in body.items() if v is not None}
    resp = http.post(GEN, json=body)
    err = assert_error(resp, 400, param, "invalid_value", "invalid_request_error")
    assert "No request was sent" not in err["message"]
    (record,) = emulator.requests
    assert (record.status, record.billed_images, emulator.billed_images) == (400, 0, 0)
    assert record.params == body


def test_size_error_uses_the_real_message(http: httpx.Client) -> None:
    err = assert_error(gen(http, size="1792x936"), 400, "size", "invalid_value")
    assert (
        err["message"] == "Invalid size '1792x936'. Width and height must both be divisible by 16."
    )


@pytest.mark.parametrize("size", ["1024x640", "3840x2160", "2160x3840", "2048x1152", "1536x512"])
def test_valid_custom_sizes_are_accepted(http: httpx.Client, size: str) -> None:
    resp = gen(http, size=size, quality="low", output_format="jpeg", output_compression=30)
    assert resp.status_code == 200, resp.text
    (img,) = decode_all(resp.json())
    assert f"{img.width}x{img.height}" == size == resp.json()["size"]


@pytest.mark.parametrize(
    "model", ["gpt-image-2-2026-04-21", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"]
)
def test_other_known_models(http: httpx.Client, model: str) -> None:
    resp = gen(http, model=model, size="1024x1536", quality="low")
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["output_tokens"] == estimate_output_tokens(
        model, "1024x1536", "low"
    )


@pytest.mark.parametrize("model", ["dall-e-3", "gpt-image-3", "GPT-IMAGE-2", ""])
def test_unknown_model_is_404(http: httpx.Client, model: str) -> None:
    err = assert_error(
        gen(http, model=model), 404, None, "model_not_found", "invalid_request_error"
    )
    assert model in err["message"]


def test_missing_model_on_generations_means_retired_dalle2(http: httpx.Client) -> None:
    err = assert_error(http.post(GEN, json={"prompt": "x"}), 404, None, "model_not_found")
    assert "dall-e-2" in err["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"prompt"'])
def test_body_that_is_not_a_json_object_is_400(http: httpx.Client, raw: bytes) -> None:
    resp = http.post(GEN, content=raw, headers={"content-type": "application/json"})
    assert_error(resp, 400, None, None, "invalid_request_error")


def test_unknown_fields_and_response_format_are_ignored_but_recorded(
    http: httpx.Client, emulator: Emulator
) -> None:
    resp = gen(http, size="1024x640", response_format="url", style="vivid", future_field={"a": 1})
    assert resp.status_code == 200, resp.text
    assert "b64_json" in resp.json()["data"][0] and "url" not in resp.json()["data"][0]
    params = emulator.requests[0].params
    assert params["response_format"] == "url" and params["future_field"] == {"a": 1}


def test_null_fields_mean_defaults(http: httpx.Client) -> None:
    resp = gen(http, size=None, quality=None, n=None, background=None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["size"] == "1024x1024"


def test_streaming_is_refused(http: httpx.Client) -> None:
    assert_error(gen(http, stream=True), 400, "stream", "invalid_value")


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "fmt", "pil_format"),
    [("1536x1024", "png", "PNG"), ("1024x1536", "jpeg", "JPEG"), ("2048x1152", "webp", "WEBP")],
)
def test_n_distinct_images_at_exact_size_and_format(
    http: httpx.Client, emulator: Emulator, size: str, fmt: str, pil_format: str
) -> None:
    resp = gen(http, n=3, size=size, output_format=fmt, quality="medium")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    images = decode_all(body)
    assert len(images) == 3
    for img in images:
        assert img.format == pil_format
        assert f"{img.width}x{img.height}" == size
        assert img.mode == "RGB"
    digests = {hashlib.sha256(d["b64_json"].encode()).hexdigest() for d in body["data"]}
    assert len(digests) == 3
    assert (body["size"], body["output_format"], body["quality"]) == (size, fmt, "medium")
    assert body["background"] == "opaque"
    assert isinstance(body["created"], int)
    usage = body["usage"]
    text = estimate_text_tokens("a red fox in the snow")
    out = estimate_output_tokens("gpt-image-2", size, "medium") * 3
    assert usage["input_tokens_details"] == {"text_tokens": text, "image_tokens": 0}
    assert usage["output_tokens"] == out
    assert usage["total_tokens"] == usage["input_tokens"] + out
    assert emulator.billed_images == 3 and emulator.billed_requests == 1


def test_same_request_same_bytes_and_prompt_changes_them(http: httpx.Client) -> None:
    a = gen(http, size="1024x640").json()["data"][0]["b64_json"]
    b = gen(http, size="1024x640").json()["data"][0]["b64_json"]
    c = gen(http, size="1024x640", prompt="a blue whale").json()["data"][0]["b64_json"]
    assert a == b != c


def test_auto_size_is_1024_square_and_auto_quality_resolves(http: httpx.Client) -> None:
    body = gen(http, size="auto", quality="auto").json()
    (img,) = decode_all(body)
    assert img.size == (1024, 1024)
    assert body["size"] == "1024x1024" and body["quality"] in ("low", "medium", "high")


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_transparent_background_has_alpha_zero_regions(http: httpx.Client, fmt: str) -> None:
    body = gen(http, size="1024x1024", background="transparent", output_format=fmt).json()
    (img,) = decode_all(body)
    assert img.mode == "RGBA"
    low, high = img.getchannel("A").getextrema()
    assert (low, high) == (0, 255)
    assert body["background"] == "transparent"


def test_output_compression_changes_jpeg_quality(http: httpx.Client) -> None:
    small = gen(http, size="1536x1024", output_format="jpeg", output_compression=5).json()
    large = gen(http, size="1536x1024", output_format="jpeg", output_compression=95).json()
    assert len(small["data"][0]["b64_json"]) < len(large["data"][0]["b64_json"]) / 2


def test_4k_generation(http: httpx.Client) -> None:
    resp = gen(http, size="3840x2160", quality="high")
    (img,) = decode_all(resp.json())
    assert img.size == (3840, 2160)


# --- edits ----------------------------------------------------------------------------------


def test_edit_with_one_image_keeps_its_size_on_auto(http: httpx.Client, emulator: Emulator) -> None:
    files = [("image", ("photo.jpg", solid(1536, 1024, fmt="JPEG"), "image/jpeg"))]
    resp = http.post(EDIT, data={"model": "gpt-image-2", "prompt": "make it blue"}, files=files)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    (img,) = decode_all(body)
    assert img.size == (1536, 1024) and body["size"] == "1536x1024"
    assert body["usage"]["input_tokens_details"]["image_tokens"] == 768
    (record,) = emulator.requests
    assert record.endpoint == "edits"
    assert record.params == {"model": "gpt-image-2", "prompt": "make it blue"}
    (meta,) = record.files["image"]
    assert meta["filename"] == "photo.jpg" and meta["content_type"] == "image/jpeg"
    assert meta["sha256"] == hashlib.sha256(files[0][1][1]).hexdigest()
    assert emulator.billed_images == 1


def _mask(size=(1024, 1024), hole=(600, 600, 900, 900)) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle(hole, fill=(0, 0, 0, 0))
    return encode(mask)


def test_edit_with_several_images_and_mask_changes_only_the_masked_area(
    http: httpx.Client, emulator: Emulator
) -> None:
    grey = (128, 128, 128)
    files = [
        ("image[]", (f"{i}.png", solid(colour=grey if i == 0 else (0, 200, 0)), "image/png"))
        for i in range(3)
    ]
    files.append(("mask", ("mask.png", _mask(), "image/png")))
    data = {"model": "gpt-image-2", "prompt": "a hat", "n": "2", "size": "1024x1024"}
    resp = http.post(EDIT, data=data, files=files)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    images = decode_all(body)
    assert len(images) == 2 and body["data"][0]["b64_json"] != body["data"][1]["b64_json"]
    for img in images:
        rgb = img.convert("RGB")
        assert rgb.getpixel((750, 750)) != grey  # inside the transparent part of the mask
        assert rgb.getpixel((800, 450)) == grey  # outside: untouched
    assert body["usage"]["input_tokens_details"]["image_tokens"] == 3 * 768
    (record,) = emulator.requests
    assert len(record.files["image[]"]) == 3 and len(record.files["mask"]) == 1
    assert record.params["n"] == "2"
    assert emulator.billed_images == 2


def test_edit_without_mask_changes_everything(http: httpx.Client) -> None:
    resp = http.post(EDIT, **edit_parts(1))
    (img,) = decode_all(resp.json())
    assert img.convert("RGB").getpixel((800, 450)) != (0, 90, 160)


def test_edit_accepts_repeated_image_fields(http: httpx.Client, emulator: Emulator) -> None:
    resp = http.post(EDIT, **edit_parts(2, field="image", size="1536x1024"))
    assert resp.status_code == 200, resp.text
    assert decode_all(resp.json())[0].size == (1536, 1024)
    assert len(emulator.requests[0].files["image"]) == 2


def test_edit_input_fidelity_on_gpt_image_2_is_the_real_error(http: httpx.Client) -> None:
    resp = http.post(EDIT, **edit_parts(1, input_fidelity="high"))
    err = assert_error(
        resp, 400, "input_fidelity", "invalid_input_fidelity_model", "image_generation_user_error"
    )
    assert (
        err["message"] == "The model 'gpt-image-2' does not support the 'input_fidelity' parameter."
    )
    ok = http.post(EDIT, **edit_parts(1, input_fidelity="high", model="gpt-image-1.5"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["input_tokens_details"]["image_tokens"] == 194


def test_input_fidelity_is_ignored_on_generations(http: httpx.Client) -> None:
    assert gen(http, size="1024x640", input_fidelity="high").status_code == 200


INVALID_EDITS = [
    ("no image", [], {}, "image"),
    ("17 images", [("image[]", solid(64, 64))] * 17, {}, "image"),
    ("not an image", [("image", b"hello, world")], {}, "image"),
    ("gif", [("image", solid(64, 64, fmt="GIF"))], {}, "image"),
    ("bad second image", [("image[]", solid(64, 64)), ("image[]", b"junk")], {}, "image[1]"),
    (
        "mask wrong size",
        [("image", solid()), ("mask", _mask((512, 512), (0, 0, 10, 10)))],
        {},
        "mask",
    ),
    ("mask jpeg", [("image", solid()), ("mask", solid(fmt="JPEG"))], {}, "mask"),
    ("mask without alpha", [("image", solid()), ("mask", solid())], {}, "mask"),
    ("n not an int", [("image", solid(64, 64))], {"n": "two"}, "n"),
    ("n too big", [("image", solid(64, 64))], {"n": "11"}, "n"),
    (
        "compression not int",
        [("image", solid(64, 64))],
        {"output_format": "jpeg", "output_compression": "hi"},
        "output_compression",
    ),
    ("size", [("image", solid(64, 64))], {"size": "1000x1000"}, "size"),
    ("empty prompt", [("image", solid(64, 64))], {"prompt": ""}, "prompt"),
]


@pytest.mark.parametrize(
    ("case", "parts", "fields", "param"), INVALID_EDITS, ids=[c[0] for c in INVALID_EDITS]
)
def test_invalid_edit_is_400(
    http: httpx.Client, emulator: Emulator, case: str, parts: list, fields: dict, param: str
) -> None:
    files = [
        (name, (f"f{i}.bin", data, "application/octet-stream"))
        for i, (name, data) in enumerate(parts)
    ]
    data = {"model": "gpt-image-2", "prompt": "edit it", **fields}
    if not files:  # httpx needs a file to send multipart
        files = [("unrelated", ("x.txt", b"x", "text/plain"))]
    resp = http.post(EDIT, data=data, files=files)
    assert_error(resp, 400, param, "invalid_value", "invalid_request_error")
    assert emulator.billed_images == 0


def test_edit_image_as_text_field_is_400(http: httpx.Client) -> None:
    resp = http.post(
        EDIT,
        data={"model": "gpt-image-2", "prompt": "x", "image": "not a file"},
        files=[("mask", ("m.png", _mask(), "image/png"))],
    )
    assert_error(resp, 400, "image", "invalid_value")


def test_json_edit_and_broken_multipart_are_400(http: httpx.Client) -> None:
    resp = http.post(
        EDIT, json={"model": "gpt-image-2", "prompt": "x", "images": [{"file_id": "file-1"}]}
    )
    assert_error(resp, 400, "image", "unsupported_content_type")
    broken = http.post(
        EDIT,
        content=b"--abc\r\nnope",
        headers={"content-type": "multipart/form-data; boundary=abc"},
    )
    assert_error(broken, 400, None, None)


# --- faults ---------------------------------------------------------------------------------

SIMPLE_FAULTS = {
    "429": (429, "rate_limit_exceeded", None),
    "insufficient_quota": (429, "insufficient_quota", "insufficient_quota"),
    "500": (500, None, "server_error"),
    "500_invalid_request": (500, "invalid_request", "comet_api_error"),
    "503": (503, "server_is_overloaded", "server_error"),
    "moderation": (400, "moderation_blocked", "image_generation_user_error"),
    "401": (401, "invalid_api_key", "invalid_request_error"),
}


@pytest.mark.parametrize("fault", sorted(SIMPLE_FAULTS))
def test_json_error_faults(http: httpx.Client, emulator: Emulator, fault: str) -> None:
    status, code, type_ = SIMPLE_FAULTS[fault]
    headers = {"X-Emulator-Fault": fault}
    resp = http.post(GEN, json={"model": "gpt-image-2", "prompt": "fox"}, headers=headers)
    err = assert_error(resp, status, "" if fault == "500_invalid_request" else None, code, type_)
    if fault in ("429", "503"):
        assert resp.headers["retry-after"] == "1"
        assert resp.headers["retry-after-ms"] == "1000"
    if fault == "insufficient_quota":
        assert err["message"].startswith("You exceeded your current quota")
    if fault == "500_invalid_request":
        assert "(request id: " in err["message"]
    if fault == "moderation":
        assert "safety_violations=[violence]" in err["message"]
        assert err["moderation_details"] == {
            "moderation_stage": "input",
            "categories": ["violence"],
        }
    (record,) = emulator.requests
    assert (record.fault, record.status, record.billed_images) == (fault, status, 0)
    assert emulator.billed_images == 0 and emulator.billed_requests == 0


def test_html_redirect_and_524(http: httpx.Client, emulator: Emulator) -> None:
    html = http.post(GEN, json={"prompt": "x"}, headers={"X-Emulator-Fault": "html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    redirect = http.post(GEN, json={"prompt": "x"}, headers={"X-Emulator-Fault": "redirect"})
    assert redirect.status_code == 301 and redirect.headers["location"] == "/"
    timeout = http.post(GEN, json={"prompt": "x"}, headers={"X-Emulator-Fault": "524"})
    assert timeout.status_code == 524 and "524" in timeout.text
    assert [r.status for r in emulator.requests] == [200, 301, 524]
    assert emulator.billed_images == 0


def test_drop_gives_a_protocol_error_not_a_status(http: httpx.Client, emulator: Emulator) -> None:
    with pytest.raises(httpx.TransportError):
        http.post(
            GEN, json={"model": "gpt-image-2", "prompt": "x"}, headers={"X-Emulator-Fault": "drop"}
        )
    (record,) = emulator.requests
    assert (record.fault, record.status, record.billed_images) == ("drop", None, 0)
    assert record.finished_at is not None
    assert gen(http, size="1024x640").status_code == 200  # the server is fine afterwards


def test_slow_is_billed_even_when_the_client_gives_up(
    http: httpx.Client, emulator: Emulator
) -> None:
    emulator.configure(slow_s=0.8)
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            GEN,
            json={"model": "gpt-image-2", "prompt": "x", "size": "1024x640", "n": 2},
            headers={"X-Emulator-Fault": "slow"},
            timeout=httpx.Timeout(5, read=0.2),
        )
    emulator.wait_idle(timeout=10)
    (record,) = emulator.requests
    assert (record.fault, record.status, record.billed_images) == ("slow", 200, 2)
    assert record.finished_at - record.started_at >= 0.8
    assert (emulator.billed_images, emulator.billed_requests) == (2, 1)


def test_prompt_marker_selects_the_fault(http: httpx.Client, emulator: Emulator) -> None:
    assert gen(http, prompt="item 3 [[fault:429]] a cat").status_code == 429
    assert (
        gen(http, prompt="item 4 [[fault:moderation]] a dog").json()["error"]["code"]
        == "moderation_blocked"
    )
    assert gen(http, prompt="item 5 [[fault:ok]] a cow", size="1024x640").status_code == 200
    assert [r.fault for r in emulator.requests] == ["429", "moderation", None]


def test_unknown_fault_name_is_400(http: httpx.Client) -> None:
    resp = http.post(GEN, json={"prompt": "x"}, headers={"X-Emulator-Fault": "meteor"})
    assert_error(resp, 400, None, "unknown_emulator_fault")
    with pytest.raises(ValueError):
        Emulator().script("meteor")


def test_late_faults_come_after_validation(http: httpx.Client) -> None:
    resp = http.post(
        GEN,
        json={"model": "gpt-image-2", "prompt": "x", "n": 0},
        headers={"X-Emulator-Fault": "moderation"},
    )
    assert_error(resp, 400, "n", "invalid_value")


def test_script_applies_in_order(http: httpx.Client, emulator: Emulator) -> None:
    emulator.script("429", "ok", "500", "")
    statuses = [gen(http, size="1024x640").status_code for _ in range(5)]
    assert statuses == [429, 200, 500, 200, 200]
    assert [r.fault for r in emulator.requests] == ["429", None, "500", None, None]
    assert emulator.billed_requests == 3


def test_rates_are_seeded_and_reproducible(http: httpx.Client, emulator: Emulator) -> None:
    def run() -> list[str | None]:
        emulator.configure(rate_429=0.3, rate_500=0.2, rate_503=0.2, seed=1234)
        for _ in range(20):
            gen(http, size="1024x640", quality="low")
        faults = [r.fault for r in emulator.requests]
        emulator.reset()
        return faults

    first, second = run(), run()
    assert first == second
    assert {"429", "500", "503", None} == set(first)


def test_rate_one_always_faults_and_retry_after_is_configurable(
    http: httpx.Client, emulator: Emulator
) -> None:
    emulator.configure(rate_503=1.0, retry_after_s=2.5)
    resp = gen(http)
    assert resp.status_code == 503
    assert (resp.headers["retry-after"], resp.headers["retry-after-ms"]) == ("2.5", "2500")


def test_fault_precedence_header_over_script(http: httpx.Client, emulator: Emulator) -> None:
    emulator.script("500")
    resp = http.post(GEN, json={"prompt": "x"}, headers={"X-Emulator-Fault": "429"})
    assert resp.status_code == 429
    assert gen(http, size="1024x640").status_code == 500  # the script entry is still queued


def test_every_fault_is_tested() -> None:
    assert set(SIMPLE_FAULTS) | {"html", "redirect", "524", "drop", "slow"} == FAULTS


# --- billing, concurrency -------------------------------------------------------------------


def test_billing_counts_only_what_the_api_charges(http: httpx.Client, emulator: Emulator) -> None:
    gen(http, n=2, size="1024x640", quality="low")
    http.post(EDIT, **edit_parts(2, n="3", size="1024x1024"))
    emulator.script("429", "drop")
    gen(http)
    with pytest.raises(httpx.TransportError):
        gen(http)
    gen(http, n=0)
    assert (emulator.billed_images, emulator.billed_requests) == (5, 2)
    assert [r.billed_images for r in emulator.requests] == [2, 3, 0, 0, 0]
    emulator.reset()
    assert (emulator.billed_images, emulator.billed_requests, len(emulator.requests)) == (0, 0, 0)


def test_latency_does_not_serialise_requests(emulator: Emulator) -> None:
    emulator.configure(latency_s=0.5)
    statuses: list[int] = []

    def one(i: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30) as c:
            r = c.post(
                emulator.base_url + GEN,
                json={
                    "model": "gpt-image-2",
                    "prompt": f"p{i}",
                    "size": "1024x640",
                    "quality": "low",
                },
            )
            statuses.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    records = emulator.requests
    assert len(records) == 8
    assert max(r.started_at for r in records) < min(r.finished_at for r in records)
    assert all(r.finished_at - r.started_at >= 0.5 for r in records)
    assert emulator.peak_in_flight == 8


# --- control endpoints, routes, CLI ---------------------------------------------------------


def control(root: str, name: str, body: object | None = None) -> httpx.Response:
    """POST a JSON body to a control endpoint."""
    return httpx.post(f"{root}/_emulator/{name}", json={} if body is None else body)


def test_control_endpoints(http: httpx.Client, emulator: Emulator) -> None:
    root = emulator.url
    gen(http, n=2, size="1024x640", quality="low")
    state = httpx.get(root + "/_emulator/state").json()
    assert state["requests"] == 1 and state["billed_images"] == 2 and state["billed_requests"] == 1
    assert state["in_flight"] == 0 and state["peak_in_flight"] == 1
    assert state["records"][0]["endpoint"] == "generations" and "headers" not in state["records"][0]

    cfg = control(root, "config", {"latency_s": 0.05, "rate_429": 0}).json()
    assert cfg["latency_s"] == 0.05 and emulator.config.latency_s == 0.05
    assert control(root, "config", {"bogus": 1}).status_code == 400
    assert control(root, "script", {"faults": ["503", "ok"]}).status_code == 200
    assert control(root, "script", {"faults": ["meteor"]}).status_code == 400
    assert gen(http, size="1024x640").status_code == 503
    assert gen(http, size="1024x640").status_code == 200

    assert control(root, "reset").json() == {"ok": True}
    state = httpx.get(root + "/_emulator/state").json()
    assert (state["requests"], state["billed_images"], state["records"]) == (0, 0, [])
    assert emulator.config.latency_s == 0.0
    assert emulator.config.api_keys == frozenset({TEST_API_KEY})


def test_control_endpoints_never_show_the_configured_keys(emulator: Emulator) -> None:
    root = emulator.url
    answers = [
        httpx.get(root + "/_emulator/state").text,
        control(root, "config", {"latency_s": 0}).text,
        control(root, "config", {"api_keys": ["sk-other-secret-1", "sk-other-secret-2"]}).text,
        httpx.get(root + "/_emulator/state").text,
    ]
    for text in answers:
        assert TEST_API_KEY not in text and "sk-other-secret" not in text, text
    assert httpx.get(root + "/_emulator/state").json()["config"]["api_keys"] == 2


@pytest.mark.parametrize(
    "send",
    [
        {"content": b'{"latency_s": 5}'},  # no content type at all
        {"content": b'{"latency_s": 5}', "headers": {"content-type": "text/plain"}},
        {"data": {"latency_s": "5"}},  # an HTML form post
        {"files": {"latency_s": ("x", b"5")}},  # multipart
    ],
    ids=["no-type", "text-plain", "form", "multipart"],
)
def test_control_endpoints_accept_only_json(emulator: Emulator, send: dict) -> None:
    for name in ("config", "script", "reset"):
        resp = httpx.post(f"{emulator.url}/_emulator/{name}", **send)
        assert resp.status_code == 415, (name, resp.text)
        assert "application/json" in resp.json()["error"]["message"]
    assert emulator.config.latency_s == 0.0


def test_control_endpoints_are_off_without_the_flag(api_key: str) -> None:
    with Emulator(EmulatorConfig(api_keys=frozenset({api_key}))) as emu:
        for method, name in (("GET", "state"), ("POST", "reset"), ("POST", "config")):
            resp = httpx.request(method, f"{emu.url}/_emulator/{name}", json={"latency_s": 9})
            assert resp.status_code == 404, (name, resp.text)
            assert api_key not in resp.text
        assert emu.config.latency_s == 0.0
        assert httpx.get(emu.url + "/_emulator/health").json() == {"ok": True}
        # The Python API needs no flag.
        emu.configure(latency_s=0.01)
        assert emu.config.latency_s == 0.01


def test_config_endpoint_sets_api_keys(emulator: Emulator) -> None:
    control(emulator.url, "config", {"api_keys": ["sk-other"]})
    assert emulator.config.api_keys == frozenset({"sk-other"})
    resp = httpx.post(
        emulator.base_url + GEN,
        json={"prompt": "x"},
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
    )
    assert resp.status_code == 401


def test_unknown_route_is_an_openai_style_404(http: httpx.Client) -> None:
    resp = http.post("/images/variations", json={})
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "Invalid URL (POST /v1/images/variations)"
    assert http.get(GEN).status_code == 405


def test_configure_rejects_unknown_fields(emulator: Emulator) -> None:
    with pytest.raises(TypeError):
        emulator.configure(latency=1)


def test_cli_parser_defaults_to_loopback() -> None:
    args = build_parser().parse_args(
        ["emulator", "--api-key", "a", "--api-key", "b", "--rate-429", "0.5"]
    )
    assert (args.host, args.port, args.api_keys, args.rate_429) == (
        "127.0.0.1",
        8000,
        ["a", "b"],
        0.5,
    )


def test_emulator_runs_as_a_process() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect_cometapi.emulator",
            "--port",
            "0",
            "--api-key",
            "sk-proc",
            "--seed",
            "3",
            "--control",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1"},
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        resp = httpx.post(
            base_url + GEN,
            json={"model": "gpt-image-2", "prompt": "x", "size": "1024x640", "quality": "low"},
            headers={"Authorization": "Bearer sk-proc"},
        )
        assert resp.status_code == 200
        state = httpx.get(base_url.removesuffix("/v1") + "/_emulator/state").json()
        assert state["billed_images"] == 1 and state["config"]["seed"] == 3
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_an_image_pool_answers_realistic_distinct_pngs_naming_their_prompt(
    http: httpx.Client, emulator: Emulator
) -> None:
    light = emulator.config.light_images
    emulator.configure(image_pool=2, light_images=False)
    try:
        prompts = [f"pooled product {i}" for i in range(5)]
        bodies = [gen(http, prompt=p, size="1024x1024").json() for p in prompts]
        drawn = gen(http, prompt="not pooled", background="transparent").json()["data"][0]
    finally:
        emulator.configure(image_pool=0, light_images=light)
    blobs = [base64.b64decode(body["data"][0]["b64_json"]) for body in bodies]
    assert len({hashlib.sha256(b).hexdigest() for b in blobs}) == 5
    for prompt, blob in zip(prompts, blobs, strict=True):
        assert len(blob) > 1_000_000  # as heavy as the drawn ones
        with Image.open(io.BytesIO(blob)) as img:
            img.load()  # the chunk must keep the PNG valid (CRCs checked)
            assert (img.format, img.size) == ("PNG", (1024, 1024))
            assert img.text["Comment"] == f"{prompt} #1"
    # What the pool does not serve (transparent, JPEG/WebP, edits) is drawn as before.
    assert b"tEXt" not in base64.b64decode(drawn["b64_json"])


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:1",
     "localhost.attacker.example:{port}", ""],
)  # fmt: skip
def test_control_endpoints_refuse_a_foreign_host_header(emulator: Emulator, host: str) -> None:
    # DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 sends
    # its own name as Host; the control endpoints must not answer it.
    headers = {"host": host.format(port=emulator.port)}
    for method, name in (("GET", "state"), ("POST", "reset"), ("POST", "config")):
        resp = httpx.request(
            method, f"{emulator.url}/_emulator/{name}", json={"latency_s": 9}, headers=headers
        )
        assert resp.status_code == 403, (name, resp.text)
        assert "Host" in resp.json()["error"]["message"]
    assert emulator.config.latency_s == 0.0


def test_control_endpoints_answer_the_loopback_names(emulator: Emulator) -> None:
    for host in (f"127.0.0.1:{emulator.port}", f"localhost:{emulator.port}"):
        resp = httpx.get(f"{emulator.url}/_emulator/state", headers={"host": host})
        assert resp.status_code == 200, resp.text
