"""The cache policy of the image tasks: keyed on what determines the image, run serializably.

:func:`image_cache_policy` keys each call with
:func:`~prefect_cometapi.caching.keys.image_cache_key` and runs its transaction at
``SERIALIZABLE`` isolation with a lock manager (:mod:`prefect_cometapi.caching.locks`), so two
identical requests at the same time pay once: the second waits for the first one's lock and
reads its persisted result.
:func:`persist_when_paid` is a deprecated no-op (the image tasks commit their result as soon as
they end, even inside another task). Where locks and cache records live is configured in the
environment (see docs/reliability.md, "Caching").
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.protocol import LockManager

from prefect_cometapi.caching.keys import image_cache_key
from prefect_cometapi.caching.locks import LOCK_MANAGER_ENV, lock_manager_from_url, retry_safe
from prefect_cometapi.caching.serializer import IMAGE_PREFIX, IMAGE_RESULT_SERIALIZER
from prefect_cometapi.caching.store import vetted_store
from prefect_cometapi.inputs.coerce import resolve_inputs

__all__ = [
    "KEY_STORAGE_ENV",
    "ImageRequestCachePolicy",
    "image_cache_policy",
    "persist_when_paid",
]

KEY_STORAGE_ENV = "PREFECT_COMETAPI_CACHE_KEY_STORAGE"
"""Where cache records live: a path or a storage block slug; empty: with the results."""


class ImageRequestCachePolicy(CachePolicy):
    """A Prefect cache policy for ``generate_image`` and ``edit_image``.

    Edits hash the bytes of their input images, read once: the bytes hashed replace the
    sources in the task run's own arguments (``inputs`` is the dict Prefect then calls the
    task with), so the task sends exactly them, and a URL or S3 object that changes between two
    reads cannot slip other bytes under the key. Nothing is parked beside the run: the bytes
    live as long as the task run's arguments, however many edits run at once, and a retry of
    the run hashes and sends the same bytes again. An input that cannot be read gives no key
    (so the task runs and raises the readable error itself).

    The task run's result store is replaced by a vetted copy
    (:func:`~prefect_cometapi.caching.store.vetted_store`) before Prefect looks the key up: a
    stored record that names another serializer than the task's, or holds no image result, is
    a cache miss and is never deserialized.
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
        _vet_result_store(task_ctx)
        if "images" not in inputs:
            return image_cache_key("generations", inputs)
        try:
            images, mask = resolve_inputs(
                inputs["images"], inputs.get("mask"), inputs.get("s3_endpoint_url")
            )
        except Exception:  # noqa: BLE001 - the task itself reports the error
            return None
        # The hand-off to the task body: it is called with this very dict.
        inputs["images"] = images
        if "mask" in inputs:
            inputs["mask"] = mask
        return image_cache_key(
            "edits",
            inputs,
            [hashlib.sha256(b).hexdigest() for b in images],
            hashlib.sha256(mask).hexdigest() if mask is not None else None,
        )


def _vet_result_store(task_ctx: TaskRunContext | None) -> None:
    """Swap the task run's result store for a vetted copy (Prefect reads the cache through it).

    Prefect builds the transaction with the task run context's store right after computing the
    key, so the copy set here is the one every cache lookup of this run goes through.
    """
    store = getattr(task_ctx, "result_store", None)
    if task_ctx is None or store is None:
        return
    image_results = getattr(store.serializer, "type", None) == IMAGE_RESULT_SERIALIZER.type
    prefix = IMAGE_PREFIX if image_results else b""
    task_ctx.result_store = vetted_store(store, prefix)


def image_cache_policy(
    lock_manager: LockManager | None = None, key_storage: str | Path | None = None
) -> CachePolicy:
    """The image cache policy with serializable isolation and a lock manager.

    Args:
        lock_manager: A shared lock manager for workers on several machines (e.g.
            ``prefect_redis.locking.RedisLockManager``); otherwise the one
            ``PREFECT_COMETAPI_LOCK_MANAGER`` names, else machine-local lock files. It is
            wrapped so that Prefect's second release of a lock never aborts a commit
            (:class:`~prefect_cometapi.caching.locks.RetrySafeLockManager`).
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
    """Deprecated and a no-op: the image tasks already persist a paid result when they end.

    Prefect commits a nested task run's transaction only when the outermost one commits; the
    image tasks switch their own transaction to commit eagerly
    (:func:`prefect_cometapi.orchestration.options.persist_on_finish`, the one mechanism), so
    an image generated inside your task survives a later failure of that task without this
    wrapper. Kept so that code written for it keeps running; it warns once per call site.

    Yields:
        Nothing.
    """
    warnings.warn(
        "persist_when_paid() is no longer needed: the image tasks persist a paid result when "
        "they end, inside any task; remove the wrapper",
        DeprecationWarning,
        stacklevel=3,
    )
    yield
