"""Retries against the emulator's injected faults, judged by the emulator's request log.

What is retried (429, 5xx, 524, dropped connections, timeouts) is retried within
``max_retries``, honouring ``retry-after``; what cannot succeed on a second try (moderation, 401,
404, insufficient quota, a 500 ``invalid_request``, HTML, redirects) is sent exactly once.
Waits are asserted on the times the emulator recorded, not on the test's wall clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_client import encoded

from prefect_cometapi import (
    APIConnectionError,
    APITimeoutError,
    AsyncCometAPIClient,
    AuthenticationError,
    CometAPIClient,
    CometAPIError,
    ContentPolicyError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
    is_retryable,
)
from prefect_cometapi.client.core import BACKOFF_BASE_S
from prefect_cometapi.emulator import Emulator

PROMPT = "a paper boat on a puddle"
OPTS = {"size": "1024x640", "quality": "low"}
#: Clock granularity allowance when comparing recorded monotonic times.
EPS = 0.02
#: Bigger than the largest first backoff (BACKOFF_BASE_S), so only honouring Retry-After passes.
RETRY_AFTER_S = 0.8
assert RETRY_AFTER_S > BACKOFF_BASE_S


@pytest.fixture
def make_client(emulator: Emulator, api_key: str) -> Iterator[Callable[..., CometAPIClient]]:
    """Build sync clients on the emulator (closed after the test)."""
    clients: list[CometAPIClient] = []

    def make(**kw: Any) -> CometAPIClient:
        kw.setdefault("max_retries", 3)
        client = CometAPIClient(kw.pop("api_key", api_key), base_url=emulator.base_url, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def run_async(emulator: Emulator, api_key: str, call: str = "generate", **kw: Any) -> Any:
    """One request through a fresh AsyncCometAPIClient."""

    async def main() -> Any:
        kw.setdefault("max_retries", 3)
        async with AsyncCometAPIClient(
            api_key, base_url=emulator.base_url, max_retries=kw.pop("max_retries")
        ) as client:
            return await getattr(client, call)(PROMPT, **OPTS, **kw)

    return asyncio.run(main())


def statuses(emulator: Emulator) -> list[int | None]:
    return [r.status for r in emulator.requests]


# --- retried, then success -----------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(
    make_client: Callable[..., CometAPIClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.configure(retry_after_s=RETRY_AFTER_S)
    emulator.script("429", "ok")
    with caplog.at_level(logging.WARNING, logger="prefect_cometapi"):
        result = make_client().generate(PROMPT, **OPTS)
    assert result.attempts == 2
    assert statuses(emulator) == [429, 200]
    first, second = emulator.requests
    assert second.started_at - first.finished_at >= RETRY_AFTER_S - EPS
    assert second.started_at - first.started_at >= RETRY_AFTER_S - EPS
    assert emulator.billed_images == 1
    retries = [r for r in caplog.records if "retry 1/3" in r.getMessage()]
    assert len(retries) == 1 and "RateLimitError" in retries[0].getMessage()


def test_503_twice_then_success(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.configure(retry_after_s=0.05)
    emulator.script("503", "503", "ok")
    result = make_client().generate(PROMPT, **OPTS)
    assert statuses(emulator) == [503, 503, 200]
    assert result.attempts == 3
    assert len(result.images) == 1
    first, second, third = emulator.requests
    assert second.started_at - first.finished_at >= 0.05 - EPS
    assert third.started_at - second.finished_at >= 0.05 - EPS


@pytest.mark.parametrize("fault", ["500", "524"])
def test_500_and_cloudflare_524_are_retried(
    make_client: Callable[..., CometAPIClient], emulator: Emulator, fault: str
) -> None:
    emulator.script(fault, "ok")
    result = make_client().generate(PROMPT, **OPTS)
    assert statuses(emulator) == [int(fault), 200]
    assert result.attempts == 2
    first, second = emulator.requests
    # no retry-after on these: exponential backoff, first step 0.5 s minus up to 25 % jitter
    assert second.started_at - first.finished_at >= 0.75 * BACKOFF_BASE_S - EPS


def test_dropped_connection_then_success(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.script("drop", "ok")
    result = make_client().generate(PROMPT, **OPTS)
    assert statuses(emulator) == [None, 200]
    assert emulator.requests[0].fault == "drop"
    assert result.attempts == 2
    assert emulator.billed_images == 1


def test_edit_is_retried_with_the_same_body(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.configure(retry_after_s=0.05)
    emulator.script("503", "ok")
    make_client().edit(PROMPT, [encoded(), encoded((512, 512))], **OPTS)
    first, second = emulator.requests
    assert (first.status, second.status) == (503, 200)
    assert first.params == second.params
    assert first.files == second.files
    assert len(second.files["image[]"]) == 2


# --- exactly one request ----------------------------------------------------------------------


def test_moderation_blocked_is_not_retried(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.script("moderation", "ok")
    with pytest.raises(ContentPolicyError) as info:
        make_client().generate(PROMPT, **OPTS)
    err = info.value
    assert (err.status_code, err.code) == (400, "moderation_blocked")
    assert err.moderation_details == {"moderation_stage": "input", "categories": ["violence"]}
    assert err.request_id and err.request_id.startswith("req_")
    assert "moderation_blocked" in str(err) and "Rephrase" in str(err)
    assert not is_retryable(err)
    assert statuses(emulator) == [400]


def test_401_wrong_key_is_not_retried(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    with pytest.raises(AuthenticationError) as info:
        make_client(api_key="sk-wrong-key-00000000000000").generate(PROMPT, **OPTS)
    assert (info.value.status_code, info.value.code) == (401, "invalid_api_key")
    assert "API key" in str(info.value)
    assert statuses(emulator) == [401]


def test_unknown_model_is_404_not_retried(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    with pytest.raises(NotFoundError) as info:
        make_client().generate(PROMPT, model="gpt-image-9", **OPTS)
    assert (info.value.status_code, info.value.code) == (404, "model_not_found")
    assert "model name" in str(info.value)
    assert statuses(emulator) == [404]


def test_insufficient_quota_is_not_retried(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.script("insufficient_quota", "ok")
    with pytest.raises(QuotaExceededError) as info:
        make_client().generate(PROMPT, **OPTS)
    assert (info.value.status_code, info.value.code) == (429, "insufficient_quota")
    assert not isinstance(info.value, RateLimitError)
    assert not is_retryable(info.value)
    assert statuses(emulator) == [429]


def test_500_invalid_request_is_not_retried(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.script("500_invalid_request", "ok")
    with pytest.raises(ServerError) as info:
        make_client().generate(PROMPT, **OPTS)
    assert (info.value.status_code, info.value.code) == (500, "invalid_request")
    assert not is_retryable(info.value)
    assert statuses(emulator) == [500]


def test_retry_after_beyond_the_cap_is_raised_not_waited(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.configure(retry_after_s=600)
    emulator.script("429", "ok")
    with pytest.raises(RateLimitError) as info:
        make_client().generate(PROMPT, **OPTS)
    assert info.value.retry_after == 600
    assert statuses(emulator) == [429]


@pytest.mark.parametrize("fault", ["html", "redirect"])
def test_html_and_redirect_mean_a_wrong_base_url(
    make_client: Callable[..., CometAPIClient],
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    emulator.script(fault, "ok")
    with (
        caplog.at_level(logging.INFO, logger="httpx"),
        pytest.raises(UnexpectedResponseError) as info,
    ):
        make_client().generate(PROMPT, **OPTS)
    assert info.value.status_code == (200 if fault == "html" else 301)
    assert "base URL" in str(info.value)
    assert statuses(emulator) == [info.value.status_code]
    sent = [r for r in caplog.records if r.name == "httpx" and "HTTP Request" in r.getMessage()]
    assert len(sent) == 1, "the redirect must not be followed (nor the request repeated)"


# --- limits -----------------------------------------------------------------------------------


def test_max_retries_is_respected(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.configure(retry_after_s=0.02)
    emulator.script(*["503"] * 5)
    with pytest.raises(ServerError) as info:
        make_client(max_retries=2).generate(PROMPT, **OPTS)
    assert info.value.status_code == 503
    assert info.value.retry_after == pytest.approx(0.02)
    assert statuses(emulator) == [503, 503, 503]


def test_max_retries_zero_sends_once(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.script("429", "ok")
    with pytest.raises(RateLimitError):
        make_client(max_retries=0).generate(PROMPT, **OPTS)
    assert statuses(emulator) == [429]


def test_timeout_is_retried_then_raised(
    make_client: Callable[..., CometAPIClient], emulator: Emulator
) -> None:
    emulator.configure(slow_s=1.0)
    emulator.script("slow", "slow")
    client = make_client(read_timeout=0.5, max_retries=1)
    with pytest.raises(APITimeoutError) as info:
        client.generate(PROMPT, **OPTS)
    assert isinstance(info.value, APIConnectionError)
    assert is_retryable(info.value)
    assert "read_timeout" in str(info.value)
    records = emulator.requests
    assert [r.fault for r in records] == ["slow", "slow"]
    assert records[1].started_at - records[0].started_at >= 0.5 - EPS
    emulator.wait_idle(timeout=5)  # the abandoned requests finish (and are billed) server-side


def test_connection_refused_is_retried_then_raised(api_key: str) -> None:
    import socket

    with socket.socket() as sock:  # a port on loopback that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = CometAPIClient(api_key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with client, pytest.raises(APIConnectionError) as info:
        client.generate(PROMPT, **OPTS)
    assert not isinstance(info.value, APITimeoutError)
    assert f"127.0.0.1:{port}" in str(info.value)


# --- async twin -------------------------------------------------------------------------------


def test_async_429_waits_for_retry_after(emulator: Emulator, api_key: str) -> None:
    emulator.configure(retry_after_s=RETRY_AFTER_S)
    emulator.script("429", "ok")
    result = run_async(emulator, api_key)
    assert result.attempts == 2
    first, second = emulator.requests
    assert (first.status, second.status) == (429, 200)
    assert second.started_at - first.finished_at >= RETRY_AFTER_S - EPS


def test_async_503_twice_then_success(emulator: Emulator, api_key: str) -> None:
    emulator.configure(retry_after_s=0.05)
    emulator.script("503", "503", "ok")
    result = run_async(emulator, api_key)
    assert statuses(emulator) == [503, 503, 200]
    assert result.attempts == 3


def test_async_drop_then_success(emulator: Emulator, api_key: str) -> None:
    emulator.script("drop", "ok")
    assert run_async(emulator, api_key).attempts == 2
    assert statuses(emulator) == [None, 200]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("moderation", ContentPolicyError),
        ("insufficient_quota", QuotaExceededError),
        ("500_invalid_request", ServerError),
        ("html", UnexpectedResponseError),
        ("redirect", UnexpectedResponseError),
    ],
)
def test_async_not_retried(
    emulator: Emulator, api_key: str, fault: str, error: type[CometAPIError]
) -> None:
    emulator.script(fault, "ok")
    with pytest.raises(error):
        run_async(emulator, api_key)
    assert len(emulator.requests) == 1


def test_async_max_retries(emulator: Emulator, api_key: str) -> None:
    emulator.configure(retry_after_s=0.02)
    emulator.script(*["503"] * 5)
    with pytest.raises(ServerError):
        run_async(emulator, api_key, max_retries=2)
    assert statuses(emulator) == [503, 503, 503]


def test_async_timeout(emulator: Emulator, api_key: str) -> None:
    emulator.configure(slow_s=1.0)
    emulator.script("slow", "slow")

    async def main() -> None:
        async with AsyncCometAPIClient(
            api_key, base_url=emulator.base_url, read_timeout=0.5, max_retries=1
        ) as client:
            await client.generate(PROMPT, **OPTS)

    with pytest.raises(APITimeoutError):
        asyncio.run(main())
    assert [r.fault for r in emulator.requests] == ["slow", "slow"]
    emulator.wait_idle(timeout=5)
