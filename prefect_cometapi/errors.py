"""Every error prefect-cometapi raises, and the one rule for which of them are worth retrying.

The whole tree (``retryable`` marks the errors :func:`is_retryable` accepts)::

    CometAPIError
    ├── ValidationError (also a ValueError): bad input caught before any request is sent
    │   └── BudgetExceededError: a batch's estimated cost is over ``max_cost_usd``
    ├── MissingAPIKeyError: no key in the block nor in ``COMETAPI_KEY``
    ├── APIStatusError: the Images API answered with an error status
    │   ├── BadRequestError (400, 413, 422)
    │   │   └── ContentPolicyError (400 ``moderation_blocked``)
    │   ├── AuthenticationError (401)
    │   ├── PermissionDeniedError (403)
    │   ├── NotFoundError (404)
    │   ├── RateLimitError (429) ......................................... retryable
    │   ├── QuotaExceededError (429 ``insufficient_quota``)
    │   ├── TransientStatusError (408, 409, 425) ......................... retryable
    │   └── ServerError (5xx, 524; not a 500 ``invalid_request``) ........ retryable
    ├── UnexpectedResponseError: HTML, a redirect or an unreadable body (wrong base URL)
    ├── ImageDownloadError: image URLs in the answer could not be downloaded
    ├── ImageDataMissingError (also an AttributeError): ``.data`` of an image rebuilt without bytes
    ├── APIConnectionError: no answer at all ............................. retryable
    │   └── APITimeoutError: no answer in time ........................... retryable
    ├── InputFetchError: an input file could not be fetched, for now ...... retryable
    ├── SpendLimitError: the fleet's spend limit has no budget for a request (nothing sent)
    ├── S3UploadError: an S3 request failed ........ retryable when transient (5xx, throttling)
    │   ├── S3BucketNotFoundError: ``NoSuchBucket``
    │   └── S3AccessDeniedError: denied, or no credentials
    └── BatchFailedError: items failed in a batch run with ``all_or_nothing=True``

No message ever contains the API key: messages are built from the response only, and
:func:`redact` scrubs anything that looks like a bearer token before it is stored.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchFailedError",
    "BudgetExceededError",
    "CometAPIError",
    "ContentPolicyError",
    "ImageDataMissingError",
    "ImageDownloadError",
    "InputFetchError",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "S3AccessDeniedError",
    "S3BucketNotFoundError",
    "S3UploadError",
    "SpendLimitError",
    "ServerError",
    "TransientStatusError",
    "UnexpectedResponseError",
    "ValidationError",
    "error_class_for",
    "is_retryable",
    "is_transient_status",
    "redact",
    "retry_on_transient",
]

MAX_LISTED_FAILURES = 10
"""Failed items a :class:`BatchFailedError` message lists."""

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")
_SK = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with bearer tokens, ``sk-`` keys and the given secrets replaced by ``***``.

    Args:
        text: Any text that may end up in a message, a log record or an artifact.
        *secrets: Exact values to remove as well (the API key in use).

    Returns:
        The scrubbed text.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    return _SK.sub("sk-***", text)


class CometAPIError(Exception):
    """Base class of every error raised by prefect-cometapi."""

    retryable: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with keyword attributes intact (Prefect persists failed states)."""
        return (_rebuild_error, (type(self), self.args, self.__dict__.copy()))


class ValidationError(CometAPIError, ValueError):
    """A parameter breaks a rule of the Images API; raised before any request is sent.

    Attributes:
        param: The offending parameter, e.g. ``"size"`` or ``"image[2]"``.
        rule: The rule it breaks, in words.
    """

    def __init__(self, param: str, rule: str, value: Any = None) -> None:
        self.param = param
        self.rule = rule
        self.value = value
        shown = "" if value is None else f" (got {_short(value)})"
        super().__init__(f"Invalid {param!r}: {rule}{shown}. No request was sent.")


class MissingAPIKeyError(CometAPIError):
    """No API key was given: neither in the credentials block nor in ``COMETAPI_KEY``."""

    def __init__(self) -> None:
        super().__init__(
            "No CometAPI key: pass CometAPICredentials(api_key=...) (or load a saved block with "
            "CometAPICredentials.load('name')), or set the COMETAPI_KEY environment variable. "
            "No request was sent."
        )


class APIStatusError(CometAPIError):
    """The API answered with an HTTP error status.

    Attributes:
        status_code: The HTTP status.
        message: The API's own message (``error.message``).
        code: ``error.code`` (``"moderation_blocked"``, ``"insufficient_quota"`` ...), if any.
        param: ``error.param``, if any.
        error_type: ``error.type``, if any.
        request_id: The ``x-request-id`` header, if any.
        retry_after: Seconds the server asked us to wait, if it said so.
        body: The parsed JSON error body (already free of secrets).
    """

    hint = "Check the request parameters against the Images API reference."

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body or {}
        parts = [f"HTTP {status_code}"]
        for label, value in (("code", code), ("param", param), ("request id", request_id)):
            if value:
                parts.append(f"{label}={value}")
        super().__init__(f"{message} [{', '.join(parts)}] {self.hint}")


def _rebuild_error(cls: type[Exception], args: tuple[Any, ...], state: dict[str, Any]) -> Exception:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class BadRequestError(APIStatusError):
    """400/413/422: the API refused the request as malformed. Retrying will not help."""

    hint = "Fix the parameter named above; retrying the same request will fail the same way."


class ContentPolicyError(BadRequestError):
    """400 ``moderation_blocked``: the safety system rejected the prompt or the image.

    Attributes:
        moderation_details: ``{"moderation_stage": ..., "categories": [...]}`` when the API says.
    """

    hint = "Rephrase the prompt or change the input image; the same request will be refused again."

    @property
    def moderation_details(self) -> dict[str, Any]:
        """The API's ``moderation_details`` object, or an empty dict."""
        details = (self.body.get("error") or {}).get("moderation_details")
        return details if isinstance(details, dict) else {}


class AuthenticationError(APIStatusError):
    """401: the key is missing, wrong or revoked."""

    hint = "Check the API key in your CometAPICredentials block or COMETAPI_KEY."


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or endpoint (or the region is not supported)."""

    hint = "Check that your CometAPI account may use this model."


class NotFoundError(APIStatusError):
    """404: unknown model or route."""

    hint = "Check the model name and the base URL (it should end in /v1)."


class RateLimitError(APIStatusError):
    """429: too many requests right now; worth retrying after a pause."""

    retryable = True
    hint = "Slow down (a Prefect global concurrency limit shares one budget across workers)."


class QuotaExceededError(APIStatusError):
    """429 ``insufficient_quota``: the account is out of credit; retrying will not help."""

    hint = "Top up your CometAPI balance or use another key."


class TransientStatusError(APIStatusError):
    """408 (request timeout), 409 (conflict) or 425 (too early): worth retrying."""

    retryable = True
    hint = "This is usually transient."


class ServerError(APIStatusError):
    """5xx or 524 from the API or its gateway.

    Retryable, except a 500 whose code is ``invalid_request`` (CometAPI's way of reporting a
    malformed request).
    """

    hint = "The service is having trouble; retrying later usually works."

    def __init__(self, status_code: int, message: str, **kwargs: Any) -> None:
        super().__init__(status_code, message, **kwargs)
        self.retryable = not (status_code == 500 and self.code == "invalid_request")


class UnexpectedResponseError(CometAPIError):
    """The base URL answered HTML, a redirect or something that is not the Images API.

    Attributes:
        status_code: The HTTP status of that answer.
    """

    def __init__(self, status_code: int, what: str, url: str) -> None:
        self.status_code = status_code
        super().__init__(
            f"{url} answered {what} (HTTP {status_code}) instead of an Images API response: the "
            "base URL is probably wrong. CometAPI's is https://api.cometapi.com/v1 (note the /v1)."
        )


class ImageDownloadError(CometAPIError):
    """The API returned image URLs that could not be downloaded. Not retried: the images are
    already paid for, and sending the request again would pay twice."""


class ImageDataMissingError(CometAPIError, AttributeError):
    """An image's bytes were asked for, but it was rebuilt from a dump without them.

    The message says where the bytes are: the image's S3 URI when known, and the cache record
    of the request that made it.
    """


class APIConnectionError(CometAPIError):
    """No answer: the connection failed or was dropped."""

    retryable = True


class APITimeoutError(APIConnectionError):
    """No answer within the configured timeout."""


class InputFetchError(CometAPIError):
    """An input file could not be fetched for a reason that may pass (connection error,
    timeout, 5xx, throttling). Retryable.

    Attributes:
        source: The URL or URI (without query string).
        status_code: The HTTP status, if the server answered.
    """

    retryable = True

    def __init__(self, message: str, *, source: str, status_code: int | None = None) -> None:
        self.source = source
        self.status_code = status_code
        super().__init__(message)


class SpendLimitError(CometAPIError):
    """A spend limit refused a request before it was sent.

    Either the request's estimated cost is more than the limit can ever hold, or the limit had
    no budget left and the task was told not to wait (``spend_limit_wait=False``).

    Attributes:
        limit: The spend limit's name.
        estimated_usd: The request's estimated cost.
    """

    def __init__(self, limit: str, estimated_usd: float, reason: str) -> None:
        self.limit = limit
        self.estimated_usd = estimated_usd
        super().__init__(
            f"Spend limit {limit!r} refused a request estimated at ${estimated_usd:.4f}: "
            f"{reason}. No request was sent."
        )


class S3UploadError(CometAPIError):
    """An S3 request failed.

    Attributes:
        bucket: The bucket.
        key: The key, if any.
        code: The S3 error code (``SlowDown``, ``InternalError``...) or exception name.
        status_code: The HTTP status, if S3 answered.
        retryable: Whether trying again later can work (connection errors, 5xx, throttling).
    """

    def __init__(
        self,
        message: str,
        *,
        bucket: str | None = None,
        key: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        retryable: bool = False,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.code = code
        self.status_code = status_code
        self.retryable = retryable
        super().__init__(message)


class S3BucketNotFoundError(S3UploadError):
    """The bucket does not exist (``NoSuchBucket``). Not retryable."""

    def __init__(self, bucket: str, *, key: str | None = None, action: str = "upload") -> None:
        super().__init__(
            f"S3 bucket {bucket!r} does not exist (S3 {action} failed with NoSuchBucket). Create "
            f"it (e.g. `aws s3 mb s3://{bucket}`) or fix the bucket name; with an S3-compatible "
            "store also check endpoint_url.",
            bucket=bucket,
            key=key,
            code="NoSuchBucket",
            status_code=404,
        )


class S3AccessDeniedError(S3UploadError):
    """The credentials may not do this (``AccessDenied``, bad or missing keys). Not retryable."""

    def __init__(
        self,
        bucket: str,
        *,
        key: str | None = None,
        action: str = "upload",
        code: str = "AccessDenied",
        detail: str = "",
    ) -> None:
        target = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
        suffix = f": {detail}" if detail else ""
        super().__init__(
            f"Access denied: S3 {action} of {target} failed ({code}{suffix}). Check the AWS "
            "credentials in use (the AwsCredentials block passed as aws_credentials, or "
            "AWS_ACCESS_KEY_ID / AWS_PROFILE / the instance role): they need s3:PutObject (and "
            f"s3:GetObject for presigned URLs) on arn:aws:s3:::{bucket}/*, and the bucket policy "
            "must allow them.",
            bucket=bucket,
            key=key,
            code=code,
            status_code=403,
        )


class BudgetExceededError(ValidationError):
    """The batch's estimated cost is over ``max_cost_usd``; nothing was sent.

    Attributes:
        estimate: The estimated cost in USD.
        budget: ``max_cost_usd``.
        items: Items that would have been paid for.
    """

    def __init__(self, estimate: float, budget: float, items: int, image: Any) -> None:
        """Describe the refused batch.

        Args:
            estimate: The estimated cost in USD.
            budget: ``max_cost_usd``.
            items: Items that would have been paid for.
            image: The request options (``ImageOptions``: model, n, request size, quality).
        """
        self.estimate = estimate
        self.budget = budget
        self.items = items
        super().__init__(
            "max_cost_usd",
            f"the batch is estimated at ${estimate:.4f} for {items} item(s) x {image.n} image(s) "
            f"({image.model}, {image.request_size}, quality {image.quality}), over the budget of "
            f"${budget:.4f}; raise max_cost_usd, lower quality, size or n, or split the batch",
        )


class BatchFailedError(CometAPIError):
    """Some items failed and the batch asked for all or nothing.

    Attributes:
        summary: The run's summary (what was delivered and why the rest failed).
    """

    def __init__(self, summary: Any) -> None:
        """Describe the failed batch.

        Args:
            summary: The run's ``RunSummary`` (its ``failures`` and ``headline()`` are used).
        """
        self.summary = summary
        reasons = "; ".join(
            f"{item}: {why}" for item, why in list(summary.failures.items())[:MAX_LISTED_FAILURES]
        )
        super().__init__(f"{summary.headline()}. all_or_nothing=True, so the run fails. {reasons}")


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt of the same request can succeed.

    This is the single rule used by the client's own retries and by the Prefect tasks'
    ``retry_condition_fn``.

    Args:
        exc: Any exception.

    Returns:
        ``True`` for connection errors, timeouts, the :data:`TRANSIENT_STATUSES` (a 429 not
        ``insufficient_quota``) and 5xx/524 (not a 500 ``invalid_request``); ``False`` for
        everything else.
    """
    return isinstance(exc, CometAPIError) and bool(getattr(exc, "retryable", False))


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` of the tasks: retry only what :func:`is_retryable` accepts.

    Args:
        task: The task.
        task_run: The task run.
        state: Its ``Failed`` state.

    Returns:
        ``True`` for connection errors, timeouts, 408/409/425/429 (not ``insufficient_quota``), 5xx,
        transient S3 and input failures; ``False`` for everything else (bad request, content
        policy, auth, permission, not found, quota, validation, a missing bucket...).
    """
    data = getattr(state, "data", None)
    exc = getattr(data, "result", data)  # a persisted failure holds its exception in a record
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as raised:  # noqa: BLE001 - the state's own exception
            exc = raised
    return isinstance(exc, BaseException) and is_retryable(exc)


TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 409, 425, 429})
"""The HTTP statuses worth another try besides every 5xx (524 included): request timeout,
conflict, too early, too many requests. The one list for the API, input downloads and S3."""


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth another try (:data:`TRANSIENT_STATUSES` or 5xx).

    Args:
        status: The HTTP status.

    Returns:
        ``True`` for a transient status.
    """
    return status >= 500 or status in TRANSIENT_STATUSES


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    **{status: TransientStatusError for status in TRANSIENT_STATUSES - {429}},
}


def error_class_for(status_code: int, code: str | None) -> type[APIStatusError]:
    """Pick the error class for an HTTP status and an ``error.code``.

    Args:
        status_code: The HTTP status.
        code: The API's ``error.code``, if any.

    Returns:
        The most specific :class:`APIStatusError` subclass.
    """
    if code == "moderation_blocked":
        return ContentPolicyError
    if code == "insufficient_quota":
        return QuotaExceededError
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, APIStatusError)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
