"""A ledger of what the image tasks paid (or saved) and uploaded in a block of code.

The tasks write to the ledger of the innermost :func:`cost_ledger` block they run in (task
runners copy the context into their threads, async tasks share it); outside one, nothing is
recorded. ``prefect_cometapi.flows.cost_summary`` opens a ledger and publishes it as the
packaged flows' cost artifacts when the block ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect.context import TaskRunContext

from prefect_cometapi.models import GeneratedImage, ImageResult

if TYPE_CHECKING:
    from prefect_cometapi.s3.upload import S3Object

__all__ = [
    "CostLedger",
    "RequestRecord",
    "cost_ledger",
    "record_failure",
    "record_request",
    "record_upload",
]


@dataclass
class RequestRecord:
    """One image request as the ledger keeps it (no bytes).

    Attributes:
        name: The task run's name.
        endpoint: ``generations`` or ``edits``.
        model: The model.
        prompt: The prompt.
        size: The requested size.
        quality: The requested quality.
        input_tokens: Input tokens (of the original request when cached).
        output_tokens: Output tokens.
        cost_usd: What this request cost now (0 for a cache hit): the result's ``billed_usd``.
        cost_avoided_usd: What a cache hit did not pay again.
        cached: Whether it came from the cache (the result's ``cached``).
        request_id: The API's request id.
        image_sha256: The sha256 of each image.
        error_code: Why it failed, as a code.
        error: Why it failed.
    """

    name: str
    endpoint: str
    model: str
    prompt: str
    size: str
    quality: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_avoided_usd: float = 0.0
    cached: bool = False
    request_id: str | None = None
    image_sha256: list[str] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None

    @property
    def billed_usd(self) -> float:
        """What this run paid for the request (``cost_usd``), as ``ImageResult.billed_usd``."""
        return self.cost_usd


@dataclass
class UploadRecord:
    """One object the upload task stored.

    Attributes:
        uri: ``s3://bucket/key``.
        bucket: The bucket.
        key: The key.
        url: A presigned URL, if one was made.
        sha256: The stored bytes' sha256.
        source_sha256: The sha256 of the generated image it came from (for upscales).
        size: ``WxH``.
        format: The image format.
        bytes: Object size.
        existed: Whether the identical object was already there.
    """

    uri: str
    bucket: str
    key: str
    url: str | None
    sha256: str
    source_sha256: str | None
    size: str
    format: str
    bytes: int
    existed: bool


@dataclass
class CostLedger:
    """Requests and uploads recorded in one :func:`cost_ledger` block.

    Attributes:
        requests: Per task run id (a retried task run keeps one record).
        uploads: In upload order.
    """

    requests: dict[str, RequestRecord] = field(default_factory=dict)
    uploads: list[UploadRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total_cost_usd(self) -> float:
        """What the recorded requests paid."""
        return round(sum(r.cost_usd for r in self.requests.values()), 6)

    @property
    def cost_avoided_usd(self) -> float:
        """What cache hits did not pay again."""
        return round(sum(r.cost_avoided_usd for r in self.requests.values()), 6)

    def add_request(self, run_id: str, record: RequestRecord) -> None:
        """Record (or replace) the request of a task run.

        Args:
            run_id: The task run id.
            record: The record.
        """
        with self._lock:
            self.requests[run_id] = record

    def add_upload(self, record: UploadRecord) -> None:
        """Record an upload.

        Args:
            record: The record.
        """
        with self._lock:
            self.uploads.append(record)


_ledger: ContextVar[CostLedger | None] = ContextVar("cometapi_cost_ledger", default=None)


@contextmanager
def cost_ledger() -> Iterator[CostLedger]:
    """Record the image tasks' requests and uploads made inside this block.

    Yields:
        The ledger.
    """
    ledger = CostLedger()
    token = _ledger.set(ledger)
    try:
        yield ledger
    finally:
        _ledger.reset(token)


def _run() -> tuple[str, str]:
    ctx = TaskRunContext.get()
    if ctx is None:
        return "", "image-request"
    return str(ctx.task_run.id), ctx.task_run.name


def _base(endpoint: str, params: dict[str, Any], model: str) -> dict[str, Any]:
    run_id, name = _run()
    return {
        "run_id": run_id,
        "name": name,
        "endpoint": endpoint,
        "model": model,
        "prompt": str(params.get("prompt", "")),
        "size": str(params.get("size") or "auto"),
        "quality": str(params.get("quality") or "auto"),
    }


def record_request(endpoint: str, result: ImageResult, cached: bool) -> None:
    """Record a paid or cached result in the current ledger, if any.

    Args:
        endpoint: ``generations`` or ``edits``.
        result: The result.
        cached: Whether it came from the cache.
    """
    ledger = _ledger.get()
    if ledger is None:
        return
    base = _base(endpoint, result.params, result.model)
    if not base["prompt"] and result.images:
        base["prompt"] = result.images[0].prompt
    run_id = base.pop("run_id") or str(id(result))
    usage = result.usage
    cost = result.cost_usd or 0.0
    cached = cached or result.cached
    ledger.add_request(
        run_id,
        RequestRecord(
            **base,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_usd=0.0 if cached else cost,
            cost_avoided_usd=cost if cached else 0.0,
            cached=cached,
            request_id=result.request_id,
            image_sha256=[image.sha256 for image in result.images],
        ),
    )


def record_failure(endpoint: str, params: dict[str, Any], code: str, message: str) -> None:
    """Record a failed request in the current ledger, if any.

    Args:
        endpoint: ``generations`` or ``edits``.
        params: The request's parameters.
        code: A short code for the failure.
        message: The reason.
    """
    ledger = _ledger.get()
    if ledger is None:
        return
    base = _base(endpoint, params, str(params.get("model")))
    run_id = base.pop("run_id") or str(id(params))
    ledger.add_request(run_id, RequestRecord(**base, error_code=code, error=message))


def record_upload(stored: S3Object, image: GeneratedImage) -> None:
    """Record an upload in the current ledger, if any.

    Args:
        stored: Where it went.
        image: The image stored.
    """
    ledger = _ledger.get()
    if ledger is None:
        return
    ledger.add_upload(
        UploadRecord(
            uri=stored.uri,
            bucket=stored.bucket,
            key=stored.key,
            url=stored.presigned_url,
            sha256=stored.sha256,
            source_sha256=image.source_sha256,
            size=image.size,
            format=image.format,
            bytes=stored.size,
            existed=stored.existed,
        )
    )
