"""The image cache: its key, its policy and the lock managers that keep it from paying twice."""

from prefect_cometapi.caching.keys import image_cache_key
from prefect_cometapi.caching.locks import (
    LOCK_DIR_ENV,
    LOCK_MANAGER_ENV,
    AtomicFileLockManager,
    RetrySafeLockManager,
    default_lock_manager,
    lock_manager_from_url,
    retry_safe,
)
from prefect_cometapi.caching.policy import (
    KEY_STORAGE_ENV,
    ImageRequestCachePolicy,
    image_cache_policy,
    persist_when_paid,
)

__all__ = [
    "KEY_STORAGE_ENV",
    "LOCK_DIR_ENV",
    "LOCK_MANAGER_ENV",
    "AtomicFileLockManager",
    "ImageRequestCachePolicy",
    "RetrySafeLockManager",
    "default_lock_manager",
    "image_cache_key",
    "image_cache_policy",
    "lock_manager_from_url",
    "persist_when_paid",
    "retry_safe",
]
