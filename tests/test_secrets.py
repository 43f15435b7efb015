"""The API key never shows: not in exceptions (text, repr, args, traceback, pickle), not in log
records (DEBUG, our loggers and httpx/httpcore), not in the repr of clients, blocks or results."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import socket
import traceback
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
    CometAPICredentials,
    CometAPIError,
    ContentPolicyError,
    MissingAPIKeyError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
    ValidationError,
)
from prefect_cometapi.emulator import Emulator

PROMPT = "a quiet harbour at night"
OPTS = {"size": "1024x640", "quality": "low"}
#: Wrong keys the emulator refuses: one shaped like a real key, one not (no pattern to catch).
WRONG_SK_KEY = "sk-wrong-secret-a1b2c3d4e5f6"
WRONG_PLAIN_KEY = "comet-plain-secret-9z8y7x6w"
SECRETS = (WRONG_SK_KEY, WRONG_PLAIN_KEY)


def assert_clean(texts: dict[str, str | bytes], *secrets: str) -> None:
    """No secret (nor its distinctive tail) in any of the texts."""
    for secret in secrets:
        for needle in (secret, secret[-12:]):
            for where, text in texts.items():
                hay = text if isinstance(text, str) else text.decode("latin-1")
                assert needle not in hay, f"the API key leaks through {where}: {hay[:300]!r}"


def exception_texts(exc: BaseException) -> dict[str, str | bytes]:
    """Everything a user, a log or Prefect's state store could see of an exception."""
    texts: dict[str, str | bytes] = {
        "str": str(exc),
        "repr": repr(exc),
        "args": repr(exc.args),
        "vars": repr(vars(exc)),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "pickle": pickle.dumps(exc),
    }
    clone = pickle.loads(texts["pickle"])  # type: ignore[arg-type]
    assert type(clone) is type(exc) and str(clone) == str(exc)
    texts["unpickled"] = repr(vars(clone))
    return texts


@pytest.fixture
def sync_call(emulator: Emulator) -> Iterator[Callable[..., Any]]:
    def call(key: str, method: str = "generate", *args: Any, **kw: Any) -> Any:
        options = {**OPTS, **kw.pop("options", {})}
        with CometAPIClient(key, base_url=emulator.base_url, **kw) as client:
            return getattr(client, method)(PROMPT, *args, **options)

    yield call


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# (id, fault scripted on the emulator, key to use ("good" or a wrong one), client kwargs,
#  call options, expected error)
ERROR_CASES: list[tuple[str, str | None, str, dict[str, Any], dict[str, Any], type]] = [
    ("moderation", "moderation", "good", {}, {}, ContentPolicyError),
    ("401-sk", None, WRONG_SK_KEY, {}, {}, AuthenticationError),
    ("401-plain", None, WRONG_PLAIN_KEY, {}, {}, AuthenticationError),
    ("404", None, "good", {}, {"model": "gpt-image-9"}, NotFoundError),
    ("quota", "insufficient_quota", "good", {}, {}, QuotaExceededError),
    ("429", "429", "good", {"max_retries": 0}, {}, RateLimitError),
    ("500", "500", "good", {"max_retries": 0}, {}, ServerError),
    ("500-invalid", "500_invalid_request", "good", {}, {}, ServerError),
    ("503", "503", "good", {"max_retries": 0}, {}, ServerError),
    ("524", "524", "good", {"max_retries": 0}, {}, ServerError),
    ("html", "html", "good", {}, {}, UnexpectedResponseError),
    ("redirect", "redirect", "good", {}, {}, UnexpectedResponseError),
    ("drop", "drop", "good", {"max_retries": 0}, {}, APIConnectionError),
    ("timeout", "slow", "good", {"max_retries": 0, "read_timeout": 0.3}, {}, APITimeoutError),
    ("validation", None, "good", {}, {"n": 0}, ValidationError),
]


@pytest.mark.parametrize(
    ("fault", "key", "client_kw", "options", "error"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_no_key_in_any_error(
    emulator: Emulator,
    api_key: str,
    sync_call: Callable[..., Any],
    fault: str | None,
    key: str,
    client_kw: dict[str, Any],
    options: dict[str, Any],
    error: type[CometAPIError],
) -> None:
    emulator.configure(slow_s=0.8)
    if fault:
        emulator.script(fault)
    key = api_key if key == "good" else key
    with pytest.raises(error) as info:
        sync_call(key, options=options, **client_kw)
    assert_clean(exception_texts(info.value), key, api_key, *SECRETS)
    emulator.wait_idle(timeout=5)


@pytest.mark.parametrize("fault", ["moderation", "html", "drop"])
def test_no_key_in_async_errors(emulator: Emulator, api_key: str, fault: str) -> None:
    emulator.script(fault)

    async def main() -> None:
        async with AsyncCometAPIClient(api_key, base_url=emulator.base_url, max_retries=0) as c:
            await c.generate(PROMPT, **OPTS)

    with pytest.raises(CometAPIError) as info:
        asyncio.run(main())
    assert_clean(exception_texts(info.value), api_key)


def test_no_key_in_edit_errors(
    emulator: Emulator, api_key: str, sync_call: Callable[..., Any]
) -> None:
    emulator.script("moderation")
    with pytest.raises(ContentPolicyError) as info:
        sync_call(api_key, "edit", encoded())
    assert_clean(exception_texts(info.value), api_key)


def test_no_key_in_connection_refused_or_missing_key(api_key: str) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    with CometAPIClient(api_key, base_url=base, max_retries=0) as client:
        with pytest.raises(APIConnectionError) as refused:
            client.generate(PROMPT, **OPTS)
    assert_clean(exception_texts(refused.value), api_key)
    with pytest.raises(MissingAPIKeyError) as missing:
        CometAPIClient("", base_url=base)
    assert_clean(exception_texts(missing.value), api_key)


def test_no_key_in_any_log_record(
    emulator: Emulator,
    api_key: str,
    sync_call: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("prefect_cometapi", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    emulator.configure(retry_after_s=0.05, slow_s=0.8)
    emulator.script("429", "ok", "drop", "ok", "503", "ok")
    sync_call(api_key)  # 429 then success
    sync_call(api_key, "edit", [encoded(), encoded()])  # dropped, then success
    sync_call(api_key, "edit", encoded())  # 503 then success
    for key, fault, kw in (
        (WRONG_SK_KEY, None, {}),
        (WRONG_PLAIN_KEY, None, {}),
        (api_key, "moderation", {}),
        (api_key, "slow", {"read_timeout": 0.3, "max_retries": 1}),
    ):
        if fault:
            emulator.script(fault, fault)
        with pytest.raises(CometAPIError):
            sync_call(key, **kw)

    async def async_calls() -> None:
        emulator.script("429", "ok")
        async with AsyncCometAPIClient(api_key, base_url=emulator.base_url) as client:
            await client.generate(PROMPT, **OPTS)

    asyncio.run(async_calls())
    names = {record.name.split(".")[0] for record in caplog.records}
    assert {"prefect_cometapi", "httpx", "httpcore"} <= names, "the loggers must have spoken"
    assert any(r.levelno == logging.WARNING and "retry" in r.getMessage() for r in caplog.records)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for i, record in enumerate(caplog.records):
        assert_clean(
            {
                f"record {i} message": record.getMessage(),
                f"record {i} args": repr(record.args),
                f"record {i} formatted": formatter.format(record),
                f"record {i} dict": repr(vars(record)),
            },
            api_key,
            *SECRETS,
        )
    assert_clean({"caplog.text": caplog.text}, api_key, *SECRETS)
    emulator.wait_idle(timeout=5)


def test_no_key_in_reprs_of_clients_blocks_and_results(
    emulator: Emulator, api_key: str, tmp_path: Any
) -> None:
    block = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    with block.get_client() as client:
        generated = client.generate(PROMPT, **OPTS)
        edited = client.edit(PROMPT, encoded(), **OPTS)
        texts: dict[str, str | bytes] = {
            "client repr": repr(client),
            "client str": str(client),
        }
    async_client = block.get_async_client()
    texts["async client repr"] = repr(async_client)
    asyncio.run(async_client.close())
    texts.update(
        {
            "block repr": repr(block),
            "block str": str(block),
            "block dump": repr(block.model_dump()),
            "block json": block.model_dump_json(),
        }
    )
    for label, result in (("generate", generated), ("edit", edited)):
        texts.update(
            {
                f"{label} result repr": repr(result),
                f"{label} image repr": repr(result.images[0]),
                f"{label} usage repr": repr(result.usage),
                f"{label} params": json.dumps(result.params),
                f"{label} image params": json.dumps(result.images[0].params),
                f"{label} pickle": pickle.dumps(result),
            }
        )
    assert_clean(texts, api_key)
    assert block.api_key is not None and block.api_key.get_secret_value() == api_key


def test_no_key_sent_anywhere_but_the_authorization_header(
    emulator: Emulator, api_key: str, sync_call: Callable[..., Any]
) -> None:
    sync_call(api_key)
    sync_call(api_key, "edit", encoded())
    for record in emulator.requests:
        assert record.status == 200
        assert_clean(
            {"params": json.dumps(record.params), "files": json.dumps(record.files)}, api_key
        )


def test_saved_block_hides_the_key_from_the_api(emulator: Emulator, api_key: str) -> None:
    from prefect.client.orchestration import get_client

    CometAPICredentials(api_key=api_key, base_url=emulator.base_url).save(
        "secrets-check", overwrite=True
    )
    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(
            "secrets-check", "cometapi-credentials", include_secrets=False
        )
    assert_clean({"block document": repr(document.data)}, api_key)
    assert CometAPICredentials.load("secrets-check").api_key.get_secret_value() == api_key
