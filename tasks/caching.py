"""The cache policy of the image tasks: keyed on what determines the image, nothing else.

The key covers the endpoint, model, prompt, size, quality, output format, compression,
background, moderation, input fidelity, ``n``, the sha256 of every input image and of the mask,
and an explicit ``variant``. It never covers the credentials block, the API key, timeouts,
retry settings or concurrency names: changing those does not buy a new image.

Two runs of the same request at the same time must not both pay, so the policy runs its
transaction at ``SERIALIZABLE`` isolation with a lock manager: the second run waits for the
first one's lock and then reads its persisted result. The default lock manager keeps lock files
on this machine (``$PREFECT_HOME/locks``, or ``PREFECT_COMETAPI_LOCK_DIR``); workers on several
machines need a shared one (``prefect-redis``'s ``RedisLockManager``), chosen in code through
:func:`image_cache_policy` or in the environment of every worker (read when the tasks module is
imported, i.e. when a flow run starts):

* ``PREFECT_COMETAPI_LOCK_DIR=/shared/locks``: lock files in a directory every worker of one
  machine (or a shared POSIX file system with working hard links) sees.
* ``PREFECT_COMETAPI_LOCK_MANAGER=redis://[user:password@]host:6379/0`` (``rediss://`` for TLS):
  ``prefect_redis.locking.RedisLockManager``, for workers on several machines
  (``pip install prefect-redis``). ``file`` or empty: the lock files above.
* ``PREFECT_COMETAPI_CACHE_KEY_STORAGE``: where the cache records (keys -> results) live, a
  path or a storage block slug such as ``s3-bucket/cometapi-results``. Empty: next to the
  results, in the task's result storage (``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` when set),
  which is what shared storage needs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.protocol import LockManager
from prefect.settings import PREFECT_HOME
from prefect.transactions import CommitMode, transaction

from prefect_cometapi.tasks.locking import AtomicFileLockManager, retry_safe

#: The task inputs that determine the image (besides the input images, hashed separately).
KEY_PARAMS = (
    "model", "prompt", "n", "size", "quality", "output_format", "output_compression",
    "background", "moderation", "input_fidelity", "variant",
)  # fmt: skip
CACHE_KEY_VERSION = "v1"


def image_cache_key(
    endpoint: str,
    params: dict[str, Any],
    image_sha256: list[str] | None = None,
    mask_sha256: str | None = None,
) -> str:
    """The one cache-key function for image requests.

    Args:
        endpoint: ``"generations"`` or ``"edits"``.
        params: Task inputs; only the names in :data:`KEY_PARAMS` are used.
        image_sha256: The sha256 of every input image, in order (edits).
        mask_sha256: The sha256 of the mask (edits).

    Returns:
        A hex digest, stable across processes and machines.
    """
    material = {
        "v": CACHE_KEY_VERSION,
        "endpoint": endpoint,
        **{name: params.get(name) for name in KEY_PARAMS},
        "images": list(image_sha256 or []),
        "mask": mask_sha256,
    }
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return f"cometapi-{endpoint}-{hashlib.sha256(blob).hexdigest()}"


class ImageRequestCachePolicy(CachePolicy):
    """A Prefect cache policy for ``generate_image`` and ``edit_image``.

    Edits hash the bytes of their input images; an input that cannot be read gives no key (so
    the task runs and raises the readable error itself).
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """Compute the cache key of one task call.

        Args:
            task_ctx: The task run context.
            inputs: The task's bound arguments.
            flow_parameters: The flow's parameters (unused).
            **kwargs: Unused.

        Returns:
            The key, or ``None`` when an input image cannot be read.
        """
        if "images" not in inputs:
            return image_cache_key("generations", inputs)
        from prefect_cometapi.tasks.images import resolve_inputs  # avoid an import cycle

        try:
            images, mask = resolve_inputs(inputs["images"], inputs.get("mask"), inputs)
        except Exception:  # noqa: BLE001 - the task itself reports the error
            return None
        return image_cache_key(
            "edits",
            inputs,
            [hashlib.sha256(b).hexdigest() for b in images],
            hashlib.sha256(mask).hexdigest() if mask is not None else None,
        )


LOCK_DIR_ENV = "PREFECT_COMETAPI_LOCK_DIR"
LOCK_MANAGER_ENV = "PREFECT_COMETAPI_LOCK_MANAGER"
KEY_STORAGE_ENV = "PREFECT_COMETAPI_CACHE_KEY_STORAGE"


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


def image_cache_policy(
    lock_manager: LockManager | None = None, key_storage: str | Path | None = None
) -> CachePolicy:
    """The image cache policy with serializable isolation and a lock manager.

    Args:
        lock_manager: A shared lock manager for workers on several machines (e.g.
            ``prefect_redis.locking.RedisLockManager``); otherwise the one
            ``PREFECT_COMETAPI_LOCK_MANAGER`` names, else machine-local lock files. It is
            wrapped so that Prefect's second release of a lock never aborts a commit
            (:class:`~prefect_cometapi.tasks.locking.RetrySafeLockManager`).
        key_storage: Where cache records live (a path or a storage block slug); otherwise
            ``PREFECT_COMETAPI_CACHE_KEY_STORAGE``, else with the results.

    Returns:
        A cache policy to pass as ``cache_policy=`` (``task.with_options(cache_policy=...)``).
    """
    return ImageRequestCachePolicy().configure(
        key_storage=key_storage or os.environ.get(KEY_STORAGE_ENV) or None,
        isolation_level="SERIALIZABLE",
        lock_manager=retry_safe(
            lock_manager or lock_manager_from_url(os.environ.get(LOCK_MANAGER_ENV, ""))
        ),
    )


@contextmanager
def persist_when_paid() -> Iterator[None]:
    """Persist image results the moment their task run finishes, even inside another task.

    Prefect commits a task run's transaction (writes its cached result and releases its lock)
    when the outermost transaction commits. Called inside your own task, ``generate_image``'s
    paid result is therefore written only when *your* task succeeds: if a later step fails
    (an S3 upload, say) or the process dies first, the image is lost and a re-run pays again.
    Inside this block, the image tasks commit as soon as they finish::

        @task
        def make_banner(prompt: str) -> str:
            with persist_when_paid():
                result = generate_image(prompt)
            return upload_to_s3(result.images[0], bucket="banners").uri

    A flow calling the tasks directly does not need it (a flow run has no transaction).

    Yields:
        Nothing; the block runs in an eagerly committing transaction.
    """
    with transaction(commit_mode=CommitMode.EAGER):
        yield
