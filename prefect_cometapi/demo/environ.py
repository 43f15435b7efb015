"""Changing this process's environment variables for a while, and putting them back."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from prefect_cometapi.allowlist import ALLOWED_BASE_URLS_ENV, ALLOWED_S3_ENDPOINTS_ENV

__all__ = ["patched_environ", "allowing"]


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


@contextmanager
def allowing(base_urls: Iterable[str] = (), s3_endpoints: Iterable[str] = ()) -> Iterator[None]:
    """Add entries to this process's allow-lists for a while (the worker owner's own choice).

    For programs that start their own services, such as the offline demo with its emulator and
    S3 server; a deployment's workers set the environment variables instead. Child processes
    started meanwhile inherit the entries.

    Args:
        base_urls: API base URLs to allow.
        s3_endpoints: S3 endpoints to allow.

    Yields:
        Nothing; the previous values are restored on exit.
    """
    added = {ALLOWED_BASE_URLS_ENV: base_urls, ALLOWED_S3_ENDPOINTS_ENV: s3_endpoints}
    values = {}
    for name, extra in added.items():
        entries = [os.environ.get(name, ""), *[e for e in extra if e]]
        values[name] = ",".join(e for e in entries if e)
    with patched_environ(set=values):
        yield
