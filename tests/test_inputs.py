"""load_image_bytes / load_text from bytes, paths, a loopback HTTP server and moto's S3."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from prefect_cometapi.errors import ValidationError, is_retryable
from prefect_cometapi.inputs.fetch import (
    InputFetchError,
    load_image_bytes,
    load_text,
    parse_s3_uri,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # bytes only: nothing here decodes them


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- bytes and paths


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_pass_through(wrap: Any) -> None:
    assert load_image_bytes(wrap(PNG)) == PNG


def test_bytes_over_the_cap_or_empty_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        load_image_bytes(PNG, max_bytes=100)
    assert info.value.param == "image" and "limit" in str(info.value)
    with pytest.raises(ValidationError, match="empty"):
        load_image_bytes(b"")


def test_path_as_str_and_path(tmp_path: Path) -> None:
    target = tmp_path / "in.png"
    target.write_bytes(PNG)
    assert load_image_bytes(str(target)) == PNG
    assert load_image_bytes(target) == PNG
    with pytest.raises(ValidationError, match="file:// URLs are not accepted"):
        load_image_bytes(target.as_uri())  # a file:// URI is never read (issue 11)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(ValidationError) as info:
        load_image_bytes(str(missing), param="mask")
    assert info.value.param == "mask"
    assert "file not found" in str(info.value) and "nope.png" in str(info.value)
    assert str(tmp_path) not in str(info.value)  # no worker path in what a run shows (issue 23)


def test_directory_empty_file_and_too_big_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="directory"):
        load_image_bytes(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValidationError, match="empty"):
        load_image_bytes(empty)
    big = tmp_path / "big.png"
    big.write_bytes(PNG)
    with pytest.raises(ValidationError, match="limit"):
        load_image_bytes(big, max_bytes=len(PNG) - 1)
    assert load_image_bytes(big, max_bytes=len(PNG)) == PNG


def test_unreadable_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the OS refuses to read (works as root too, unlike a chmod 000 file)."""
    with pytest.raises(ValidationError, match="outside the folders"):
        load_image_bytes("/proc/self/mem")  # outside the allowed roots: refused unread
    monkeypatch.setenv("PREFECT_COMETAPI_INPUT_ROOTS", "/proc/self")
    real_path = r"could not be read from <input root 1>/mem"  # relative to its root
    with pytest.raises(ValidationError, match=real_path):
        load_image_bytes("/proc/self/mem")


@pytest.mark.parametrize("source", ["ftp://example.invalid/x.png", "", 42, None])
def test_unsupported_sources(source: Any) -> None:
    with pytest.raises(ValidationError) as info:
        load_image_bytes(source)
    assert info.value.param == "image"


# ---------------------------------------------------------------- HTTP


def test_http_url_is_downloaded(http_file_server: Any) -> None:
    url = http_file_server.add("/img/ok.png", PNG, headers={"Content-Type": "image/png"})
    assert load_image_bytes(url) == PNG


def test_redirects_are_followed(http_file_server: Any) -> None:
    target = http_file_server.add("/img/target.png", PNG)
    url = http_file_server.add("/img/moved.png", b"", status=302, headers={"Location": target})
    assert load_image_bytes(url) == PNG


def test_http_404_is_a_validation_error_without_the_query(http_file_server: Any) -> None:
    url = http_file_server.url("/img/missing.png") + "?X-Amz-Signature=topsecretsig"
    with pytest.raises(ValidationError) as info:
        load_image_bytes(url)
    message = str(info.value)
    assert "404" in message and "/img/missing.png" in message
    assert "topsecretsig" not in message
    assert not is_retryable(info.value)


def test_http_403_mentions_expired_presigned_urls(http_file_server: Any) -> None:
    url = http_file_server.add("/img/forbidden.png", b"no", status=403)
    with pytest.raises(ValidationError, match="403.*expired"):
        load_image_bytes(url)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_http_5xx_and_429_are_retryable(http_file_server: Any, status: int) -> None:
    url = http_file_server.add(f"/img/busy-{status}.png", b"busy", status=status)
    with pytest.raises(InputFetchError) as info:
        load_image_bytes(url)
    assert info.value.status_code == status and is_retryable(info.value)


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(InputFetchError) as info:
        load_image_bytes(f"http://127.0.0.1:{_free_port()}/x.png")
    assert is_retryable(info.value)


def test_http_size_cap_with_and_without_content_length(http_file_server: Any) -> None:
    url = http_file_server.add("/img/large.png", PNG)
    with pytest.raises(ValidationError, match="limit"):
        load_image_bytes(url, max_bytes=100)
    # No Content-Length (HTTP/1.0 style, body until close): the cap applies while streaming.
    streamed = http_file_server.add("/img/streamed.png", PNG, headers={"Connection": "close"})
    with pytest.raises(ValidationError, match="limit"):
        load_image_bytes(streamed, max_bytes=100)
    assert load_image_bytes(streamed) == PNG


def test_presigned_s3_url_works_over_http(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="p/in.png", Body=PNG)
    url = s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket, "Key": "p/in.png"}, ExpiresIn=60
    )
    assert load_image_bytes(url) == PNG


# ---------------------------------------------------------------- S3


def test_s3_uri_with_client_endpoint_and_env(
    s3_server: Any, s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="inputs/a b/photo.png", Body=PNG)
    uri = f"s3://{s3_bucket}/inputs/a b/photo.png"
    assert load_image_bytes(uri, s3_client=s3_client) == PNG
    assert load_image_bytes(uri, endpoint_url=s3_server.endpoint_url) == PNG
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    assert load_image_bytes(uri) == PNG


def test_s3_missing_key_and_bucket(s3_client: Any, s3_bucket: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_image_bytes(f"s3://{s3_bucket}/nope.png", s3_client=s3_client)
    assert "no such key" in str(info.value) and s3_bucket in str(info.value)
    with pytest.raises(ValidationError) as info:
        load_image_bytes("s3://bucket-that-does-not-exist-7/x.png", s3_client=s3_client)
    assert "does not exist" in str(info.value)
    assert "bucket-that-does-not-exist-7" in str(info.value)


def test_s3_size_cap(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="big.png", Body=PNG)
    with pytest.raises(ValidationError, match="limit"):
        load_image_bytes(f"s3://{s3_bucket}/big.png", s3_client=s3_client, max_bytes=10)


def test_s3_access_denied_and_throttling() -> None:
    client = boto3.client("s3", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
    stubber.add_client_error("get_object", "SlowDown", "Please reduce your request rate", 503)
    with stubber:
        with pytest.raises(ValidationError) as info:
            load_image_bytes("s3://locked-bucket/a.png", s3_client=client)
        assert "access denied" in str(info.value) and "s3:GetObject" in str(info.value)
        with pytest.raises(InputFetchError) as fetch:
            load_image_bytes("s3://busy-bucket/a.png", s3_client=client)
        assert is_retryable(fetch.value)


@pytest.mark.parametrize("uri", ["s3://", "s3://bucket", "s3://bucket/", "s3:///key"])
def test_malformed_s3_uris(uri: str) -> None:
    with pytest.raises(ValidationError):
        load_image_bytes(uri)


def test_parse_s3_uri_keeps_the_key_verbatim() -> None:
    assert parse_s3_uri("s3://b-1/a/b?c#d.png") == ("b-1", "a/b?c#d.png")


# ---------------------------------------------------------------- text


def test_load_text_from_path_and_s3(tmp_path: Path, s3_client: Any, s3_bucket: str) -> None:
    csv = "sku,name\n1,Café\n"
    path = tmp_path / "vars.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv.encode())  # Excel's BOM is dropped
    assert load_text(path) == csv
    assert load_text(str(path)) == csv
    s3_client.put_object(Bucket=s3_bucket, Key="vars/items.jsonl", Body=b'{"a": 1}\n')
    assert load_text(f"s3://{s3_bucket}/vars/items.jsonl", s3_client=s3_client) == '{"a": 1}\n'
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert load_text(empty) == ""


def test_load_text_errors(tmp_path: Path, s3_client: Any, s3_bucket: str) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValidationError, match="UTF-8"):
        load_text(latin)
    assert load_text(latin, encoding="latin-1") == "café"
    with pytest.raises(ValidationError) as info:
        load_text(tmp_path / "missing.csv", param="variables_file")
    assert info.value.param == "variables_file"
    with pytest.raises(ValidationError, match="no such key"):
        load_text(f"s3://{s3_bucket}/missing.csv", s3_client=s3_client)
    with pytest.raises(ValidationError):
        load_text(b"a,b")  # type: ignore[arg-type]
