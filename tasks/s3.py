"""Upload a :class:`~prefect_cometapi.models.GeneratedImage` to S3 (or any S3-compatible store).

The task :func:`upload_to_s3` is a thin Prefect wrapper around plain functions that can be used
without Prefect:

* :func:`make_s3_client`: a boto3 S3 client with bounded retries and timeouts, from the standard
  credential chain, an explicit ``endpoint_url`` (MinIO, R2, moto) or a prefect-aws
  ``AwsCredentials`` block.
* :func:`validate_bucket_name` and :func:`render_key`: checked before any request is sent; a key
  can never escape its prefix.
* :func:`upload_image`: idempotent (an object with the same sha256 at the key is not rewritten),
  checksummed (S3 verifies a SHA-256 of the bytes), multipart for large files (a failed multipart
  upload is aborted, leaving nothing behind), optional presigned URL.

Attempt budget: botocore retries each request itself (``standard`` mode,
:data:`S3_MAX_ATTEMPTS` attempts: connection errors, 5xx, throttling); the Prefect task then
retries the whole upload :data:`UPLOAD_TASK_RETRIES` times, only when the error is transient.
Worst case: ``S3_MAX_ATTEMPTS * (UPLOAD_TASK_RETRIES + 1)`` attempts of one request.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from prefect_cometapi.errors import (
    CometAPIError,
    S3AccessDeniedError,
    S3BucketNotFoundError,
    S3UploadError,
    ValidationError,
    is_retryable,
    redact,
)
from prefect_cometapi.models import GeneratedImage

__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "KEY_PLACEHOLDERS",
    "S3AccessDeniedError",
    "S3BucketNotFoundError",
    "S3Object",
    "S3UploadError",
    "make_s3_client",
    "render_key",
    "retry_if_transient",
    "s3_config",
    "upload_image",
    "upload_to_s3",
    "validate_bucket_name",
    "validate_key",
]

MiB = 1024 * 1024
DEFAULT_KEY_TEMPLATE = "{prefix}{date}/{sha256}.{ext}"
"""Default object key: ``<prefix>YYYY-MM-DD/<sha256>.<ext>`` (UTC date); same image, same key."""
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB
"""S3's smallest allowed part (all parts but the last)."""
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""SigV4 presigned URLs live at most 7 days."""
MAX_METADATA_BYTES = 2048
"""S3 caps user metadata (keys + values) at 2 KB."""
PROMPT_METADATA_CHARS = 200
S3_MAX_ATTEMPTS = 4
"""Attempts botocore makes per request, the first included (``standard`` retry mode)."""
UPLOAD_TASK_RETRIES = 2
S3_CONNECT_TIMEOUT = 10.0
S3_READ_TIMEOUT = 60.0
S3_MAX_POOL_CONNECTIONS = 100
"""HTTP connections a client keeps: one client is shared by a batch's items in flight (up to
64 requests plus the items delivering), and botocore's default of 10 would drop and reopen them."""

KEY_PLACEHOLDERS: tuple[str, ...] = tuple(
    "prefix date year month day sha256 sha8 ext format model width height size index quality "
    "slug".split()
)
"""Placeholders :func:`render_key` knows, besides the caller's own ``**extra`` names."""

_EXTENSIONS = {"jpeg": "jpg"}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9\-]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET_BAD_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_BAD_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")
_TRANSIENT_CODES = frozenset(
    "InternalError ServiceUnavailable SlowDown Throttling ThrottlingException RequestTimeout "
    "RequestTimeoutException RequestLimitExceeded TooManyRequestsException BadDigest "
    "XAmzContentSHA256Mismatch OperationAborted".split()
)
_ACCESS_CODES = frozenset(
    "AccessDenied AllAccessDisabled InvalidAccessKeyId SignatureDoesNotMatch ExpiredToken "
    "InvalidToken TokenRefreshRequired AccountProblem 403".split()
)


@dataclass(frozen=True)
class S3Object:
    """Where an image landed.

    Attributes:
        bucket: The bucket.
        key: The object key.
        uri: ``s3://bucket/key``.
        size: Size in bytes.
        sha256: Hex SHA-256 of the bytes (also stored as ``x-amz-meta-sha256``).
        content_type: The ``Content-Type`` stored with the object.
        etag: The object's ETag (without quotes), if S3 returned one.
        presigned_url: A presigned GET URL, if one was asked for.
        existed: ``True`` when an identical object was already there and nothing was uploaded.
        multipart: ``True`` when the bytes went up as a multipart upload.
        version_id: The version id, on versioned buckets.
        endpoint_url: The endpoint used, for S3-compatible stores (``None`` for AWS).
    """

    bucket: str
    key: str
    uri: str
    size: int
    sha256: str
    content_type: str
    etag: str | None = None
    presigned_url: str | None = None
    existed: bool = False
    multipart: bool = False
    version_id: str | None = None
    endpoint_url: str | None = None


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def s3_config(**overrides: Any) -> Config:
    """The botocore ``Config`` every client of ours uses.

    Args:
        **overrides: Any ``botocore.config.Config`` argument to change.

    Returns:
        ``standard`` retries (:data:`S3_MAX_ATTEMPTS` attempts: connection errors, 5xx and
        throttling), bounded connect/read timeouts, SigV4 signing (needed for presigned URLs) and
        a connection pool of :data:`S3_MAX_POOL_CONNECTIONS`.
    """
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        "connect_timeout": S3_CONNECT_TIMEOUT,
        "read_timeout": S3_READ_TIMEOUT,
        "signature_version": "s3v4",
        "max_pool_connections": S3_MAX_POOL_CONNECTIONS,
    }
    options.update(overrides)
    return Config(**options)


def make_s3_client(
    endpoint_url: str | None = None,
    region_name: str | None = None,
    aws_credentials: Any | None = None,
) -> Any:
    """Build a boto3 S3 client.

    Args:
        endpoint_url: An S3-compatible endpoint (MinIO, Cloudflare R2, moto...). ``None`` uses
            AWS, or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` if set (boto3 honours them).
        region_name: The region; ``None`` uses the standard chain (``AWS_DEFAULT_REGION``,
            the profile, or the credentials block's own region).
        aws_credentials: A prefect-aws ``AwsCredentials`` block (``pip install
            prefect-cometapi[aws]``), or any object with ``get_boto3_session()``, or a
            ``boto3.Session``. ``None`` uses boto3's standard credential chain. The block's
            ``aws_client_parameters`` (endpoint, verify, config) are honoured; an explicit
            ``endpoint_url`` wins.

    Returns:
        A boto3 S3 client with :func:`s3_config` (the block's own ``Config`` merged on top).

    Raises:
        TypeError: ``aws_credentials`` is none of the accepted kinds.
    """
    config = s3_config()
    kwargs: dict[str, Any] = {}
    if aws_credentials is None:
        session: Any = boto3.session.Session()
    elif isinstance(aws_credentials, boto3.session.Session):
        session = aws_credentials
    elif callable(getattr(aws_credentials, "get_boto3_session", None)):
        session = aws_credentials.get_boto3_session()
        params = getattr(aws_credentials, "aws_client_parameters", None)
        overrides = params.get_params_override() if params is not None else {}
        if isinstance(overrides, Mapping):
            block_config = overrides.get("config")
            if isinstance(block_config, Config):
                config = config.merge(block_config)
            kwargs.update(
                {k: v for k, v in overrides.items() if k in ("endpoint_url", "verify", "use_ssl")}
            )
    else:
        raise TypeError(
            "aws_credentials must be a prefect_aws AwsCredentials block (or any object with "
            f"get_boto3_session()) or a boto3.Session, got {type(aws_credentials).__name__}"
        )
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if region_name:
        kwargs["region_name"] = region_name
    return session.client("s3", config=config, **kwargs)


# --------------------------------------------------------------------------------------------
# Validation and keys
# --------------------------------------------------------------------------------------------


def validate_bucket_name(bucket: str) -> str:
    """Check a bucket name against S3's naming rules (general purpose buckets).

    Args:
        bucket: The bucket name.

    Returns:
        The name, unchanged.

    Raises:
        ValidationError: ``param="bucket"`` naming the rule it breaks.
    """

    def bad(rule: str) -> ValidationError:
        return ValidationError("bucket", rule, bucket)

    if not isinstance(bucket, str) or not bucket:
        raise bad("give the bucket name, e.g. 'my-images' (not an s3:// URI)")
    if bucket.startswith("s3://") or "/" in bucket:
        raise bad("give the bare bucket name; put folders in 'prefix' or the key template")
    if not 3 <= len(bucket) <= 63:
        raise bad("S3 bucket names are 3 to 63 characters long")
    if not _BUCKET_RE.match(bucket):
        raise bad(
            "S3 bucket names use only lowercase letters, digits, dots and hyphens, and start "
            "and end with a letter or digit"
        )
    if ".." in bucket:
        raise bad("S3 bucket names must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        raise bad("S3 bucket names must not look like an IP address")
    if bucket.startswith(_BUCKET_BAD_PREFIXES) or bucket.endswith(_BUCKET_BAD_SUFFIXES):
        raise bad("S3 reserves this bucket name prefix/suffix")
    return bucket


def _check_path(value: str, param: str, *, allow_trailing_slash: bool) -> None:
    """Refuse anything that could escape a prefix or confuse S3 tools."""

    def bad(rule: str) -> ValidationError:
        return ValidationError(param, rule, value)

    if _CONTROL_RE.search(value):
        raise bad("control characters (newlines, tabs, NUL...) are not allowed in S3 keys")
    if "\\" in value:
        raise bad("backslashes are not allowed; use '/' to separate folders")
    if value.startswith("/"):
        raise bad("must be relative: remove the leading '/'")
    segments = value.split("/")
    if allow_trailing_slash and value.endswith("/"):
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise bad("empty, '.' and '..' path segments are not allowed (no '//' either)")


def validate_key(key: str, *, param: str = "key") -> str:
    """Check a complete object key.

    Args:
        key: The object key.
        param: The parameter name to blame in the error.

    Returns:
        The key, unchanged.

    Raises:
        ValidationError: Empty, absolute, containing ``..``/``.``/empty segments, backslashes or
            control characters, ending in ``/``, or longer than 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise ValidationError(param, "the object key is empty", key)
    _check_path(key, param, allow_trailing_slash=False)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValidationError(param, f"S3 keys are at most {MAX_KEY_BYTES} bytes (UTF-8)", key)
    return key


def normalize_prefix(prefix: str) -> str:
    """Validate a key prefix and make it end in ``/`` (``"banners"`` -> ``"banners/"``).

    Args:
        prefix: ``""`` or a relative folder path.

    Returns:
        ``""`` or the prefix with exactly one trailing ``/``.

    Raises:
        ValidationError: ``param="prefix"`` if it is absolute or could escape (``..``).
    """
    if prefix is None or prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise ValidationError("prefix", "must be a string", prefix)
    _check_path(prefix, "prefix", allow_trailing_slash=True)
    return prefix if prefix.endswith("/") else prefix + "/"


def ascii_text(text: str, limit: int | None = None) -> str:
    """Printable-ASCII version of ``text`` (transliterated where possible, whitespace collapsed).

    Args:
        text: Any text.
        limit: Cut to at most this many characters (an ellipsis ``...`` marks the cut).

    Returns:
        Text made only of printable ASCII characters, safe for S3 metadata and HTTP headers.
    """
    try:
        from text_unidecode import unidecode  # installed with prefect (via python-slugify)

        text = unidecode(text)
    except ImportError:  # pragma: no cover - fallback without transliteration tables
        text = unicodedata.normalize("NFKD", text)
    text = text.encode("ascii", "ignore").decode("ascii")
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)].rstrip() + "..."
    return text


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text(text).lower()).strip("-")
    return slug[:limit].rstrip("-") or "image"


def render_key(
    template: str,
    image: GeneratedImage,
    /,
    *,
    prefix: str = "",
    now: datetime | None = None,
    **extra: Any,
) -> str:
    """Render an object key from a template.

    Placeholders: ``{prefix}``, ``{date}`` (UTC ``YYYY-MM-DD``), ``{year}``, ``{month}``,
    ``{day}``, ``{sha256}``, ``{sha8}`` (first 8 hex digits), ``{ext}`` (``png``/``jpg``/
    ``webp``), ``{format}``, ``{model}``, ``{width}``, ``{height}``, ``{size}`` (``WxH``),
    ``{index}``, ``{quality}``, ``{slug}`` (ASCII slug of the prompt) and any name passed in
    ``extra`` (e.g. ``item_id``; an ``extra`` name also overrides a built-in one, e.g. a fixed
    ``date`` for a scheduled run). Format specs work: ``{index:03d}``.

    A non-empty ``prefix`` gets a trailing ``/``; if the template has no ``{prefix}`` it is put in
    front. The result must stay inside the prefix.

    Args:
        template: E.g. :data:`DEFAULT_KEY_TEMPLATE`.
        image: The image being stored.
        prefix: A folder for every key, e.g. ``"banners/"``.
        now: The time used for the date placeholders (default: now, UTC).
        **extra: More placeholder values.

    Returns:
        The key.

    Raises:
        ValidationError: ``param="key_template"`` for an unknown placeholder, a malformed
            template or a key that escapes the prefix (absolute, ``..``, backslash, empty
            segment, control characters, over 1024 bytes); ``param="prefix"`` for a bad prefix.
    """
    if not isinstance(template, str) or not template.strip():
        raise ValidationError("key_template", "the key template is empty", template)
    norm_prefix = normalize_prefix(prefix)
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    values: dict[str, Any] = {
        "date": moment.strftime("%Y-%m-%d"),
        "year": moment.strftime("%Y"),
        "month": moment.strftime("%m"),
        "day": moment.strftime("%d"),
        "sha256": image.sha256,
        "sha8": image.sha256[:8],
        "ext": _EXTENSIONS.get(image.format, image.format),
        "format": image.format,
        "model": image.model,
        "width": image.width,
        "height": image.height,
        "size": image.size,
        "index": image.index,
        "quality": str((image.params or {}).get("quality") or "auto"),
        "slug": _slug(image.prompt or ""),
    }
    for name, value in extra.items():
        if name == "prefix":
            raise ValidationError("key_vars", "'prefix' is set with the prefix parameter", name)
        if not _IDENT_RE.match(name):
            raise ValidationError("key_vars", "placeholder names are Python identifiers", name)
        values[name] = value
    values["prefix"] = norm_prefix

    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValidationError("key_template", f"malformed template: {exc}", template) from None
    for _literal, field, spec, _conversion in parsed:
        if field is None:
            continue
        if not _IDENT_RE.match(field):
            raise ValidationError(
                "key_template",
                "placeholders are plain names like {sha256} (no positional, '.' or '[]' access)",
                template,
            )
        if spec and "{" in spec:
            raise ValidationError("key_template", "nested placeholders are not allowed", template)
        if field not in values:
            known = ", ".join(sorted(set(KEY_PLACEHOLDERS) | set(extra)))
            raise ValidationError(
                "key_template",
                f"unknown placeholder {{{field}}}; known: {known} (pass more in key_vars)",
                template,
            )
        used.add(field)
    try:
        key = template.format_map(values)
    except (ValueError, TypeError) as exc:
        raise ValidationError("key_template", f"cannot render: {exc}", template) from None
    if norm_prefix and "prefix" not in used:
        key = norm_prefix + key
    validate_key(key, param="key_template")
    if not key.startswith(norm_prefix):  # pragma: no cover - guarded by the checks above
        raise ValidationError("key_template", "the key must stay inside the prefix", key)
    return key


# --------------------------------------------------------------------------------------------
# Upload
# --------------------------------------------------------------------------------------------


def build_metadata(
    image: GeneratedImage, metadata_extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The user metadata stored with an image (``x-amz-meta-*``), all ASCII.

    Holds ``model``, ``size``, ``quality`` (when known), ``sha256``, ``source-sha256`` (for an
    upscale) and ``prompt`` (an ASCII excerpt of at most :data:`PROMPT_METADATA_CHARS`
    characters). Nothing else from ``image.params`` and never a credential.

    Args:
        image: The image.
        metadata_extra: More entries; keys are lowercased, values made ASCII and scrubbed of
            anything that looks like a key or bearer token.

    Returns:
        The metadata dict.

    Raises:
        ValidationError: ``param="metadata_extra"`` for a bad key or metadata over 2 KB.
    """
    meta: dict[str, str] = {
        "model": ascii_text(str(image.model), 100),
        "size": image.size,
        "sha256": image.sha256,
    }
    quality = (image.params or {}).get("quality")
    if quality:
        meta["quality"] = ascii_text(str(quality), 20)
    if image.source_sha256:
        meta["source-sha256"] = image.source_sha256
    meta["prompt"] = ascii_text(redact(image.prompt or ""), PROMPT_METADATA_CHARS)
    for raw_key, value in (metadata_extra or {}).items():
        key = str(raw_key).lower()
        if not _META_KEY_RE.match(key):
            raise ValidationError(
                "metadata_extra",
                "metadata keys use lowercase letters, digits and hyphens",
                raw_key,
            )
        if value is None:
            continue
        meta[key] = ascii_text(redact(str(value)), 512)
    total = sum(len(k) + len(v) for k, v in meta.items())
    if total > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata_extra", f"S3 user metadata is limited to {MAX_METADATA_BYTES} bytes", total
        )
    return meta


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _endpoint(s3_client: Any) -> str | None:
    url = getattr(getattr(s3_client, "meta", None), "endpoint_url", None)
    if not url or ".amazonaws.com" in url:
        return None
    return str(url)


def _error_code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    return str(error.get("Code", "")), int(meta.get("HTTPStatusCode") or 0)


def s3_error(exc: BaseException, bucket: str, key: str | None, action: str) -> CometAPIError:
    """Translate a boto3/botocore exception into one of ours, with a message saying what to do.

    Args:
        exc: What boto3 raised.
        bucket: The bucket involved.
        key: The key involved, if any.
        action: What we were doing, e.g. ``"upload"``.

    Returns:
        :class:`S3BucketNotFoundError`, :class:`S3AccessDeniedError` or :class:`S3UploadError`
        (``retryable`` for connection errors, timeouts, 5xx and throttling).
    """
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, CometAPIError):
        return exc
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        message = redact(str(exc.response.get("Error", {}).get("Message", "") or code))
        if code == "NoSuchBucket":
            return S3BucketNotFoundError(bucket, key=key, action=action)
        if code in _ACCESS_CODES or status == 403:
            return S3AccessDeniedError(bucket, key=key, action=action, code=code, detail=message)
        transient = code in _TRANSIENT_CODES or status >= 500 or status in (408, 429)
        return S3UploadError(
            f"S3 {action} of {where} failed: {code or status} {message}".rstrip(),
            bucket=bucket,
            key=key,
            code=code or None,
            status_code=status or None,
            retryable=transient,
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3AccessDeniedError(
            bucket, key=key, action=action, code=type(exc).__name__, detail=str(exc)
        )
    if isinstance(
        exc,
        (
            EndpointConnectionError,
            ConnectionClosedError,
            ConnectTimeoutError,
            ReadTimeoutError,
            HTTPClientError,
        ),
    ):
        return S3UploadError(
            f"S3 {action} of {where} failed: could not reach the S3 endpoint ({exc}). This is "
            "usually transient; if it persists check endpoint_url / AWS_ENDPOINT_URL_S3 and the "
            "network.",
            bucket=bucket,
            key=key,
            code=type(exc).__name__,
            retryable=True,
        )
    if isinstance(exc, BotoCoreError):
        return S3UploadError(
            f"S3 {action} of {where} failed: {exc}", bucket=bucket, key=key, retryable=False
        )
    return S3UploadError(
        f"S3 {action} of {where} failed: {type(exc).__name__}: {exc}",
        bucket=bucket,
        key=key,
        retryable=False,
    )


def _head(s3_client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``head_object``, or ``None`` when there is nothing (or we may not look)."""
    try:
        return s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        code, status = _error_code(exc)
        if status == 404 or code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return None  # a missing bucket is reported by the upload itself, with its name
        if status == 403 or code in _ACCESS_CODES:
            # Write-only credentials (no s3:GetObject / s3:ListBucket) cannot look first:
            # upload anyway; the upload reports a real AccessDenied.
            return None
        raise s3_error(exc, bucket, key, "lookup") from None
    except (BotoCoreError, ValueError) as exc:
        raise s3_error(exc, bucket, key, "lookup") from None


def _same_object(head: Mapping[str, Any], image: GeneratedImage) -> bool:
    meta = {str(k).lower(): v for k, v in (head.get("Metadata") or {}).items()}
    if meta.get("sha256") == image.sha256:
        return True
    checksum = head.get("ChecksumSHA256")
    return bool(checksum) and checksum == _b64_sha256(image.data)


def _put(
    s3_client: Any, image: GeneratedImage, bucket: str, key: str, metadata: dict[str, str]
) -> dict[str, Any]:
    return s3_client.put_object(
        Bucket=bucket,
        Key=key,
        Body=image.data,
        ContentType=image.content_type,
        Metadata=metadata,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=_b64_sha256(image.data),
    )


def _multipart(
    s3_client: Any,
    image: GeneratedImage,
    bucket: str,
    key: str,
    metadata: dict[str, str],
    part_size: int,
) -> dict[str, Any]:
    """Multipart upload with a SHA-256 checksum per part; aborted on any failure."""
    data = image.data
    part_size = max(part_size, MIN_PART_SIZE, -(-len(data) // MAX_PARTS))
    upload_id = s3_client.create_multipart_upload(
        Bucket=bucket,
        Key=key,
        ContentType=image.content_type,
        Metadata=metadata,
        ChecksumAlgorithm="SHA256",
    )["UploadId"]
    try:
        parts: list[dict[str, Any]] = []
        for number, start in enumerate(range(0, len(data), part_size), start=1):
            chunk = data[start : start + part_size]
            checksum = _b64_sha256(chunk)
            answer = s3_client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
        return s3_client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        try:
            s3_client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as abort_exc:  # noqa: BLE001 - the original error matters more
            _warn(
                f"Could not abort multipart upload {upload_id} of s3://{bucket}/{key} "
                f"({type(abort_exc).__name__}); a bucket lifecycle rule "
                "(AbortIncompleteMultipartUpload) will clean it up."
            )
        raise


def _warn(message: str) -> None:
    try:
        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 - outside a Prefect run
        import logging

        logging.getLogger(__name__).warning(message)


def presign(s3_client: Any, bucket: str, key: str, expires: int) -> str:
    """A presigned GET URL for an object.

    Args:
        s3_client: A boto3 S3 client.
        bucket: The bucket.
        key: The key.
        expires: Lifetime in seconds (1 .. 604800).

    Returns:
        The URL (it carries a signature: treat it as a secret until it expires).
    """
    return s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires)
    )


def _check_presign(presign_expires: int | None) -> None:
    if presign_expires is None:
        return
    if (
        isinstance(presign_expires, bool)
        or not isinstance(presign_expires, int)
        or not 1 <= presign_expires <= MAX_PRESIGN_SECONDS
    ):
        raise ValidationError(
            "presign_expires",
            f"seconds between 1 and {MAX_PRESIGN_SECONDS} (7 days), or None for no URL",
            presign_expires,
        )


def upload_image(
    image: GeneratedImage,
    bucket: str,
    key: str,
    *,
    s3_client: Any,
    metadata_extra: Mapping[str, Any] | None = None,
    presign_expires: int | None = None,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    part_size: int = DEFAULT_PART_SIZE,
) -> S3Object:
    """Store an image at ``s3://bucket/key``, once.

    If an object with the same sha256 is already at the key nothing is uploaded
    (``existed=True``). Otherwise the bytes go up with their ``Content-Type``, a SHA-256 checksum
    S3 verifies, and the metadata of :func:`build_metadata`; files of ``multipart_threshold``
    bytes or more go up in parts (each with its own SHA-256), and a failed multipart upload is
    aborted so no partial object or pending upload is left.

    Args:
        image: The image.
        bucket: The bucket (must exist).
        key: The object key (see :func:`render_key`).
        s3_client: A boto3 S3 client (see :func:`make_s3_client`).
        metadata_extra: More ``x-amz-meta-*`` entries.
        presign_expires: If set, also return a presigned GET URL valid this many seconds.
        multipart_threshold: Size from which a multipart upload is used.
        part_size: Multipart part size (at least 5 MiB, S3's minimum).

    Returns:
        The :class:`S3Object`.

    Raises:
        ValidationError: Bad bucket, key, metadata or ``presign_expires`` (nothing was sent).
        S3BucketNotFoundError: The bucket does not exist.
        S3AccessDeniedError: The credentials may not write there (or there are none).
        S3UploadError: Anything else; ``retryable`` for transient failures.
    """
    validate_bucket_name(bucket)
    validate_key(key)
    _check_presign(presign_expires)
    if not isinstance(multipart_threshold, int) or multipart_threshold < 1:
        raise ValidationError(
            "multipart_threshold", "a positive number of bytes", multipart_threshold
        )
    metadata = build_metadata(image, metadata_extra)
    endpoint = _endpoint(s3_client)
    sha256 = hashlib.sha256(image.data).hexdigest()
    if sha256 != image.sha256:
        raise ValidationError(
            "image", "image.sha256 does not match its bytes; build it with with_data()", sha256
        )

    head = _head(s3_client, bucket, key)
    existed = head is not None and _same_object(head, image)
    multipart = False
    version_id: str | None = None
    if existed:
        assert head is not None
        etag = head.get("ETag")
        size = int(head.get("ContentLength") or len(image.data))
        content_type = str(head.get("ContentType") or image.content_type)
        version_id = head.get("VersionId")
    else:
        multipart = len(image.data) >= multipart_threshold
        try:
            if multipart:
                answer = _multipart(s3_client, image, bucket, key, metadata, part_size)
            else:
                answer = _put(s3_client, image, bucket, key, metadata)
        except (ClientError, BotoCoreError, ValueError) as exc:
            raise s3_error(exc, bucket, key, "upload") from None
        etag = answer.get("ETag")
        version_id = answer.get("VersionId")
        size = len(image.data)
        content_type = image.content_type

    url = None
    if presign_expires is not None:
        try:
            url = presign(s3_client, bucket, key, presign_expires)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, bucket, key, "presign") from None
    return S3Object(
        bucket=bucket,
        key=key,
        uri=f"s3://{bucket}/{key}",
        size=size,
        sha256=image.sha256,
        content_type=content_type,
        etag=str(etag).strip('"') if etag else None,
        presigned_url=url,
        existed=existed,
        multipart=multipart,
        version_id=version_id,
        endpoint_url=endpoint,
    )


# --------------------------------------------------------------------------------------------
# Prefect task
# --------------------------------------------------------------------------------------------


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` of :func:`upload_to_s3`: retry only transient S3 failures.

    Args:
        task: The task.
        task_run: The task run.
        state: Its ``Failed`` state.

    Returns:
        ``True`` for connection errors, timeouts, 5xx and throttling; ``False`` for a missing
        bucket, denied access, validation errors and anything unknown.
    """
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # noqa: BLE001
            exc = raised
    return isinstance(exc, BaseException) and is_retryable(exc)


@task(
    name="upload-to-s3",
    tags=["s3"],
    retries=UPLOAD_TASK_RETRIES,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,  # idempotency comes from S3 itself (same sha256 at the key)
)
def upload_to_s3(
    image: GeneratedImage,
    bucket: str,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    prefix: str = "",
    endpoint_url: str | None = None,
    aws_credentials: Any | None = None,
    presign_expires: int | None = None,
    key_vars: dict[str, Any] | None = None,
) -> S3Object:
    """Upload a generated image to S3 (idempotent, checksummed, multipart when large).

    The bucket name and the key are checked before anything is sent. Re-running with the same
    image writes the same key (the default template holds the UTC date and the sha256) and does
    not upload again.

    Args:
        image: The image (from ``generate_image``, ``edit_image`` or ``upscale_image``).
        bucket: The bucket name (it must exist).
        key_template: The key template; see :func:`render_key` for placeholders.
        prefix: A folder for the key, e.g. ``"banners/"``.
        endpoint_url: An S3-compatible endpoint (MinIO, R2...); default AWS or
            ``AWS_ENDPOINT_URL_S3``.
        aws_credentials: A prefect-aws ``AwsCredentials`` block; default: boto3's standard chain.
        presign_expires: If set, also return a presigned GET URL valid this many seconds.
        key_vars: More placeholder values for the template (e.g. ``{"item_id": "sku-42"}``).

    Returns:
        The :class:`S3Object` (``existed=True`` when nothing had to be uploaded).
    """
    validate_bucket_name(bucket)
    _check_presign(presign_expires)
    key_vars = dict(key_vars or {})
    for reserved in ("prefix", "now"):
        if reserved in key_vars:
            raise ValidationError(
                "key_vars", f"{reserved!r} cannot be a key variable (use the parameter)", reserved
            )
    key = render_key(key_template, image, prefix=prefix, **key_vars)
    s3_client = make_s3_client(endpoint_url=endpoint_url, aws_credentials=aws_credentials)
    result = upload_image(image, bucket, key, s3_client=s3_client, presign_expires=presign_expires)
    try:
        logger = get_run_logger()
    except Exception:  # noqa: BLE001 - called via .fn outside a run
        return result
    verb = "already there, not re-uploaded" if result.existed else "uploaded"
    logger.info("%s (%d bytes) %s", result.uri, result.size, verb)
    return result
