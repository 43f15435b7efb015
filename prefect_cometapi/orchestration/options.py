"""The image tasks' options: the attempt budget, the cache, run names, the result-serializer
check, eager persistence and the cache-hit hook."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import timedelta
from typing import Any

from prefect import Task, get_run_logger
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.results import ResultRecord
from prefect.runtime import task_run as runtime_task_run
from prefect.states import State
from prefect.transactions import CommitMode, get_transaction

from prefect_cometapi.billing.ledger import record_request
from prefect_cometapi.caching.policy import image_cache_policy
from prefect_cometapi.caching.serializer import IMAGE_RESULT_SERIALIZER
from prefect_cometapi.errors import (
    ValidationError,
    retry_on_transient,
)
from prefect_cometapi.events import emit_image_event
from prefect_cometapi.models import GeneratedImage, ImageResult, Usage
from prefect_cometapi.text import private_prompts, slugify

__all__ = [
    "ASYNC_TASK_OPTIONS",
    "CACHE_EXPIRATION",
    "TASK_OPTIONS",
    "TASK_RETRIES",
    "TASK_RETRY_DELAYS",
    "TASK_TIMEOUT_SECONDS",
    "check_result_serializer",
    "persist_on_finish",
    "run_label",
    "run_name",
    "stamp_cache_key",
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


RUN_LABEL_CHARS = 64


_run_label: ContextVar[str | None] = ContextVar("cometapi_run_label", default=None)


@contextmanager
def run_label(label: str | None) -> Iterator[None]:
    """Name the image task runs started in this block by ``label``, e.g. a batch item's id.

    A batch wraps each item in it, so every item's task runs are told apart in the run graph
    (``generate-image-item-0007``) without the prompt in their names.

    Args:
        label: The label (``None``: names as outside the block).

    Yields:
        Nothing.
    """
    token = _run_label.set(label)
    try:
        yield
    finally:
        _run_label.reset(token)


def _task_run_name(kind: str) -> str:
    label = _run_label.get()
    if label:
        return f"{kind}-{slugify(label, RUN_LABEL_CHARS)}"
    params = runtime_task_run.parameters
    size = params.get("size", "auto")
    if private_prompts():
        return f"{kind}-{size}"
    slug = slugify(str(params.get("prompt", "")), RUN_NAME_SLUG_CHARS)
    return f"{kind}-{size}-{slug}"


def run_name(kind: str) -> Any:
    """A ``task_run_name`` callable: ``{kind}-{size}-{prompt slug}``.

    Inside :func:`run_label` (a batch item) the name is ``{kind}-{label}`` instead; with
    :func:`~prefect_cometapi.text.private_prompts` on it is ``{kind}-{size}``, no prompt slug.
    The callable pickles by reference (a ``partial`` of a module function, not a closure over
    this module's ``ContextVar``), so a flow that uses the tasks can be served: Prefect pickles
    a served flow, and its tasks with it, to start each run in a subprocess.

    Args:
        kind: ``generate-image`` or ``edit-image``.

    Returns:
        The callable.
    """
    return functools.partial(_task_run_name, kind)


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


def stamp_cache_key(result: ImageResult) -> ImageResult:
    """The paid result with the key of the cache record it is about to be stored in.

    Args:
        result: The API's result.

    Returns:
        ``result`` with ``cache_key`` set (unchanged outside a transaction).
    """
    key = getattr(get_transaction(), "key", None)
    if not key or key == result.cache_key:
        return result
    images = [replace(i, data=i.data, cache_key=key) for i in result.images]
    return replace(result, images=images, cache_key=key)


def _mark_cached(task: Task[..., Any], state: State[Any], result: ImageResult) -> ImageResult:
    """Make the value the caller receives from a cache hit say so (``cached``, nothing billed).

    The hit's result record is the one the engine returns to the caller and keeps in the state,
    so its value is replaced there. With Prefect's in-memory result cache on (the image tasks
    turn it off), that record may be the very one of the run that paid; it is then left alone
    and the state gets a copy instead.
    """
    data = state.data
    key = result.cache_key or getattr(getattr(data, "metadata", None), "storage_key", None)
    marked = result.as_cached(key)
    if isinstance(data, ResultRecord):
        if task.cache_result_in_memory:
            state.data = data.model_copy(update={"result": marked})
        else:
            data.result = marked
    return marked


def on_cache_hit(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> None:
    """``on_completion`` hook: mark a cache hit's result, log the cost avoided, emit ``.cached``.

    The task body does not run on a hit: this is where the value the caller receives is made to
    say ``cached=True`` and ``billed_usd=0`` (the stored record keeps the paid run's facts).

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
    result = _mark_cached(task, state, result)
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
    # A cache hit's record must not be the paid run's own (the hit marks its value cached).
    "cache_result_in_memory": False,
    "result_serializer": IMAGE_RESULT_SERIALIZER,
    "on_completion": [on_cache_hit],
}


#: The async twins' options: :data:`TASK_OPTIONS` and the attempt timeout.
ASYNC_TASK_OPTIONS: dict[str, Any] = {**TASK_OPTIONS, "timeout_seconds": TASK_TIMEOUT_SECONDS}
