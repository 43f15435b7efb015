"""The one classifier of S3 failures, and their translation into prefect-cometapi's errors.

:func:`classify` reads what boto3 raised (an error code, an HTTP status, a transport failure)
and names the failure; :func:`s3_error` turns it into
:class:`~prefect_cometapi.errors.S3BucketNotFoundError`,
:class:`~prefect_cometapi.errors.S3AccessDeniedError` or
:class:`~prefect_cometapi.errors.S3UploadError` for writes, and
:mod:`prefect_cometapi.inputs.fetch` turns it into input errors for reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from prefect_cometapi.errors import (
    CometAPIError,
    S3AccessDeniedError,
    S3BucketNotFoundError,
    S3UploadError,
    is_transient_status,
    redact,
)

__all__ = ["S3Failure", "classify", "s3_error"]

S3FailureKind = Literal[
    "no_bucket", "no_key", "denied", "no_credentials", "transient", "unreachable", "other"
]
"""What went wrong: the bucket or key is missing, access is denied, there are no credentials,
S3 answered a transient error (5xx, throttling, timeouts), the endpoint could not be reached, or
anything else."""

_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT_CODES = frozenset(
    "InternalError ServiceUnavailable SlowDown Throttling ThrottlingException RequestTimeout "
    "RequestTimeoutException RequestLimitExceeded TooManyRequestsException BadDigest "
    "XAmzContentSHA256Mismatch OperationAborted".split()
)
_ACCESS_CODES = frozenset(
    "AccessDenied AllAccessDisabled InvalidAccessKeyId SignatureDoesNotMatch ExpiredToken "
    "InvalidToken TokenRefreshRequired AccountProblem 403".split()
)
_TRANSPORT_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    HTTPClientError,
    IncompleteReadError,
)


@dataclass(frozen=True)
class S3Failure:
    """A classified S3 failure.

    Attributes:
        kind: What went wrong (see :data:`S3FailureKind`).
        code: S3's error code, or the name of the botocore exception.
        status: The HTTP status S3 answered (0 when there was no answer).
        message: S3's message (or the exception's text), free of secrets.
    """

    kind: S3FailureKind
    code: str
    status: int
    message: str

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (transient answers, unreachable endpoint)."""
        return self.kind in ("transient", "unreachable")


def classify(exc: BaseException) -> S3Failure:
    """Name an S3 failure from what boto3 raised.

    Args:
        exc: A ``ClientError``, a botocore error or anything else.

    Returns:
        The classified failure.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(error.get("Code", ""))
        status = int(meta.get("HTTPStatusCode") or 0)
        message = redact(str(error.get("Message", "") or code))
        kind: S3FailureKind
        if code == "NoSuchBucket":
            kind = "no_bucket"
        elif code in _MISSING_KEY_CODES or status == 404:
            kind = "no_key"
        elif code in _ACCESS_CODES or status == 403:
            kind = "denied"
        elif code in _TRANSIENT_CODES or is_transient_status(status):
            kind = "transient"
        else:
            kind = "other"
        return S3Failure(kind, code, status, message)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3Failure("no_credentials", type(exc).__name__, 0, redact(str(exc)))
    if isinstance(exc, _TRANSPORT_ERRORS):
        return S3Failure("unreachable", type(exc).__name__, 0, redact(str(exc)))
    return S3Failure("other", type(exc).__name__, 0, redact(str(exc)))


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
    if isinstance(exc, CometAPIError):
        return exc
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    failure = classify(exc)
    if failure.kind == "no_bucket":
        return S3BucketNotFoundError(bucket, key=key, action=action)
    if failure.kind in ("denied", "no_credentials"):
        return S3AccessDeniedError(
            bucket, key=key, action=action, code=failure.code, detail=failure.message
        )
    if isinstance(exc, ClientError):
        return S3UploadError(
            f"S3 {action} of {where} failed: {failure.code or failure.status} "
            f"{failure.message}".rstrip(),
            bucket=bucket,
            key=key,
            code=failure.code or None,
            status_code=failure.status or None,
            retryable=failure.retryable,
        )
    if failure.kind == "unreachable":
        return S3UploadError(
            f"S3 {action} of {where} failed: could not reach the S3 endpoint ({exc}). This is "
            "usually transient; if it persists check endpoint_url / AWS_ENDPOINT_URL_S3 and the "
            "network.",
            bucket=bucket,
            key=key,
            code=failure.code,
            retryable=True,
        )
    shown = str(exc) if isinstance(exc, BotoCoreError) else f"{failure.code}: {exc}"
    return S3UploadError(
        f"S3 {action} of {where} failed: {shown}", bucket=bucket, key=key, retryable=False
    )
