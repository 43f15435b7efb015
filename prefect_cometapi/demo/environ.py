"""Changing this process's environment variables for a while, and putting them back."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

__all__ = ["patched_environ"]


@contextmanager
def patched_environ(
    set: Mapping[str, str] | None = None,
    drop: Iterable[str] = (),
) -> Iterator[None]:
    """Set and remove environment variables of this process until the block ends.

    Child processes started meanwhile inherit the change. On exit every variable named in ``set``
    or ``drop`` gets its earlier value back, or is removed if it had none.

    Args:
        set: Variables to set (applied after ``drop``, so a name in both ends up set).
        drop: Variables to remove.

    Yields:
        Nothing.
    """
    set = dict(set or {})
    drop = [name for name in drop if name not in set]
    saved = {name: os.environ.get(name) for name in (*drop, *set)}
    for name in drop:
        os.environ.pop(name, None)
    os.environ.update(set)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
