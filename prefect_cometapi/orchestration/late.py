"""Task timeouts shorter than the request: warned about before sending, and the answer kept.

A request is paid for as soon as the API accepts it, whether or not the task is still there to
read the answer. Prefect's ``timeout_seconds`` interrupts the task body (``SIGALRM`` in the main
thread, an exception raised into a worker thread, cancellation of an async task), which would
drop an image already billed, and a re-run would pay again.

So when an image task's ``timeout_seconds`` is shorter than what its request may take (the
credentials' ``connect_timeout + read_timeout`` per client attempt, ``max_retries + 1``
attempts), :func:`late_answer_guard` logs a warning before anything is sent and the request runs
in a thread of its own (:class:`LateAnswerGuard`), with a sync client. The task waits for it;
when the timeout interrupts the wait, the request goes on, and when its answer comes it is written
to the task's cache record (the key the task run would have written), so the next run with the
same request is a cache hit and pays nothing. The thread pool's threads are joined when the
interpreter exits, so a worker process ends only after such an answer is stored (or has failed).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from prefect.context import TaskRunContext
from prefect.transactions import get_transaction

from prefect_cometapi.models import ImageResult

__all__ = ["late_answer_guard"]

_LOGGER = logging.getLogger("prefect_cometapi.orchestration")
_POLL_S = 0.2
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(thread_name_prefix="cometapi-late-answer")
        return _pool


def request_seconds(credentials: Any) -> float:
    """How long one image request may take with these credentials, retries included.

    Args:
        credentials: A ``CometAPICredentials`` block.

    Returns:
        ``(max_retries + 1) x (connect_timeout + read_timeout)`` in seconds (backoff not
        counted).
    """
    per_attempt = float(credentials.connect_timeout) + float(credentials.read_timeout)
    return (int(credentials.max_retries) + 1) * per_attempt


class LateAnswerGuard:
    """Runs one request in its own thread and stores its answer if the task stops waiting.

    Args:
        store: The task run's result store (where its cache record goes).
        key: The cache key of the task run.
        expiration: When the cache record expires.
        stamp: Makes the result that is stored (sets its cache key).
    """

    def __init__(
        self,
        store: Any,
        key: str,
        expiration: Any,
        stamp: Callable[[ImageResult], ImageResult],
    ) -> None:
        self.store = store
        self.key = key
        self.expiration = expiration
        self.stamp = stamp
        self._abandoned = False
        self._lock = threading.Lock()

    def run(self, exchange: Callable[[], ImageResult]) -> ImageResult:
        """Run ``exchange`` in the guard's thread and wait for it (interruptibly).

        Args:
            exchange: Makes the request and returns its result.

        Returns:
            The result.
        """
        future = self._start(exchange)
        try:
            while True:
                try:
                    return future.result(timeout=_POLL_S)
                except FutureTimeout:
                    continue  # a timeout raised into this thread lands between two polls
        except BaseException:
            self._abandon(future)
            raise

    async def arun(self, exchange: Callable[[], ImageResult]) -> ImageResult:
        """:meth:`run` for async tasks: the wait is an ``await`` that cancellation interrupts.

        Args:
            exchange: Makes the request and returns its result (sync code, run in the thread).

        Returns:
            The result.
        """
        future = self._start(exchange)
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except BaseException:
            self._abandon(future)
            raise

    def _start(self, exchange: Callable[[], ImageResult]) -> Future[ImageResult]:
        future = _executor().submit(contextvars.copy_context().run, exchange)
        future.add_done_callback(self._done)
        return future

    def _abandon(self, future: Future[ImageResult]) -> None:
        with self._lock:
            self._abandoned = True
            finished = future.done()
        if finished:
            self._done(future)
        else:
            _LOGGER.warning(
                "The image task stopped waiting (timeout) while its request was in flight; "
                "the answer will be cached when it comes (cache key %s)",
                self.key,
            )

    def _done(self, future: Future[ImageResult]) -> None:
        with self._lock:
            if not self._abandoned or future.cancelled() or future.exception() is not None:
                return
            self._abandoned = False  # store it once
        try:
            result = self.stamp(future.result())
            record = self.store.create_result_record(
                result, key=self.key, expiration=self.expiration
            )
            self.store.persist_result_record(record)
        except Exception:  # noqa: BLE001 - a background write must not raise into nobody
            _LOGGER.warning("Could not cache an image that arrived late", exc_info=True)
            return
        _LOGGER.warning(
            "An image paid for after its task timed out arrived and is cached (cache key %s, "
            "request_id %s): the next run of the same request pays nothing",
            self.key,
            result.request_id or "n/a",
        )


def late_answer_guard(
    credentials: Any, stamp: Callable[[ImageResult], ImageResult], logger: Any
) -> LateAnswerGuard | None:
    """Warn about a task timeout shorter than the request, and guard the answer if so.

    Args:
        credentials: The resolved ``CometAPICredentials``.
        stamp: Makes the stored result (see :class:`LateAnswerGuard`).
        logger: The task run's logger.

    Returns:
        A guard when the running task's ``timeout_seconds`` is shorter than
        :func:`request_seconds`, else ``None``.
    """
    ctx = TaskRunContext.get()
    timeout = getattr(getattr(ctx, "task", None), "timeout_seconds", None)
    if ctx is None or timeout is None:
        return None
    needed = request_seconds(credentials)
    if timeout >= needed:
        return None
    logger.warning(
        "timeout_seconds=%g is shorter than this request may take (up to %g s: %d attempt(s) "
        "of connect_timeout %g s + read_timeout %g s): if the timeout fires, the image is "
        "still paid for. The request will run to its end and its answer will be cached, so a "
        "re-run pays nothing; raise timeout_seconds, or lower the block's read_timeout",
        timeout,
        needed,
        int(credentials.max_retries) + 1,
        float(credentials.connect_timeout),
        float(credentials.read_timeout),
    )
    txn = get_transaction()
    store = getattr(txn, "store", None) or ctx.result_store
    key = getattr(txn, "key", None)
    if store is None or not key or not ctx.persist_result:
        return None
    expiration = None
    if ctx.task.cache_expiration is not None:
        from prefect.types._datetime import now

        expiration = now("UTC") + ctx.task.cache_expiration
    return LateAnswerGuard(store, key, expiration, stamp)
