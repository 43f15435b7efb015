"""Saved blocks loaded by name once per flow run, for tasks that take a block or its name.

An image task given ``credentials="my-block"`` needs the block twice: its cache key includes the
block's base URL (Prefect computes the key before the task body, in the event loop for async
tasks) and its body builds the client from it. Loading it at both places, for each of a flow's
task runs, would cost two Prefect API round trips per task run (64 for 32 gathered images).
:func:`load_block` loads a name once per flow run and process and hands the same block to every
caller in that run; the next flow run loads it again, so an edited block is seen by the next run.
Outside any run the block is loaded on every call.

A load never runs on the caller's event loop: it runs ``Block.aload`` on a loop of its own (in a
helper thread when the caller's thread has a running loop), with the caller's context, so the
Prefect API URL and settings are the caller's.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prefect.blocks.core import Block
from prefect.context import FlowRunContext, TaskRunContext

__all__ = ["aload_block", "load_block"]

B = TypeVar("B", bound=Block)

_KEEP = 64
"""Loaded blocks kept (one per block type, name and flow run); the oldest go first."""
_loaded: OrderedDict[tuple[type, str, str], Any] = OrderedDict()
_gates: dict[tuple[type, str, str], threading.Lock] = {}
_lock = threading.Lock()


def _scope() -> str | None:
    """The run a loaded block is shared within: the flow run, else the task run, else none."""
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return f"flow-run:{flow_ctx.flow_run.id}"
    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run is not None:
        return f"task-run:{task_ctx.task_run.id}"
    return None


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _load(block_type: type[B], name: str) -> B:
    """Load on a loop of its own, in a helper thread if this thread runs a loop."""
    if not _running_loop():
        return asyncio.run(block_type.aload(name))
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="cometapi-block") as pool:
        return pool.submit(context.run, _load, block_type, name).result()


def _cached(key: tuple[type, str, str]) -> Any:
    with _lock:
        block = _loaded.get(key)
        if block is not None:
            _loaded.move_to_end(key)
        return block


def load_block(block_type: type[B], name: str) -> B:
    """A saved block by name, loaded once per flow run (see the module's docstring).

    Callers of the same flow run that ask at the same time wait for one load.

    Args:
        block_type: The block class, e.g. ``CometAPICredentials``.
        name: The saved block's name.

    Returns:
        The block (the same object for every caller of the run: do not change it).

    Raises:
        ValueError: No block of that type has that name (Prefect's error).
    """
    scope = _scope()
    if scope is None:
        return _load(block_type, name)
    key = (block_type, name, scope)
    block = _cached(key)
    if block is not None:
        return block
    with _lock:
        gate = _gates.setdefault(key, threading.Lock())
    with gate:
        block = _cached(key)
        if block is None:
            block = _load(block_type, name)
            with _lock:
                _loaded[key] = block
                while len(_loaded) > _KEEP:
                    _loaded.popitem(last=False)
                _gates.pop(key, None)
    return block


async def aload_block(block_type: type[B], name: str) -> B:
    """:func:`load_block` for async code: a load the run has not made yet runs in a thread.

    Args:
        block_type: The block class.
        name: The saved block's name.

    Returns:
        The block.
    """
    scope = _scope()
    block = _cached((block_type, name, scope)) if scope is not None else None
    if block is not None:
        return block
    return await asyncio.to_thread(load_block, block_type, name)
