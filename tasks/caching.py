"""The cache policy of the image tasks: keyed on what determines the image, nothing else.

The key covers the endpoint, model, prompt, size, quality, output format, compression,
background, moderation, input fidelity, ``n``, the sha256 of every input image and of the mask,
and an explicit ``variant``. It never covers the credentials block, the API key, timeouts,
retry settings or concurrency names: changing those does not buy a new image.

Two runs of the same request at the same time must not both pay, so the policy runs its
transaction at ``SERIALIZABLE`` isolation with a lock manager: the second run waits for the
first one's lock and then reads its persisted result. The default lock manager keeps lock files
on this machine (``$PREFECT_HOME/locks``, or ``PREFECT_COMETAPI_LOCK_DIR``); workers on several
machines need a shared one (``prefect-redis``'s ``RedisLockManager``) through
:func:`image_cache_policy`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.locking.protocol import LockManager
from prefect.settings import PREFECT_HOME

from prefect_cometapi.tasks.locking import AtomicFileLockManager

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


def default_lock_manager() -> LockManager:
    """Lock files on this machine: ``PREFECT_COMETAPI_LOCK_DIR`` or ``$PREFECT_HOME/locks``.

    Returns:
        An :class:`AtomicFileLockManager` (safe across threads and processes of one machine).
    """
    directory = os.environ.get("PREFECT_COMETAPI_LOCK_DIR") or Path(PREFECT_HOME.value()) / "locks"
    return AtomicFileLockManager(Path(directory))


def image_cache_policy(lock_manager: LockManager | None = None) -> CachePolicy:
    """The image cache policy with serializable isolation and a lock manager.

    Args:
        lock_manager: A shared lock manager for workers on several machines (e.g.
            ``prefect_redis.locking.RedisLockManager``); the machine-local default otherwise.

    Returns:
        A cache policy to pass as ``cache_policy=`` (``task.with_options(cache_policy=...)``).
    """
    return ImageRequestCachePolicy().configure(
        isolation_level="SERIALIZABLE", lock_manager=lock_manager or default_lock_manager()
    )
