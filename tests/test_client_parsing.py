"""One parsed response at a time (respx transports): shapes the emulator does not produce."""

import base64
import io
import pickle

import httpx
import pytest
import respx
from PIL import Image

from prefect_cometapi import (
    CometAPIClient,
    ContentPolicyError,
    ImageDownloadError,
    MissingAPIKeyError,
    ServerError,
    UnexpectedResponseError,
)
from prefect_cometapi.client.response import _retry_after
from prefect_cometapi.errors import is_retryable

BASE = "https://api.example.test/v1"
KEY = "sk-unit-secret-abcdef123456"


def _png(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "red").save(buf, "PNG")
    return buf.getvalue()


def _client(**kw) -> CometAPIClient:
    return CometAPIClient(api_key=KEY, base_url=BASE, max_retries=kw.pop("max_retries", 0), **kw)


@respx.mock
def test_url_response_is_downloaded_without_the_key() -> None:
    img = _png()
    respx.post(f"{BASE}/images/generations").respond(
        200, json={"created": 1, "data": [{"url": "https://cdn.example.test/a.png"}]}
    )
    cdn = respx.get("https://cdn.example.test/a.png").respond(200, content=img)
    result = _client().generate("a cat", size="1024x1024")
    assert result.images[0].data == img
    assert (result.images[0].width, result.images[0].height) == (64, 48)
    assert "authorization" not in cdn.calls.last.request.headers


@respx.mock
def test_failed_download_is_not_resent_and_names_the_problem() -> None:
    api = respx.post(f"{BASE}/images/generations").respond(
        200, json={"created": 1, "data": [{"url": "https://cdn.example.test/gone.png"}]}
    )
    respx.get("https://cdn.example.test/gone.png").respond(404)
    with pytest.raises(ImageDownloadError, match="billed"):
        _client(max_retries=3).generate("a cat")
    assert api.call_count == 1


@respx.mock
def test_redirect_and_html_mean_a_wrong_base_url() -> None:
    respx.post(f"{BASE}/images/generations").respond(301, headers={"location": "https://x.test/"})
    with pytest.raises(UnexpectedResponseError, match="base URL is probably wrong"):
        _client().generate("a cat")
    respx.post(f"{BASE}/images/generations").respond(
        200, text="<html>hi</html>", headers={"content-type": "text/html"}
    )
    with pytest.raises(UnexpectedResponseError, match="text/html"):
        _client().generate("a cat")


@respx.mock
def test_unknown_keys_are_ignored_and_usage_kept() -> None:
    b64 = base64.b64encode(_png()).decode()
    usage = {
        "input_tokens": 10,
        "output_tokens": 196,
        "prompt_tokens": 0,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 0, "cached_tokens_details": {}},
        "claude_cache_creation_5_m_tokens": 0,
    }
    respx.post(f"{BASE}/images/generations").respond(
        200, json={"created": 5, "data": [{"b64_json": b64, "extra": 1}], "usage": usage, "x": 2}
    )
    result = _client().generate("a cat", size="1024x1024", quality="low")
    assert result.usage.output_tokens == 196 and result.usage.text_input_tokens == 10
    # CometAPI list price for gpt-image-2: $4/M in, $24/M out
    assert result.cost_usd == pytest.approx((10 * 4 + 196 * 24) / 1e6)


@respx.mock
def test_comet_500_invalid_request_is_not_retried() -> None:
    route = respx.post(f"{BASE}/images/generations").respond(
        500,
        json={
            "error": {
                "message": "bad field (request id: 123)",
                "type": "comet_api_error",
                "param": "",
                "code": "invalid_request",
            }
        },
    )
    with pytest.raises(ServerError) as info:
        _client(max_retries=3).generate("a cat")
    assert route.call_count == 1 and not is_retryable(info.value)


@respx.mock
def test_errors_pickle_and_never_carry_the_key() -> None:
    respx.post(f"{BASE}/images/generations").respond(
        400,
        json={
            "error": {
                "message": f"rejected; your key {KEY} was logged",
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
                "moderation_details": {"moderation_stage": "output", "categories": ["violence"]},
            }
        },
        headers={"x-request-id": "req_1"},
    )
    with pytest.raises(ContentPolicyError) as info:
        _client().generate("a cat")
    err = pickle.loads(pickle.dumps(info.value))
    assert err.moderation_details["categories"] == ["violence"]
    assert err.request_id == "req_1" and "req_1" in str(err)
    assert KEY not in str(err) and KEY not in repr(err.body)


def test_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="COMETAPI_KEY"):
        CometAPIClient(base_url=BASE)


def test_retry_after_header_forms() -> None:
    assert _retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert _retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
    assert _retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -5, "output_tokens": 10},
        {"input_tokens": 10, "output_tokens": 1e308},
        {"input_tokens": 10, "output_tokens": 10**30},
        {"input_tokens": 10.5, "output_tokens": 10},
        {"input_tokens": "10", "output_tokens": 10},
        {"input_tokens": True, "output_tokens": 10},
        {"input_tokens": 10, "output_tokens": 10, "input_tokens_details": {"image_tokens": -1}},
    ],
    ids=["negative", "huge-float", "huge-int", "fraction", "string", "bool", "negative-detail"],
)
@respx.mock
def test_impossible_usage_numbers_are_an_unexpected_response(usage: dict) -> None:
    body = {"created": 1, "data": [{"b64_json": base64.b64encode(_png()).decode()}]}
    respx.post(f"{BASE}/images/generations").respond(200, json={**body, "usage": usage})
    with pytest.raises(UnexpectedResponseError, match="impossible usage"):
        _client().generate("a cat")


@respx.mock
def test_infinite_usage_and_deep_json_are_an_unexpected_response() -> None:
    png = base64.b64encode(_png()).decode()
    text = '{"data": [{"b64_json": "' + png + '"}], "usage": {"output_tokens": Infinity}}'
    respx.post(f"{BASE}/images/generations").respond(
        200, content=text.encode(), headers={"content-type": "application/json"}
    )
    with pytest.raises(UnexpectedResponseError, match="impossible usage"):
        _client().generate("a cat")
    deep = b"[" * 200_000 + b"]" * 200_000
    respx.post(f"{BASE}/images/generations").respond(
        200, content=deep, headers={"content-type": "application/json"}
    )
    with pytest.raises(UnexpectedResponseError, match="nested too deeply"):
        _client().generate("a cat")
