"""glibc malloc tuning for upscaling batches: large image buffers get their own mappings, so
freed ones go back to the OS."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["map_large_blocks", "release_freed_memory"]

_M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter for the size from which a block gets its own mapping."""


LARGE_BLOCK_BYTES = 1 << 20
"""Blocks from this size up are mapped on their own during upscaling batches (see below)."""


def _find_libc(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """A glibc function, or ``None`` elsewhere (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


_malloc_trim = _find_libc("malloc_trim", ctypes.c_size_t)
_mallopt = _find_libc("mallopt", ctypes.c_int, ctypes.c_int)
_large_blocks_mapped = False


def map_large_blocks() -> None:
    """Have glibc map every block of :data:`LARGE_BLOCK_BYTES` or more on its own (once).

    By default glibc raises its mapping threshold to the size of each mapped block that is
    freed (up to 32 MB), so after the first 4K frame an image's buffers (sources, responses,
    encoded files) come from the worker thread's malloc arena, and each of the batch's threads
    keeps a few of them after they are freed: the process's RSS grows with the batch
    (``bench/memory.py`` measures it). A fixed threshold gives such blocks back when they are
    freed. A no-op off glibc.
    """
    global _large_blocks_mapped
    if _mallopt is not None and not _large_blocks_mapped:
        _large_blocks_mapped = True
        _mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)


def release_freed_memory() -> None:
    """Hand the memory freed by an upscale back to the OS (glibc only; a no-op elsewhere).

    Each of the batch's threads gets its own glibc malloc arena, and an arena keeps what a 4K
    frame's buffers freed instead of returning it, so without this the process's RSS grows with
    the batch until every arena has held a few frames (``bench/memory.py`` measures it),
    although no image is referenced any more.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)
