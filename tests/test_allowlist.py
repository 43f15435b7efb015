"""Where the key may go: the worker's allow-lists, and keys that cannot be sent at all."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydantic
import pytest
from prefect import flow

from prefect_cometapi import AsyncCometAPIClient, CometAPIClient, CometAPICredentials
from prefect_cometapi.allowlist import (
    ALLOWED_BASE_URLS_ENV,
    ALLOWED_S3_ENDPOINTS_ENV,
    check_base_url,
    check_s3_endpoint,
    origin,
)
from prefect_cometapi.blocks.credentials import resolve_credentials
from prefect_cometapi.demo.environ import allowing
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.flows import S3Options
from prefect_cometapi.tasks import agenerate_image, generate_image

KEY = "sk-allowlist-test-0123456789"


def test_origins_are_normalised() -> None:
    assert origin("HTTPS://API.CometAPI.com/v1") == ("https", "api.cometapi.com", 443)
    assert origin("http://127.0.0.1:8000/v1/") == ("http", "127.0.0.1", 8000)
    assert origin("http://example.com.") == ("http", "example.com", 80)
    for bad in ("ftp://x", "file:///etc/passwd", "//host", "http://:80", "http://h:99999"):
        with pytest.raises(ValidationError):
            origin(bad)
    with pytest.raises(ValidationError, match="user name or password"):
        origin("https://user:pw@api.cometapi.com/v1")


def test_only_cometapi_and_listed_hosts_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_BASE_URLS_ENV, "http://127.0.0.1:8000, https://gw.example")
    assert check_base_url("https://api.cometapi.com/v1/") == "https://api.cometapi.com/v1"
    assert check_base_url("https://api.cometapi.com:443/v1")
    assert check_base_url("http://127.0.0.1:8000/v1")
    assert check_base_url("https://gw.example/openai/v1")
    for foreign in (
        "http://127.0.0.1:8001/v1",  # another port
        "https://127.0.0.1:8000/v1",  # another scheme
        "https://api.cometapi.com.evil.example/v1",
        "http://api.cometapi.com/v1",  # plain http to the right host
        "http://169.254.169.254/latest",
    ):
        with pytest.raises(ValidationError, match="not an allowed API host") as info:
            check_base_url(foreign)
        assert info.value.param == "base_url"
    assert check_base_url("https://mine.example/v1", also=["https://mine.example/other"])


def test_s3_endpoints_need_the_worker_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOWED_S3_ENDPOINTS_ENV, raising=False)
    assert check_s3_endpoint(None) is None and check_s3_endpoint("  ") is None
    with pytest.raises(ValidationError, match="not an allowed S3 endpoint"):
        check_s3_endpoint("http://169.254.169.254")
    with pytest.raises(pydantic.ValidationError, match="s3.endpoint_url"):
        S3Options(bucket="some-bucket", endpoint_url="https://attacker.example")
    with allowing(s3_endpoints=["https://minio.internal:9000"]):
        assert S3Options(bucket="b-1", endpoint_url="https://minio.internal:9000").endpoint_url
    with pytest.raises(ValidationError):
        check_s3_endpoint("https://minio.internal:9000")


def test_the_environment_key_goes_only_to_allowed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMETAPI_KEY", KEY)
    monkeypatch.delenv(ALLOWED_BASE_URLS_ENV, raising=False)
    for cls in (CometAPIClient, AsyncCometAPIClient):
        with pytest.raises(ValidationError, match="not an allowed API host") as info:
            cls(base_url="https://attacker.example/v1")
        assert KEY not in str(info.value)
    with pytest.raises(ValidationError):
        CometAPICredentials(base_url="https://attacker.example/v1").get_client()
    # A key given with the base URL belongs to whoever gave both.
    CometAPIClient("sk-own-key", base_url="https://gw.example/v1").close()
    with allowing(["https://attacker.example"]):
        CometAPIClient(base_url="https://attacker.example/v1").close()


def test_flows_take_base_url_only_from_the_allow_list(
    monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    monkeypatch.setenv(ALLOWED_BASE_URLS_ENV, emulator.base_url)
    inline = CometAPICredentials(api_key=KEY, base_url="https://attacker.example/v1")
    with pytest.raises(ValidationError) as info:
        resolve_credentials(inline)
    assert info.value.param == "credentials_block.base_url"
    with pytest.raises(ValidationError) as info:
        resolve_credentials(None, "https://attacker.example/v1")
    assert info.value.param == "base_url"
    assert resolve_credentials(None, emulator.base_url + "/").base_url == emulator.base_url


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_the_tasks_follow_the_flows_credentials_rule(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, twin: str
) -> None:
    """One resolver: an image task refuses an inline block aimed at a host the worker does not
    allow, before any request, exactly as the flows do."""
    monkeypatch.setenv(ALLOWED_BASE_URLS_ENV, emulator.base_url)
    inline = CometAPICredentials(api_key=KEY, base_url="https://attacker.example/v1")
    before = len(emulator.requests)

    @flow
    def sync_flow() -> Any:
        return generate_image("a lighthouse", inline, size="1024x1024", quality="low")

    @flow
    async def async_flow() -> Any:
        return await agenerate_image("a lighthouse", inline, size="1024x1024", quality="low")

    with pytest.raises(ValidationError) as info:
        sync_flow() if twin == "sync" else asyncio.run(async_flow())
    assert info.value.param == "credentials_block.base_url"
    assert len(emulator.requests) == before


def test_a_saved_block_may_use_its_own_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOWED_BASE_URLS_ENV, raising=False)
    name = "allowlist-own-gateway"
    CometAPICredentials(api_key=KEY, base_url="https://gw.example/v1").save(name, overwrite=True)
    assert resolve_credentials(name).base_url == "https://gw.example/v1"
    assert resolve_credentials(name, "https://gw.example/v1/").base_url == "https://gw.example/v1"
    with pytest.raises(ValidationError):
        resolve_credentials(name, "https://attacker.example/v1")


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (KEY + "\u200b", "U+200B"),  # zero-width space from a copy-paste
        ("\u00a0" + KEY + "\u00a0x", "U+00A0"),
        (KEY[:10] + "\u0455" + KEY[11:], "U+0455"),  # Cyrillic look-alike of 's'
        (KEY + "\r\nX-Injected: 1", "a line break"),
        (KEY[:10] + " " + KEY[10:], "a space"),
        (KEY + "\x00", "U+0000"),
    ],
    ids=["zero-width", "nbsp", "homoglyph", "crlf", "space", "nul"],
)
def test_a_key_that_cannot_be_sent_is_refused_when_built(
    key: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = key.strip()
    for build in (
        lambda: CometAPIClient(key, base_url="https://api.cometapi.com/v1"),
        lambda: AsyncCometAPIClient(key),
    ):
        with pytest.raises(ValidationError) as info:
            build()
        assert info.value.param == "api_key" and kind in info.value.rule
        assert KEY[3:] not in str(info.value) and secret not in repr(info.value)
    with pytest.raises(pydantic.ValidationError) as block_info:
        CometAPICredentials(api_key=key)
    # What Prefect shows and stores (ParameterTypeError keeps each error's loc and msg).
    text = str(block_info.value) + repr(block_info.value.errors(include_input=False))
    assert kind in text and KEY[3:] not in text
    if "\x00" in key:
        return  # an environment variable cannot hold a NUL
    monkeypatch.setenv("COMETAPI_KEY", key)
    with pytest.raises(ValidationError) as env_info:
        CometAPICredentials().get_client()
    assert env_info.value.param == "COMETAPI_KEY" and KEY[3:] not in str(env_info.value)


@pytest.fixture
def confined(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A working directory with one allowed file, and secrets next to it (outside the root)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "ok.j2").write_text("A {{ x }}", encoding="utf-8")
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hostile-secret-0123", encoding="utf-8")
    (root / "link.j2").symlink_to(secret)
    monkeypatch.chdir(root)
    monkeypatch.delenv("PREFECT_COMETAPI_INPUT_ROOTS", raising=False)
    return root, secret


def test_local_inputs_stay_inside_the_allowed_roots(confined: Any) -> None:
    from prefect_cometapi.allowlist import confine_path

    root, secret = confined
    assert confine_path("ok.j2", "template") == root / "ok.j2"
    assert confine_path(root / "ok.j2", "template") == root / "ok.j2"
    for bad, rule in (
        (str(secret), "outside the folders"),
        ("../credentials", "'..' is not allowed"),
        ("sub/../../credentials", "'..' is not allowed"),
        ("link.j2", "outside the folders"),  # a symlink out of the root
        (f"file://{secret}", "file:// URLs are not accepted"),
        ("~/.aws/credentials", "outside the folders"),
        ("/etc/passwd", "outside the folders"),
    ):
        with pytest.raises(ValidationError, match=rule) as info:
            confine_path(bad, "template")
        assert "hostile-secret" not in str(info.value)


def test_input_urls_to_internal_addresses_are_refused(
    http_file_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_cometapi.inputs.fetch import load_bytes

    monkeypatch.setenv("PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS", "")
    secret = http_file_server.add("/latest/meta-data/iam", b"metadata-secret-0123")
    for url in (
        secret,
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://0.0.0.0/x.png",
        "http://10.1.2.3/x.png",
        "http://2130706433/x.png",  # 127.0.0.1 in decimal
    ):
        with pytest.raises(ValidationError, match="loopback, link-local, private") as info:
            load_bytes(url, param="image")
        assert "metadata-secret" not in str(info.value)
    assert not [p for _, p in http_file_server.requests if p.startswith("/latest")]


def test_a_redirect_to_an_internal_address_is_refused(
    http_file_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_cometapi.inputs.fetch import load_bytes

    port = http_file_server.base_url.rsplit(":", 1)[1]
    target = http_file_server.add("/internal-secret", b"internal-secret-0123")
    http_file_server.add("/hop", b"", status=302, headers={"Location": target})
    # Only "localhost" is allowed: the redirect to 127.0.0.1 must be checked again and refused.
    monkeypatch.setenv("PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS", "localhost")
    with pytest.raises(ValidationError, match="loopback") as info:
        load_bytes(f"http://localhost:{port}/hop", param="items_file")
    assert info.value.param == "items_file" and "internal-secret" not in str(info.value)
    assert ("GET", "/internal-secret") not in http_file_server.requests
    monkeypatch.setenv("PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS", "localhost,127.0.0.1")
    assert load_bytes(f"http://localhost:{port}/hop", param="x") == b"internal-secret-0123"


def test_a_name_that_rebinds_to_loopback_is_fetched_from_the_checked_address_only(
    http_file_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the check's lookup answers a public address, any later one loopback."""
    import socket

    from prefect_cometapi.errors import InputFetchError
    from prefect_cometapi.inputs.fetch import load_bytes

    public = "93.184.216.34"
    port = int(http_file_server.base_url.rsplit(":", 1)[1])
    http_file_server.add("/rebind-secret", b"rebind-secret-0123")
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    lookups: list[str] = []
    connections: list[str] = []

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        answer = public if not lookups else "127.0.0.1"
        lookups.append(answer)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answer, port))]

    def connect(address: Any, *args: Any, **kwargs: Any) -> Any:
        host = address[0]
        if host not in ("rebind.test", public):
            return real_connect(address, *args, **kwargs)
        ip = socket.getaddrinfo(host, address[1])[0][4][0] if host == "rebind.test" else host
        connections.append(ip)
        if ip == public:  # never leave the machine: the checked address "does not answer"
            raise ConnectionRefusedError("no traffic beyond loopback in tests")
        return real_connect((ip, address[1]), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setenv("PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS", "")
    with pytest.raises((InputFetchError, ValidationError)) as info:
        load_bytes(f"http://rebind.test:{port}/rebind-secret", param="items_file")
    assert "rebind-secret-0123" not in str(info.value)
    assert lookups[0] == public
    assert "127.0.0.1" not in connections, "the fetch went to an address that was never checked"
    assert ("GET", "/rebind-secret") not in http_file_server.requests


def test_a_compressed_input_is_capped_while_it_inflates(http_file_server: Any) -> None:
    import gzip

    from prefect_cometapi.inputs.fetch import load_bytes

    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024), compresslevel=9)
    url = http_file_server.add("/bomb.png", bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(ValidationError, match="1,000,000 byte limit once decompressed"):
        load_bytes(url, param="image", max_bytes=1_000_000)
    small = http_file_server.add(
        "/small.txt", gzip.compress(b"plain text"), headers={"Content-Encoding": "gzip"}
    )
    assert load_bytes(small, param="items_file") == b"plain text"


def test_errors_show_paths_relative_to_their_input_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_cometapi.allowlist import EXAMPLES_DIR, INPUT_ROOTS_ENV, shown_path

    work, extra = tmp_path / "work", tmp_path / "srv" / "inputs"
    work.mkdir()
    extra.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv(INPUT_ROOTS_ENV, str(extra))
    assert shown_path(work / "images" / "a.png") == "images/a.png"
    assert shown_path("images/a.png") == "images/a.png"
    assert shown_path(EXAMPLES_DIR / "product_banner.j2") == "examples/product_banner.j2"
    assert shown_path(extra / "x" / "b.png") == "<input root 1>/x/b.png"
    assert shown_path(tmp_path / "elsewhere" / "c.png") == ".../c.png"
    for shown in (shown_path(work / "a"), shown_path(extra / "b"), shown_path(tmp_path / "c")):
        assert str(tmp_path) not in shown
