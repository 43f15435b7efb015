"""Async twins of sync tasks: the same function run in a worker thread, as an async task.

Named as in prefect-aws (``aupload_to_bucket`` beside ``upload_to_bucket``). :func:`async_twin`
runs the sync task's own function in a worker thread (Pillow and boto3 block; the context, so
the run's logger and ledger, goes with it), with the sync task's name, options and signature,
so the twins cannot drift. The tasks that do not call the Images API get their twins this way
(``aupscale_image``, ``aupload_to_s3``, ``arender_prompt``, each beside its sync task);
``agenerate_image`` and ``aedit_image`` use the async HTTP client instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import Task, task

__all__ = ["async_twin"]

_OPTIONS = (
    "name", "tags", "retries", "retry_delay_seconds", "retry_jitter_factor",
    "retry_condition_fn", "cache_policy", "persist_result",
)  # fmt: skip


_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _executor(name: str, threads: int | None) -> ThreadPoolExecutor | None:
    """The twin's own thread pool, made on first use (module-level, so a twin still pickles:
    Prefect pickles a served flow and the tasks it calls)."""
    if threads is None:
        return None
    with _pools_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(threads, thread_name_prefix=name)
        return _pools[name]


def async_twin(sync_task: Task[..., Any], threads: int | None = None) -> Task[..., Any]:
    """An async task that runs ``sync_task``'s function in a worker thread, with its options.

    Args:
        sync_task: The sync task.
        threads: Run in a pool of this many threads of the twin's own (for I/O-bound work
            that a gather runs many of at once); ``None`` uses the event loop's default
            executor (``cpu_count + 4`` threads at most), as ``asyncio.to_thread`` does.

    Returns:
        The async task, named ``a<function name>``.
    """
    fn = sync_task.fn
    pool_name = f"a{fn.__name__}"

    @functools.wraps(fn)
    async def twin(*args: Any, **kwargs: Any) -> Any:
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_executor(pool_name, threads), call)

    twin.__name__ = twin.__qualname__ = f"a{fn.__name__}"
    twin.__doc__ = (
        f"The async twin of ``{fn.__name__}``: the same arguments, options and result, "
        "awaitable in async flows (the work runs in a worker thread).\n\n" + (fn.__doc__ or "")
    )
    options = {name: getattr(sync_task, name) for name in _OPTIONS}
    retry_delays = options.pop("retry_delay_seconds")
    return task(twin, retry_delay_seconds=retry_delays, **options)
