"""Upload primitives: store an image at ``s3://bucket/key`` once, checksummed, multipart when large.

:func:`upload_image` is idempotent (an object with the same sha256 at the key is not rewritten),
checksummed (S3 verifies a SHA-256 of the bytes) and multipart for large files (a failed
multipart upload is aborted, leaving nothing behind); it can also return a presigned URL.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect.logging import get_run_logger

from prefect_cometapi.errors import ValidationError
from prefect_cometapi.models import DumpMode, GeneratedImage, JSONForm
from prefect_cometapi.s3.failures import classify, s3_error
from prefect_cometapi.s3.keys import validate_bucket_name, validate_key
from prefect_cometapi.s3.metadata import build_metadata

__all__ = ["UPLOAD_RETRY_DELAYS", "S3Object", "check_presign_expires", "presign", "upload_image"]

MiB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 8 * MiB
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB
"""S3's smallest allowed part (all parts but the last)."""
MAX_PARTS = 10_000
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""SigV4 presigned URLs live at most 7 days."""
UPLOAD_RETRY_DELAYS = (2.0, 10.0)
"""Seconds before each further attempt of an upload that failed transiently (after botocore's
own retries): the ``upload_to_s3`` task's retries and the flows' delivery use them."""


@dataclass(frozen=True)
class S3Object(JSONForm):
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

    def _dump(self, mode: DumpMode, include_data: bool) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def _load(cls, data: dict[str, Any]) -> S3Object:
        return cls(**data)


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _endpoint(s3_client: Any) -> str | None:
    url = getattr(getattr(s3_client, "meta", None), "endpoint_url", None)
    if not url or ".amazonaws.com" in url:
        return None
    return str(url)


def _head(s3_client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``head_object``, or ``None`` when there is nothing (or we may not look)."""
    try:
        return s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        # A missing bucket is reported by the upload itself, with its name. Write-only
        # credentials (no s3:GetObject / s3:ListBucket) cannot look first: upload anyway, and
        # the upload reports a real AccessDenied.
        if classify(exc).kind in ("no_key", "no_bucket", "denied"):
            return None
        raise s3_error(exc, bucket, key, "lookup") from None
    except (BotoCoreError, ValueError) as exc:
        raise s3_error(exc, bucket, key, "lookup") from None


def _b64_of_hex(sha256: str) -> str:
    """S3's ``ChecksumSHA256`` form (base64 of the digest) of a hex SHA-256 already checked."""
    return base64.b64encode(bytes.fromhex(sha256)).decode("ascii")


def _same_object(head: Mapping[str, Any], image: GeneratedImage) -> bool:
    meta = {str(k).lower(): v for k, v in (head.get("Metadata") or {}).items()}
    if meta.get("sha256") == image.sha256:
        return True
    checksum = head.get("ChecksumSHA256")
    return bool(checksum) and checksum == _b64_of_hex(image.sha256)


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
        ChecksumSHA256=_b64_of_hex(image.sha256),  # upload_image checked it against the bytes
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


def check_presign_expires(presign_expires: int | None) -> None:
    """Check a presigned URL lifetime.

    Args:
        presign_expires: Seconds (1 .. 604800), or ``None`` for no URL.

    Raises:
        ValidationError: ``param="presign_expires"`` when out of range.
    """
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
    S3 verifies, and the metadata of :func:`~prefect_cometapi.s3.metadata.build_metadata`; files
    of ``multipart_threshold`` bytes or more go up in parts (each with its own SHA-256), and a
    failed multipart upload is aborted so no partial object or pending upload is left.

    Args:
        image: The image.
        bucket: The bucket (must exist).
        key: The object key (see :func:`~prefect_cometapi.s3.keys.render_key`).
        s3_client: A boto3 S3 client (see :func:`~prefect_cometapi.s3.client.make_s3_client`).
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
    check_presign_expires(presign_expires)
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
