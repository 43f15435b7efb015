"""Load input files (images to edit, masks, variable files) from bytes, a path, a URL or S3.

:func:`load_image_bytes` returns raw bytes and does not decode them
(:func:`prefect_cometapi.client.rules.inspect_image` does that). :func:`load_text` reads small text
files (CSV, JSONL, prompt templates) from a path, an ``s3://`` URI or a URL.

Mistakes the user can fix (missing file, 404, no such bucket or key, access denied, too large)
raise :class:`~prefect_cometapi.errors.ValidationError`; failures that may pass on their own
(connection errors, timeouts, 5xx, throttling) raise :class:`InputFetchError`, which is
retryable.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from prefect_cometapi.allowlist import check_input_url, confine_path
from prefect_cometapi.client.body import (
    ACCEPT_ENCODING,
    BodyReader,
    UnsupportedEncoding,
    check_size,
    read_path,
)
from prefect_cometapi.client.rules import MAX_IMAGE_BYTES
from prefect_cometapi.errors import InputFetchError, ValidationError, is_transient_status
from prefect_cometapi.s3.failures import classify

__all__ = [
    "InputFetchError",
    "load_bytes",
    "load_image_bytes",
    "load_text",
    "local_size",
    "parse_s3_uri",
]

DEFAULT_MAX_IMAGE_BYTES = MAX_IMAGE_BYTES
DEFAULT_MAX_TEXT_BYTES = 10 * 1024 * 1024
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
MAX_REDIRECTS = 5


def load_image_bytes(
    source: bytes | str | os.PathLike,
    *,
    s3_client: Any = None,
    endpoint_url: str | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    param: str = "image",
) -> bytes:
    """Get the bytes of an input image.

    Args:
        source: Bytes (returned as they are), a local path (``str`` or ``Path``; ``~``
            expanded), an ``https://`` or ``http://`` URL (redirects followed), or an
            ``s3://bucket/key`` URI.
        s3_client: The boto3 S3 client for ``s3://`` URIs; default: one from
            :func:`prefect_cometapi.s3.shared_s3_client`.
        endpoint_url: S3-compatible endpoint when no client is given (default: AWS, or
            ``AWS_ENDPOINT_URL_S3``).
        max_bytes: Refuse anything larger.
        param: The parameter name errors blame (``"image"``, ``"mask"``, ``"image[2]"``...).

    Returns:
        The raw bytes (not decoded, not checked to be an image).

    Raises:
        ValidationError: Not found, not readable, empty, too large, a 4xx answer, no such
            bucket/key, access denied, unsupported scheme.
        InputFetchError: A connection error, timeout, 5xx or throttling (retryable).
    """
    return load_bytes(
        source, s3_client=s3_client, endpoint_url=endpoint_url, max_bytes=max_bytes, param=param
    )


def load_text(
    source: str | os.PathLike,
    *,
    s3_client: Any = None,
    endpoint_url: str | None = None,
    max_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    encoding: str = "utf-8",
    param: str = "source",
) -> str:
    """Read a small text file (CSV, JSONL, a prompt template) from a path, S3 or a URL.

    Args:
        source: A local path, an ``s3://bucket/key`` URI or an ``http(s)://`` URL.
        s3_client: The boto3 S3 client for ``s3://`` URIs (default: the shared one).
        endpoint_url: S3-compatible endpoint when no client is given.
        max_bytes: Refuse anything larger.
        encoding: The text encoding; a UTF-8 byte-order mark is dropped.
        param: The parameter name errors blame.

    Returns:
        The text.

    Raises:
        ValidationError: As :func:`load_image_bytes`, or the bytes are not valid ``encoding``.
        InputFetchError: A transient failure (retryable).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise ValidationError(param, "give a path, an s3:// URI or a URL, not bytes", "<bytes>")
    data = load_bytes(
        source,
        s3_client=s3_client,
        endpoint_url=endpoint_url,
        max_bytes=max_bytes,
        param=param,
        allow_empty=True,
    )
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValidationError(
            param, f"{_shown(source)} is not valid {encoding} text ({exc}); save it as UTF-8"
        ) from None


def load_bytes(
    source: bytes | str | os.PathLike,
    *,
    s3_client: Any = None,
    endpoint_url: str | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    param: str = "image",
    allow_empty: bool = False,
) -> bytes:
    """Get bytes from bytes, a path, an ``http(s)://`` URL or an ``s3://`` URI.

    Args:
        source: See :func:`load_image_bytes`.
        s3_client: See :func:`load_image_bytes`.
        endpoint_url: See :func:`load_image_bytes`.
        max_bytes: Refuse anything larger.
        param: The parameter name errors blame.
        allow_empty: Accept zero bytes.

    Returns:
        The bytes.

    Raises:
        ValidationError: See :func:`load_image_bytes`.
        InputFetchError: See :func:`load_image_bytes`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        check_size(len(data), max_bytes, param, "the given bytes")
    elif isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        scheme = urlsplit(text).scheme.lower() if "://" in text else ""
        if scheme == "s3":
            data = _read_s3(text, s3_client, endpoint_url, max_bytes, param)
        elif scheme in ("http", "https"):
            data = _read_url(text, max_bytes, param)
        elif scheme == "file":
            confine_path(text, param)  # refuses every file:// URL
            raise AssertionError("unreachable")
        elif scheme:
            raise ValidationError(
                param,
                f"unsupported URL scheme {scheme!r}: use a local path, https://, http:// or "
                "s3://bucket/key",
                _safe_url(text),
            )
        else:
            if not text.strip():
                raise ValidationError(param, "the path is empty")
            data = read_path(confine_path(text, param), max_bytes, param)
    else:
        raise ValidationError(
            param,
            "give bytes, a path, an http(s):// URL or an s3:// URI",
            type(source).__name__,
        )
    if not data and not allow_empty:
        raise ValidationError(param, f"{_shown(source)} is empty (0 bytes)")
    return data


def local_size(source: Any, param: str = "image") -> int | None:
    """The size of a local file source, from ``stat`` (nothing is read).

    Args:
        source: Any source (bytes, a path, a URL...).
        param: The parameter errors blame.

    Returns:
        The size in bytes; ``None`` when ``source`` is not a local path or cannot be
        ``stat``-ed (reading it then raises the readable error).

    Raises:
        ValidationError: A path outside the allowed roots (see ``confine_path``).
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    text = os.fsdecode(os.fspath(source))
    if "://" in text or not text.strip() or text.lower().startswith("file:"):
        return None
    try:
        path = confine_path(text, param)
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def parse_s3_uri(uri: str, *, param: str = "image") -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key.

    Args:
        uri: The URI.
        param: The parameter name errors blame.

    Returns:
        ``(bucket, key)``.

    Raises:
        ValidationError: Not an ``s3://`` URI, or the bucket or key is missing.
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3":
        raise ValidationError(param, "expected an s3://bucket/key URI", uri)
    bucket = parts.netloc
    key = uri.split("://", 1)[1][len(bucket) :].lstrip("/")
    if not bucket or not key:
        raise ValidationError(param, "an S3 URI needs a bucket and a key: s3://bucket/key", uri)
    return bucket, key


def _shown(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the given bytes"
    text = os.fsdecode(os.fspath(source)) if isinstance(source, os.PathLike) else str(source)
    return _safe_url(text) if "://" in text else text


def _safe_url(url: str) -> str:
    """The URL without query string, fragment or user info (presigned signatures stay out)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _read_url(url: str, max_bytes: int, param: str) -> bytes:
    """Download ``url`` with the size cap applied while reading; every hop's host is checked.

    Each hop connects to the address its check resolved (:func:`_pinned_request`), so a name
    that resolves elsewhere on a second lookup (DNS rebinding) cannot reach an internal address.
    """
    shown = _safe_url(url)
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                request = _pinned_request(client, url, check_input_url(url, param))
                response = client.send(request, stream=True)
                try:
                    status = response.status_code
                    location = response.headers.get("location")
                    if 300 <= status < 400 and location:
                        url = str(httpx.URL(url).join(location))
                        continue
                    if status >= 400:
                        _raise_for_http(status, response.reason_phrase, shown, param)
                    length = response.headers.get("content-length")
                    if length and length.isdigit():
                        check_size(int(length), max_bytes, param, shown)
                    return _read_body(response, max_bytes, param, shown)
                finally:
                    response.close()
        raise ValidationError(param, f"{shown} redirects too many times")
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise InputFetchError(
            f"Could not download {param} from {shown}: {type(exc).__name__}. This is usually "
            "transient; check the URL and the network if it persists.",
            source=shown,
        ) from None
    except httpx.InvalidURL as exc:
        raise ValidationError(param, f"invalid URL: {exc}", shown) from None


def _pinned_request(client: httpx.Client, url: str, address: str | None) -> httpx.Request:
    """A GET of ``url`` that connects to ``address`` (``None``: by name), as if to its host.

    The ``Host`` header and TLS's server name (and certificate check) stay the URL's host.
    """
    target = httpx.URL(url)
    headers = {"Accept-Encoding": ACCEPT_ENCODING}
    if address is None:
        return client.build_request("GET", target, headers=headers)
    headers["Host"] = target.netloc.decode("ascii")
    return client.build_request(
        "GET",
        target.copy_with(host=address),
        headers=headers,
        extensions={"sni_hostname": target.host},
    )


class _InputBody(BodyReader):
    """The capped body reader with the errors of an input: what the parameter can fix."""

    def __init__(self, response: httpx.Response, cap: int, param: str, shown: str) -> None:
        self.param = param
        super().__init__(response, cap, float("inf"), shown)

    def unsupported(self, exc: UnsupportedEncoding) -> Exception:
        return ValidationError(self.param, f"{self.where} answered with {exc}, which is not read")

    def too_large(self, decoded: bool) -> Exception:
        if not decoded:
            size = self.response.num_bytes_downloaded
            return ValidationError(
                self.param,
                f"{self.where} is {size:,} bytes, more than the {self.cap:,} byte limit "
                "(raise max_bytes or shrink the file)",
            )
        return ValidationError(
            self.param,
            f"{self.where} is more than the {self.cap:,} byte limit once decompressed "
            "(raise max_bytes or shrink the file)",
        )

    def not_decodable(self) -> Exception:
        return ValidationError(self.param, f"{self.where} is not valid for its Content-Encoding")


def _read_body(response: httpx.Response, max_bytes: int, param: str, shown: str) -> bytes:
    """The body, decoded under ``max_bytes`` while it streams (a compression bomb stops there)."""
    reader = _InputBody(response, max_bytes, param, shown)
    for raw in response.iter_raw():
        reader.add(raw)
    return b"".join(reader.chunks)


def _raise_for_http(status: int, reason: str, shown: str, param: str) -> None:
    if is_transient_status(status):
        raise InputFetchError(
            f"Downloading {param} from {shown} failed: HTTP {status} {reason}. The server may be "
            "busy; this is retried.",
            source=shown,
            status_code=status,
        )
    hint = {
        401: "the URL needs credentials; use a public or presigned URL",
        403: "access is forbidden; if it is a presigned URL it may have expired, make a new one",
        404: "nothing there; check the URL (a presigned URL may also have expired)",
        410: "the file is gone; check the URL",
    }.get(status, "check the URL")
    raise ValidationError(param, f"URL {shown} answered HTTP {status} {reason}: {hint}")


def _read_s3(
    uri: str, s3_client: Any, endpoint_url: str | None, max_bytes: int, param: str
) -> bytes:
    bucket, key = parse_s3_uri(uri, param=param)
    if s3_client is None:
        from prefect_cometapi.s3.client import shared_s3_client

        s3_client = shared_s3_client(endpoint_url, None)
    try:
        answer = s3_client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"]
        try:
            length = answer.get("ContentLength")
            if isinstance(length, int):
                check_size(length, max_bytes, param, uri)
            data = body.read(max_bytes + 1)
        finally:
            body.close()
    except (ClientError, BotoCoreError) as exc:
        failure = classify(exc)
        if failure.retryable:
            raise InputFetchError(
                f"Reading {param} from {uri} failed: {failure.code or failure.status}: "
                f"{failure.message}. This is usually transient; check endpoint_url / "
                "AWS_ENDPOINT_URL_S3 if it persists.",
                source=uri,
                status_code=failure.status or None,
            ) from None
        rule = {
            "no_bucket": f"bucket {bucket!r} does not exist; check the bucket name",
            "no_key": f"no such key in bucket {bucket!r}; check the key (it is case-sensitive)",
            "denied": f"access denied ({failure.code}); the AWS credentials in use need "
            f"s3:GetObject on arn:aws:s3:::{bucket}/{key}",
            "no_credentials": "no AWS credentials found; set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or use an instance role",
        }.get(failure.kind)
        if rule is None:
            answered = failure.code or failure.status
            rule = f"S3 answered {answered}: {failure.message}" if failure.status else str(exc)
        raise ValidationError(param, f"{uri}: {rule}") from None
    check_size(len(data), max_bytes, param, uri)
    return data
