"""Lock managers for the image cache: lock files created atomically, and a retry-safe wrapper.

Prefect's ``FileSystemLockManager`` creates a lock file and writes its holder in a second step;
another thread reading in between sees an empty file and fails. This manager writes the lock's
content to a temporary file first and publishes it with ``os.link``, which fails if the lock
exists: a lock file is never half written. It also records the owner's host and process id,
so a lock left behind by a killed process (SIGKILL mid-run) is recognised as stale and taken
over instead of blocking the re-run forever. It implements Prefect's public
``LockManager`` protocol.

:class:`RetrySafeLockManager` wraps any other lock manager (``prefect-redis``'s, for workers on
several machines) so that Prefect's second release of a lock never aborts a commit.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import anyio.to_thread
from prefect.locking.protocol import LockManager
from prefect.settings import PREFECT_HOME

__all__ = [
    "LOCK_DIR_ENV",
    "LOCK_MANAGER_ENV",
    "AtomicFileLockManager",
    "RetrySafeLockManager",
    "default_lock_manager",
    "lock_manager_from_url",
    "retry_safe",
]

POLL_S = 0.05
_T = TypeVar("_T")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_a_thread(method: Callable[..., _T]) -> Callable[..., Awaitable[_T]]:
    """The async twin of a blocking lock method: the same call, run in a worker thread.

    Args:
        method: A method of :class:`AtomicFileLockManager` that may wait.

    Returns:
        An ``async`` method with the same arguments and result.
    """

    @functools.wraps(method)
    async def twin(self: Any, *args: Any, **kwargs: Any) -> _T:
        blocking = getattr(self, method.__name__)  # a subclass's override, if any
        return await anyio.to_thread.run_sync(functools.partial(blocking, *args, **kwargs))

    twin.__doc__ = f"Async :meth:`{method.__name__}` (same arguments and result)."
    return twin


class AtomicFileLockManager(LockManager):
    """Locks as files in one directory, safe across threads and processes of one machine.

    Args:
        lock_files_directory: Where the ``<key>.lock`` files live.
    """

    def __init__(self, lock_files_directory: Path) -> None:
        self.lock_files_directory = Path(lock_files_directory).expanduser().resolve()

    def __repr__(self) -> str:
        return f"AtomicFileLockManager({str(self.lock_files_directory)!r})"

    def _path(self, key: str) -> Path:
        return self.lock_files_directory / f"{key}.lock"

    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            info = json.loads(self._path(key).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {"holder": None, "host": None, "pid": None, "expiration": None}
        return info if isinstance(info, dict) else None

    def _is_stale(self, info: dict[str, Any]) -> bool:
        expiration = info.get("expiration")
        if expiration is not None and expiration < time.time():
            return True
        pid = info.get("pid")
        return (
            info.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and not _pid_alive(pid)
        )

    def _try_create(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        self.lock_files_directory.mkdir(parents=True, exist_ok=True)
        info = {
            "holder": holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expiration": time.time() + hold_timeout if hold_timeout else None,
        }
        tmp = self.lock_files_directory / f".{key}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(info))
        try:
            os.link(tmp, self._path(key))
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _attempt(self, key: str, holder: str, hold_timeout: float | None) -> bool:
        """One non-blocking try: True if ``holder`` holds the lock afterwards."""
        if self._try_create(key, holder, hold_timeout):
            return True
        info = self._read(key)
        if info is None:
            return False  # released meanwhile: the caller tries again at once
        if info.get("holder") == holder:
            return True
        if self._is_stale(info):
            self._path(key).unlink(missing_ok=True)
        return False

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """Acquire the lock, waiting up to ``acquire_timeout`` seconds (forever if ``None``).

        Args:
            key: The lock's key.
            holder: Who holds it.
            acquire_timeout: Seconds to wait for it; ``None`` waits as long as it takes.
            hold_timeout: Seconds after which the lock expires by itself.

        Returns:
            Whether the lock was acquired.
        """
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while not self._attempt(key, holder, hold_timeout):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def release_lock(self, key: str, holder: str) -> None:
        """Release a lock held by ``holder``; a no-op if ``holder`` does not hold it.

        Never raises: when a task run is retried inside a parent transaction (a task of your
        own calling ``generate_image``), Prefect keeps the failed attempt's transaction as a
        child and releases its lock a second time when the parent commits. Raising there aborted the
        parent's commit, so the successful retry's result was never persisted and a re-run
        paid again. Someone else's lock is never removed.

        Args:
            key: The lock's key.
            holder: Who holds it.
        """
        if self.is_lock_holder(key, holder):
            self._path(key).unlink(missing_ok=True)

    def is_locked(self, key: str) -> bool:
        """Whether a live lock exists for ``key``.

        Args:
            key: The lock's key.

        Returns:
            ``True`` if locked (stale locks count as free).
        """
        info = self._read(key)
        return info is not None and not self._is_stale(info)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """Whether ``holder`` holds the lock for ``key``.

        Args:
            key: The lock's key.
            holder: Who may hold it.

        Returns:
            ``True`` if it does.
        """
        info = self._read(key)
        return info is not None and info.get("holder") == holder and not self._is_stale(info)

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until ``key`` is unlocked.

        Args:
            key: The lock's key.
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Returns:
            ``True`` once unlocked, ``False`` on timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    aacquire_lock = _in_a_thread(acquire_lock)
    await_for_lock = _in_a_thread(wait_for_lock)


class RetrySafeLockManager(LockManager):
    """Another lock manager whose ``release_lock`` never raises for a holder without the lock.

    Prefect releases a transaction's lock again when its parent transaction commits: after a
    task-level retry (the failed attempt stays a child) and under :func:`persist_when_paid`
    (the eagerly committed child is committed once more). By then another worker waiting for
    the same image may hold the lock, and ``prefect-redis``'s ``RedisLockManager`` raises
    ``ValueError`` there, which aborts the parent's commit. This wrapper releases only what the
    holder still holds and delegates everything else unchanged.

    Args:
        inner: The lock manager to wrap (e.g. ``RedisLockManager(host=...)``).
    """

    def __init__(self, inner: LockManager) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"RetrySafeLockManager({self.inner!r})"

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """Acquire the lock through the wrapped manager (same arguments and result)."""
        return self.inner.acquire_lock(key, holder, acquire_timeout, hold_timeout)

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """Async :meth:`acquire_lock`, through the wrapped manager."""
        return await self.inner.aacquire_lock(key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        """Release the lock if ``holder`` holds it; otherwise do nothing.

        Args:
            key: The lock's key.
            holder: Who holds it.
        """
        if self.inner.is_lock_holder(key, holder):
            self.inner.release_lock(key, holder)

    def is_locked(self, key: str) -> bool:
        """Whether a lock exists for ``key``, per the wrapped manager."""
        return self.inner.is_locked(key)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """Whether ``holder`` holds the lock for ``key``, per the wrapped manager."""
        return self.inner.is_lock_holder(key, holder)

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until ``key`` is unlocked, through the wrapped manager."""
        return self.inner.wait_for_lock(key, timeout)

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Async :meth:`wait_for_lock`, through the wrapped manager."""
        return await self.inner.await_for_lock(key, timeout)


def retry_safe(manager: LockManager) -> LockManager:
    """``manager`` with a release that tolerates Prefect's second release (see above).

    Args:
        manager: Any lock manager.

    Returns:
        ``manager`` itself if it is already retry-safe, else it wrapped.
    """
    if isinstance(manager, (AtomicFileLockManager, RetrySafeLockManager)):
        return manager
    return RetrySafeLockManager(manager)


LOCK_DIR_ENV = "PREFECT_COMETAPI_LOCK_DIR"
"""A directory for lock files every worker of one machine sees."""
LOCK_MANAGER_ENV = "PREFECT_COMETAPI_LOCK_MANAGER"
"""``file`` (or empty) for lock files, or a ``redis://``/``rediss://`` URL for prefect-redis."""


def default_lock_manager() -> LockManager:
    """Lock files on this machine: ``PREFECT_COMETAPI_LOCK_DIR`` or ``$PREFECT_HOME/locks``.

    Returns:
        An :class:`AtomicFileLockManager` (safe across threads and processes of one machine).
    """
    directory = os.environ.get(LOCK_DIR_ENV) or Path(PREFECT_HOME.value()) / "locks"
    return AtomicFileLockManager(Path(directory))


def lock_manager_from_url(url: str) -> LockManager:
    """A lock manager from a ``PREFECT_COMETAPI_LOCK_MANAGER`` value.

    Args:
        url: ``file`` (or empty) for :func:`default_lock_manager`;
            ``redis://[user:password@]host[:port][/db]`` or ``rediss://...`` (TLS) for
            ``prefect_redis.locking.RedisLockManager``.

    Returns:
        The lock manager.

    Raises:
        ValueError: An unknown scheme, or ``redis://`` without ``prefect-redis`` installed.
    """
    text = (url or "").strip()
    if text.lower() in ("", "file"):
        return default_lock_manager()
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"{LOCK_MANAGER_ENV} must be 'file' or a redis:// or rediss:// URL, "
            f"not {parts.scheme or text!r}"
        )
    try:
        from prefect_redis.locking import RedisLockManager  # type: ignore[import-not-found]
    except ImportError:
        raise ValueError(
            f"{LOCK_MANAGER_ENV} is a Redis URL but prefect-redis is not installed "
            "(pip install prefect-redis)"
        ) from None
    path = parts.path.strip("/")
    return RedisLockManager(
        host=parts.hostname or "localhost",
        port=parts.port or 6379,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=parts.scheme == "rediss",
    )
