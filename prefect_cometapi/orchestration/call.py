"""What the sync and async image tasks share: options, limits, persistence, logs and events.

Each image task (``generate_image``, ``edit_image`` and their async twins ``agenerate_image``,
``aedit_image``, in :mod:`prefect_cometapi.tasks.images`) is a few lines: it opens an
:class:`ImageCall` and hands it the one client call to make. :meth:`ImageCall.run` (sync) and
:meth:`ImageCall.arun` (async) do the rest, once for both twins:

- the task options (the attempt budget, the cache policy, expiration, persistence; no tags:
  Prefect asks its server for a tag concurrency slot before every run of a tagged task, a
  round trip per image even when no such limit exists; add tags with ``with_options``);
- before any request: the result serializer is checked to round-trip an ``ImageResult``, so a
  ``result_serializer`` that would silently turn the cache off is refused instead; the edit
  inputs are read (the bytes the cache key was computed from, when it was), the credentials
  resolved, the request's estimated cost taken from the spend limit and a slot of the
  concurrency and rate limits held;
- on success: the task's own transaction is switched to commit eagerly, so a paid image is
  persisted when the image task ends even inside another task (whose later failure would
  otherwise lose it); the success log line with tokens, cost and request id; the
  ``prefect-cometapi.image.generated`` event and the spend events; the cost ledger entry;
- on failure: the ``.refused`` (content policy) or ``.failed`` event;
- on a cache hit (the task body does not run): an ``on_completion`` hook logs the cost avoided
  and emits ``.cached``.

Attempt budget (one number to remember): each task attempt lets the client try
``credentials.max_retries + 1`` times (default 3) with short backoff, honouring Retry-After; the
task itself is retried ``TASK_RETRIES`` times (default 2, after 30 s and 120 s, +-50 % jitter)
for outages that outlast that. So one image request makes at most
``(max_retries + 1) x (TASK_RETRIES + 1)`` = 9 HTTP attempts by default, and only for errors that
can succeed on a retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from prefect import Task, get_run_logger
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import task_run as runtime_task_run
from prefect.states import State
from prefect.transactions import CommitMode, get_transaction

from prefect_cometapi.blocks.credentials import (
    CredentialsLike,
    aresolve_credentials,
    resolve_credentials,
)
from prefect_cometapi.caching.policy import fetched_inputs, image_cache_policy
from prefect_cometapi.caching.serializer import IMAGE_RESULT_SERIALIZER
from prefect_cometapi.client import AsyncCometAPIClient, CometAPIClient
from prefect_cometapi.costs import record_failure, record_request
from prefect_cometapi.errors import (
    APIStatusError,
    ContentPolicyError,
    ValidationError,
    redact,
    retry_on_transient,
)
from prefect_cometapi.events import emit_image_event, emit_spend
from prefect_cometapi.inputs import resolve_inputs
from prefect_cometapi.limits import aapi_budget, api_budget
from prefect_cometapi.models import GeneratedImage, ImageResult, Usage
from prefect_cometapi.spend import aacquire_spend, acquire_spend, estimate_request_usd
from prefect_cometapi.text import excerpt, slugify

__all__ = [
    "ASYNC_TASK_OPTIONS",
    "CACHE_EXPIRATION",
    "TASK_OPTIONS",
    "TASK_RETRIES",
    "TASK_RETRY_DELAYS",
    "TASK_TIMEOUT_SECONDS",
    "EditInputs",
    "ImageCall",
    "aedit_inputs",
    "check_result_serializer",
    "edit_inputs",
    "on_cache_hit",
    "persist_on_finish",
    "run_name",
]

TASK_RETRIES = 2
TASK_RETRY_DELAYS = [30, 120]
TASK_TIMEOUT_SECONDS = 2400
"""One attempt's limit for the async image tasks: three client attempts of at most connect + read
timeout (610 s by default, body included) plus backoff and downloads. The sync tasks have none by
default (Prefect cannot interrupt a task in a worker thread and warns on every run); each of their
HTTP attempts is bounded by the client's own deadline. Change either with ``with_options``."""
CACHE_EXPIRATION = timedelta(days=30)
RUN_NAME_SLUG_CHARS = 32


def run_name(kind: str) -> Any:
    """A ``task_run_name`` callable: ``{kind}-{size}-{prompt slug}``.

    Args:
        kind: ``generate-image`` or ``edit-image``.

    Returns:
        The callable.
    """

    def name() -> str:
        params = runtime_task_run.parameters
        slug = slugify(str(params.get("prompt", "")), RUN_NAME_SLUG_CHARS)
        return f"{kind}-{params.get('size', 'auto')}-{slug}"

    return name


_PROBE_USAGE = Usage(input_tokens=1, output_tokens=2, total_tokens=3)
_PROBE = ImageResult(
    images=[
        GeneratedImage(
            data=b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
            format="png",
            width=1,
            height=1,
            # The true digest: the image serializer refuses a record whose bytes do not match.
            sha256=hashlib.sha256(b"\x89PNG\r\n\x1a\n\x00\xff\xfe").hexdigest(),
            model="probe",
            prompt="probe",
            usage=_PROBE_USAGE,
        )
    ],
    model="probe",
    params={"size": "1x1"},
    usage=_PROBE_USAGE,
    cost_usd=0.5,
)
_serializer_verdicts: dict[str, bool] = {}


def check_result_serializer() -> None:
    """Refuse, before any request, a result serializer that cannot store an ``ImageResult``.

    Prefect would log a warning and skip the cache write, so every run would pay again. A
    serializer is tried once per process on a small probe result (bytes that are not UTF-8
    included) and must give back an equal value.

    Raises:
        ValidationError: The task's ``result_serializer`` loses the image.
    """
    ctx = TaskRunContext.get()
    store = getattr(ctx, "result_store", None)
    if ctx is None or store is None or not ctx.persist_result:
        return
    serializer = store.serializer
    name = f"{type(serializer).__module__}.{type(serializer).__qualname__}:{serializer!r}"
    verdict = _serializer_verdicts.get(name)
    if verdict is None:
        try:
            verdict = serializer.loads(serializer.dumps(_PROBE)) == _PROBE
        except Exception:  # noqa: BLE001 - any failure means the cache cannot work
            verdict = False
        _serializer_verdicts[name] = verdict
    if not verdict:
        raise ValidationError(
            "result_serializer",
            f"{getattr(serializer, 'type', type(serializer).__name__)!r} cannot store an "
            "ImageResult (image bytes), so the cache would be off and every run would pay "
            "again; keep the image tasks' own result_serializer (do not pass one)",
        )


def persist_on_finish() -> None:
    """Make the running task's transaction commit when the task ends, inside any other task.

    Prefect commits a nested task's transaction (writes its cached result, releases its lock)
    when the outermost one commits; a paid image would be lost if the enclosing task then
    failed or its process died. Called in the image tasks' bodies, before they return.
    """
    txn = get_transaction()
    if txn is not None and txn.commit_mode != CommitMode.EAGER:
        txn.commit_mode = CommitMode.EAGER


def _tokens(usage: Usage | None) -> str:
    return f"{usage.input_tokens} in / {usage.output_tokens} out" if usage else "n/a"


def _cost(cost_usd: float | None) -> str:
    return f"${cost_usd:.4f}" if cost_usd is not None else "n/a"


EditInputs = tuple[list[bytes], "bytes | None"]
"""An edit's input images and mask, as bytes."""


def _needs_io(images: Any, mask: Any) -> bool:
    many = images if isinstance(images, (list, tuple)) else [images]
    return any(isinstance(s, str) or hasattr(s, "__fspath__") for s in [*many, mask])


def edit_inputs(images: Any, mask: Any, s3_endpoint_url: str | None) -> EditInputs:
    """An edit's inputs as bytes: those its cache key was computed from, else read now.

    Args:
        images: The task's ``images``.
        mask: The task's ``mask``.
        s3_endpoint_url: Endpoint for ``s3://`` inputs.

    Returns:
        The image bytes and the mask bytes (or ``None``).
    """
    # The bytes the cache key was computed from, when it was: fetched once, hashed and sent.
    fetched = fetched_inputs(runtime_task_run.id)
    return fetched or resolve_inputs(images, mask, s3_endpoint_url)


async def aedit_inputs(images: Any, mask: Any, s3_endpoint_url: str | None) -> EditInputs:
    """:func:`edit_inputs` for async tasks: paths, URLs and ``s3://`` URIs read in a thread.

    Args:
        images: The task's ``images``.
        mask: The task's ``mask``.
        s3_endpoint_url: Endpoint for ``s3://`` inputs.

    Returns:
        The image bytes and the mask bytes (or ``None``).
    """
    if fetched_inputs(runtime_task_run.id) is None and _needs_io(images, mask):
        return await asyncio.to_thread(resolve_inputs, images, mask, s3_endpoint_url)
    return edit_inputs(images, mask, s3_endpoint_url)


class ImageCall:
    """One call of an image task: checks before the request, the request's limits, the rest after.

    Args:
        endpoint: ``generations`` or ``edits``.
        prompt: The prompt.
        params: The task's image parameters (``variant`` included; it is not sent).
        credentials: A block, a saved block's name or ``None``.
        limits: The task's ``(concurrency_limit, rate_limit, spend_limit, spend_limit_wait)``:
            the names of a global concurrency limit to hold a slot of, of one with slot decay
            used as a rate, of a spend limit (each ``None`` for none), and whether to wait for
            the spend limit's budget (else raise).

    Attributes:
        sent: The parameters to send (``params`` without ``variant``).
    """

    def __init__(
        self,
        endpoint: str,
        prompt: str,
        params: dict[str, Any],
        credentials: CredentialsLike,
        limits: tuple[str | None, str | None, str | None, bool],
    ) -> None:
        self.endpoint = endpoint
        self.params = {"prompt": prompt, **params}
        self.sent = {k: v for k, v in params.items() if k != "variant"}
        self.model = str(params.get("model"))
        self.credentials = credentials
        concurrency_limit, rate_limit, spend_limit, spend_limit_wait = limits
        self._budget = (concurrency_limit, rate_limit)
        self._spend = (spend_limit, spend_limit_wait)
        self.started = time.monotonic()
        check_result_serializer()

    def run(
        self,
        send: Callable[[CometAPIClient, EditInputs | None], ImageResult],
        inputs: Callable[[], EditInputs] | None = None,
    ) -> ImageResult:
        """Make the request with the sync client and report it.

        Args:
            send: Makes the client call (given the client and the edit inputs).
            inputs: Reads the edit inputs (edits only).

        Returns:
            The result.
        """
        try:
            loaded = inputs() if inputs else None
            with (
                resolve_credentials(self.credentials).get_client() as client,
                acquire_spend(self._spend[0], self.estimated_usd(loaded), self._spend[1]),
                api_budget(*self._budget),
            ):
                result = send(client, loaded)
        except Exception as exc:
            self.failed(exc)
            raise
        return self.succeeded(result)

    async def arun(
        self,
        send: Callable[[AsyncCometAPIClient, EditInputs | None], Awaitable[ImageResult]],
        inputs: Callable[[], Awaitable[EditInputs]] | None = None,
    ) -> ImageResult:
        """Make the request with the async client and report it (as :meth:`run`).

        Args:
            send: Makes the client call (given the client and the edit inputs).
            inputs: Reads the edit inputs (edits only).

        Returns:
            The result.
        """
        try:
            loaded = await inputs() if inputs else None
            credentials = await aresolve_credentials(self.credentials)
            async with (
                credentials.get_async_client() as client,
                aacquire_spend(self._spend[0], self.estimated_usd(loaded), self._spend[1]),
                aapi_budget(*self._budget),
            ):
                result = await send(client, loaded)
        except Exception as exc:
            self.failed(exc)
            raise
        return self.succeeded(result)

    def estimated_usd(self, inputs: EditInputs | None = None) -> float:
        """The request's estimated cost (what a spend limit takes before sending).

        Args:
            inputs: The edit inputs, if any (their images count).

        Returns:
            USD.
        """
        return estimate_request_usd(self.params, len(inputs[0]) if inputs else 0)

    @property
    def seconds(self) -> float:
        """Seconds since the call began."""
        return time.monotonic() - self.started

    def succeeded(self, result: ImageResult) -> ImageResult:
        """Persist on finish, log, emit the events and record the cost of a paid result.

        Args:
            result: The API's result.

        Returns:
            ``result``.
        """
        persist_on_finish()
        seconds = self.seconds
        first = result.images[0]
        get_run_logger().info(
            "%s %d image(s) %s quality=%s tokens=%s cost=%s request_id=%s in %.2f s "
            "(attempts=%d): %r",
            "generated" if self.endpoint == "generations" else "edited",
            len(result.images),
            first.size,
            result.params.get("quality") or "auto",
            _tokens(result.usage),
            _cost(result.cost_usd),
            result.request_id or "n/a",
            seconds,
            result.attempts,
            excerpt(first.prompt),
        )
        emit_image_event(
            "generated",
            endpoint=self.endpoint,
            model=self.model,
            params=self.params,
            result=result,
            seconds=seconds,
        )
        emit_spend(result.cost_usd)
        record_request(self.endpoint, result, cached=False)
        return result

    def failed(self, error: BaseException) -> None:
        """Emit the ``.refused`` or ``.failed`` event of an attempt that raised.

        Args:
            error: What was raised.
        """
        outcome = "refused" if isinstance(error, ContentPolicyError) else "failed"
        if isinstance(error, APIStatusError):
            code = error.code or f"http_{error.status_code}"
            message = error.message
        else:
            code, message = type(error).__name__, str(error)
        record_failure(self.endpoint, self.params, code, redact(message))
        emit_image_event(
            outcome,
            endpoint=self.endpoint,
            model=self.model,
            params=self.params,
            error=error,
            seconds=self.seconds,
        )


def on_cache_hit(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> None:
    """``on_completion`` hook: log the cost a cache hit avoided and emit ``.cached``.

    Args:
        task: The task.
        task_run: The task run.
        state: Its completed state (named ``Cached`` for a hit).
    """
    if state.name != "Cached":
        return
    data = state.data
    result = getattr(data, "result", data)
    if not isinstance(result, ImageResult):
        return
    endpoint = "edits" if "edit" in task.name else "generations"
    get_run_logger().info(
        "cache hit: %d image(s) %s, cost avoided %s (tokens=%s, request_id=%s paid earlier)",
        len(result.images),
        result.images[0].size if result.images else "",
        _cost(result.cost_usd),
        _tokens(result.usage),
        result.request_id or "n/a",
    )
    emit_image_event(
        "cached",
        endpoint=endpoint,
        model=result.model,
        params=result.params,
        result=result,
    )
    record_request(endpoint, result, cached=True)


class _QuietCacheHitHook(logging.Filter):
    """Drop Prefect's two "Running hook" / "Hook finished" lines for :func:`on_cache_hit`.

    The hook runs on every completion of every image task; those lines would double the task
    runs' log volume without saying anything (the hook logs its own line on a cache hit).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the hook's bookkeeping lines.

        Args:
            record: A log record of ``prefect.task_runs``.

        Returns:
            ``False`` for the two lines about ``on_cache_hit``.
        """
        return "hook 'on_cache_hit'" not in str(record.msg).lower()


logging.getLogger("prefect.task_runs").addFilter(_QuietCacheHitHook())


#: What every image task shares (sync and async): the attempt budget, the cache, hooks.
TASK_OPTIONS: dict[str, Any] = {
    "retries": TASK_RETRIES,
    "retry_delay_seconds": TASK_RETRY_DELAYS,
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": image_cache_policy(),
    "cache_expiration": CACHE_EXPIRATION,
    "persist_result": True,
    "result_serializer": IMAGE_RESULT_SERIALIZER,
    "on_completion": [on_cache_hit],
}
#: The async twins' options: :data:`TASK_OPTIONS` and the attempt timeout.
ASYNC_TASK_OPTIONS: dict[str, Any] = {**TASK_OPTIONS, "timeout_seconds": TASK_TIMEOUT_SECONDS}
