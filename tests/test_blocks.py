"""The CometAPICredentials block: Prefect's standard block checks, save/load against the session's
Prefect test server, the clients it builds, the COMETAPI_KEY fallback, and its registration
through the ``prefect.collections`` entry point and ``prefect block register``."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr

import prefect_cometapi
from prefect_cometapi import (
    APITimeoutError,
    AsyncCometAPIClient,
    AuthenticationError,
    CometAPIClient,
    CometAPICredentials,
    MissingAPIKeyError,
    ServerError,
)
from prefect_cometapi.emulator import Emulator

PROMPT = "a teapot shaped like a snail"
OPTS = {"size": "1024x640", "quality": "low"}
SLUG = "cometapi-credentials"


class TestCometAPICredentials(BlockStandardTestSuite):
    """Prefect's standard test suite for blocks, run on CometAPICredentials."""

    @pytest.fixture
    def block(self) -> type[Block]:
        return CometAPICredentials

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Offline replacement of the suite's logo check.

        The inherited test downloads ``_logo_url`` from the internet; these tests talk to
        loopback only, so it checks what can be known without a download: the logo is an https
        URL to an image file.
        """
        logo_url = block._logo_url
        assert logo_url is not None, f"{block.__name__} is missing a value for _logo_url"
        url = urlparse(str(logo_url))
        assert url.scheme == "https" and url.netloc
        assert Path(url.path).suffix.lower() in {".png", ".svg", ".jpg", ".jpeg", ".webp"}


# --- registration -------------------------------------------------------------------------


def test_collection_entry_point_resolves_to_the_package() -> None:
    entries = importlib.metadata.entry_points(group="prefect.collections")
    ours = [e for e in entries if e.value == "prefect_cometapi"]
    assert len(ours) == 1, list(entries)
    assert ours[0].load() is prefect_cometapi
    assert prefect_cometapi.CometAPICredentials is CometAPICredentials


def test_prefect_block_register_lists_the_block() -> None:
    """``prefect block register -m prefect_cometapi`` against the session's test server."""
    api_url = PREFECT_API_URL.value()
    assert api_url and urlparse(api_url).hostname in ("127.0.0.1", "localhost")
    with get_client(sync_client=True) as client:
        # Start from a server that does not know the type, so that reading it afterwards proves
        # the command registered it; but never delete blocks other tests saved.
        try:
            documents = client.read_block_documents_by_type(SLUG)
            if not documents:
                client.delete_block_type(client.read_block_type_by_slug(SLUG).id)
        except ObjectNotFound:
            documents = []
        if not documents:
            with pytest.raises(ObjectNotFound):
                client.read_block_type_by_slug(SLUG)
    prefect_cli = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "PREFECT_API_URL": api_url, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [str(prefect_cli), "block", "register", "-m", "prefect_cometapi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CometAPI Credentials" in proc.stdout, proc.stdout

    async def read() -> None:
        from prefect.client.orchestration import get_client as get_async_client

        async with get_async_client() as client:
            block_type = await client.read_block_type_by_slug(SLUG)
            assert block_type.name == "CometAPI Credentials"
            assert block_type.description and "CometAPI" in block_type.description
            assert str(block_type.logo_url) == str(CometAPICredentials._logo_url)
            assert block_type.code_example and "CometAPICredentials.load" in (
                block_type.code_example
            )
            schema = await client.read_block_schema_by_checksum(
                CometAPICredentials._calculate_schema_checksum()
            )
            assert schema.block_type_id == block_type.id
            assert schema.fields["secret_fields"] == ["api_key"]
            assert set(schema.fields["properties"]) >= {
                "api_key",
                "base_url",
                "connect_timeout",
                "read_timeout",
                "max_retries",
            }

    asyncio.run(read())


# --- fields and defaults ----------------------------------------------------------------------


def test_defaults_and_field_types() -> None:
    block = CometAPICredentials()
    assert block.api_key is None
    assert block.base_url == "https://api.cometapi.com/v1"
    assert block.read_timeout >= 300, "high quality and 4K images take minutes"
    assert block.connect_timeout > 0
    assert block.max_retries >= 1
    assert isinstance(CometAPICredentials(api_key="sk-x").api_key, SecretStr)
    assert CometAPICredentials.get_block_type_slug() == SLUG
    assert CometAPICredentials.get_block_type_name() == "CometAPI Credentials"


@pytest.mark.parametrize("bad", [{"read_timeout": 0}, {"connect_timeout": -1}, {"max_retries": -1}])
def test_invalid_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CometAPICredentials(api_key="sk-x", **bad)


# --- the Prefect server ---------------------------------------------------------------------


def test_save_and_load_keep_the_secret_and_settings(emulator: Emulator, api_key: str) -> None:
    CometAPICredentials(
        api_key=api_key,
        base_url=emulator.base_url,
        connect_timeout=3.5,
        read_timeout=45.0,
        max_retries=4,
    ).save("test-blocks-roundtrip", overwrite=True)
    loaded = CometAPICredentials.load("test-blocks-roundtrip")
    assert isinstance(loaded, CometAPICredentials)
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == api_key
    assert (loaded.base_url, loaded.connect_timeout, loaded.read_timeout, loaded.max_retries) == (
        emulator.base_url,
        3.5,
        45.0,
        4,
    )
    with loaded.get_client() as client:
        result = client.generate(PROMPT, **OPTS)
    assert result.images[0].width == 1024
    (record,) = emulator.requests
    assert record.status == 200


def test_save_overwrite_replaces_the_key(emulator: Emulator, api_key: str) -> None:
    CometAPICredentials(api_key="sk-old-key-000000", base_url=emulator.base_url).save(
        "test-blocks-overwrite", overwrite=True
    )
    CometAPICredentials(api_key=api_key, base_url=emulator.base_url).save(
        "test-blocks-overwrite", overwrite=True
    )
    loaded = CometAPICredentials.load("test-blocks-overwrite")
    assert loaded.api_key.get_secret_value() == api_key


def test_saved_block_without_key_uses_the_worker_environment(
    emulator: Emulator, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    CometAPICredentials(base_url=emulator.base_url).save("test-blocks-env", overwrite=True)
    loaded = CometAPICredentials.load("test-blocks-env")
    assert loaded.api_key is None
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError):
        loaded.get_client()
    monkeypatch.setenv("COMETAPI_KEY", api_key)
    with loaded.get_client() as client:
        client.generate(PROMPT, **OPTS)
    assert [r.status for r in emulator.requests] == [200]


# --- the clients it builds -----------------------------------------------------------------


def test_get_client_uses_the_block_settings(emulator: Emulator, api_key: str) -> None:
    block = CometAPICredentials(
        api_key=api_key,
        base_url=emulator.base_url,
        connect_timeout=2.5,
        read_timeout=0.5,
        max_retries=1,
    )
    client = block.get_client()
    assert isinstance(client, CometAPIClient)
    assert emulator.base_url in repr(client)
    assert client._timeout.connect == 2.5 and client._timeout.read == 0.5
    with client:
        # max_retries=1: two 503s exhaust it, the third scripted answer is never asked for
        emulator.configure(retry_after_s=0.02)
        emulator.script("503", "503", "ok")
        with pytest.raises(ServerError):
            client.generate(PROMPT, **OPTS)
        assert [r.status for r in emulator.requests] == [503, 503]
        # read_timeout=0.5: a response slower than that times out
        emulator.reset()
        emulator.configure(slow_s=1.0)
        emulator.script("slow", "slow")
        with pytest.raises(APITimeoutError):
            client.generate(PROMPT, **OPTS)
        assert [r.fault for r in emulator.requests] == ["slow", "slow"]
    emulator.wait_idle(timeout=5)


def test_get_async_client_uses_the_block_settings(emulator: Emulator, api_key: str) -> None:
    block = CometAPICredentials(
        api_key=api_key,
        base_url=emulator.base_url,
        connect_timeout=2.5,
        read_timeout=0.5,
        max_retries=2,
    )

    async def main() -> None:
        client = block.get_async_client()
        assert isinstance(client, AsyncCometAPIClient)
        assert client._timeout.connect == 2.5 and client._timeout.read == 0.5
        async with client:
            emulator.configure(retry_after_s=0.02)
            emulator.script("503", "503", "503", "ok")
            with pytest.raises(ServerError):
                await client.generate(PROMPT, **OPTS)
            result = await client.generate(PROMPT, **OPTS)
            assert result.attempts == 1

    asyncio.run(main())
    assert [r.status for r in emulator.requests] == [503, 503, 503, 200]


def test_block_key_wins_over_the_environment(
    emulator: Emulator, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", "sk-env-key-that-is-wrong-000")
    with CometAPICredentials(api_key=api_key, base_url=emulator.base_url).get_client() as c:
        c.generate(PROMPT, **OPTS)
    with CometAPICredentials(base_url=emulator.base_url).get_client() as c:
        with pytest.raises(AuthenticationError):
            c.generate(PROMPT, **OPTS)
    assert [r.status for r in emulator.requests] == [200, 401]


def test_env_fallback_for_both_clients(
    emulator: Emulator, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMETAPI_KEY", api_key)
    block = CometAPICredentials(base_url=emulator.base_url)
    assert block.resolved_api_key() == api_key
    with block.get_client() as client:
        client.generate(PROMPT, **OPTS)

    async def main() -> None:
        async with block.get_async_client() as client:
            await client.generate(PROMPT, **OPTS)

    asyncio.run(main())
    assert [r.status for r in emulator.requests] == [200, 200]
