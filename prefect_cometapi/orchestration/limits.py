"""Bounds on image requests in flight: a process-local slot and Prefect's global limits.

:func:`request_slot` makes the image tasks called in a context hold a semaphore during their
HTTP exchange; :func:`api_budget` is what the tasks enter around that exchange: the slot, a
global concurrency slot and/or a rate-limit token. The worker's own limits
(``PREFECT_COMETAPI_CONCURRENCY_LIMIT`` / ``PREFECT_COMETAPI_RATE_LIMIT``,
:mod:`prefect_cometapi.billing.caps`) are held too, whatever the run asked for.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from contextvars import ContextVar

from prefect_cometapi.billing.caps import CONCURRENCY_LIMIT_ENV, RATE_LIMIT_ENV, limit_names

__all__ = ["aapi_budget", "api_budget", "request_slot"]

_request_slot: ContextVar[threading.Semaphore | None] = ContextVar(
    "cometapi_request_slot", default=None
)


@contextmanager
def request_slot(semaphore: threading.Semaphore | None) -> Iterator[None]:
    """Make the image tasks called in this context hold ``semaphore`` during their API call.

    A process-local bound on requests in flight that covers the HTTP exchange only, not the
    task run around it (cache lookup, locking, persisting the result), so a batch keeps its
    ``concurrency`` requests busy while that work runs beside them.

    Args:
        semaphore: The semaphore; ``None`` for no bound.

    Yields:
        While the tasks called here use it.
    """
    token = _request_slot.set(semaphore)
    try:
        yield
    finally:
        _request_slot.reset(token)


@contextmanager
def api_budget(concurrency_limit: str | None, rate_limit: str | None) -> Iterator[None]:
    """Hold a request slot (:func:`request_slot`), a global concurrency slot and/or a rate token.

    Args:
        concurrency_limit: Name of a global concurrency limit (slots); ``None`` for none.
        rate_limit: Name of a global concurrency limit with slot decay (a rate); ``None``.

    Yields:
        While the slots are held. The limits must exist (``prefect gcl create``).
    """
    with ExitStack() as stack:
        slot = _request_slot.get()
        if slot is not None:
            stack.enter_context(slot)
        for name in limit_names(rate_limit, RATE_LIMIT_ENV):
            from prefect.concurrency.sync import rate_limit as take_rate

            take_rate(name, strict=True)
        for name in limit_names(concurrency_limit, CONCURRENCY_LIMIT_ENV):
            from prefect.concurrency.sync import concurrency

            stack.enter_context(concurrency(name, occupy=1, strict=True))
        yield


@asynccontextmanager
async def aapi_budget(concurrency_limit: str | None, rate_limit: str | None) -> AsyncIterator[None]:
    """:func:`api_budget` for the async tasks: the limits are awaited and never block a thread.

    The process-local :func:`request_slot` (a thread semaphore, for the batch flows' threads)
    does not apply.

    Args:
        concurrency_limit: Name of a global concurrency limit (slots); ``None`` for none.
        rate_limit: Name of a global concurrency limit with slot decay (a rate); ``None``.

    Yields:
        While the slots are held. The limits must exist (``prefect gcl create``).
    """
    async with AsyncExitStack() as stack:
        for name in limit_names(rate_limit, RATE_LIMIT_ENV):
            from prefect.concurrency.asyncio import rate_limit as take_rate

            await take_rate(name, strict=True)
        for name in limit_names(concurrency_limit, CONCURRENCY_LIMIT_ENV):
            from prefect.concurrency.asyncio import concurrency

            await stack.enter_async_context(concurrency(name, occupy=1, strict=True))
        yield
