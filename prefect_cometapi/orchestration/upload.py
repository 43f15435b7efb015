"""The one upload path: what ``upload_to_s3`` does and what the flows' delivery does, one code.

:func:`store_image` stores an image at ``s3://bucket/key`` with this process's one client for the
target's endpoint and credentials, skips it when the identical object is already there, has S3
verify its SHA-256, declares the object as a Prefect asset, records it in the enclosing
``cost_summary`` ledger and logs one line. The ``upload_to_s3`` tasks call it (their retries are
the task's own); the packaged flows' delivery calls it inside the item's task run, with the same
retry delays and predicate applied here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect.logging import get_run_logger

from prefect_cometapi.billing.ledger import record_upload
from prefect_cometapi.errors import is_retryable
from prefect_cometapi.events import declare_asset
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.s3.target import S3Target
from prefect_cometapi.s3.upload import S3Object, upload_image

__all__ = ["store_image"]


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a Prefect run
        return logging.getLogger(__name__)


def store_image(
    image: GeneratedImage,
    target: S3Target,
    key: str,
    *,
    presign_expires: int | None = None,
    metadata_extra: Mapping[str, Any] | None = None,
    retry_delays: Sequence[float] = (),
) -> S3Object:
    """Upload one image once, declare it and record it (the tasks' and the flows' one path).

    Args:
        image: The image.
        target: Where it goes (:func:`~prefect_cometapi.s3.target.s3_target`).
        key: The object key (rendered, with the target's folder).
        presign_expires: If set, also return a presigned GET URL valid this many seconds.
        metadata_extra: More ``x-amz-meta-*`` entries (the flows store the item id).
        retry_delays: Seconds before each further attempt of an upload that failed
            transiently (after botocore's own retries); empty when the caller retries (the
            task's own retries).

    Returns:
        The stored object (``existed=True`` when nothing had to be uploaded).

    Raises:
        CometAPIError: A non-transient failure, or a transient one that outlasted the retries.
    """
    client = target.client
    for delay in (*retry_delays, None):
        try:
            stored = upload_image(
                image,
                target.bucket,
                key,
                s3_client=client,
                presign_expires=presign_expires,
                metadata_extra=metadata_extra,
            )
            break
        except Exception as exc:
            if delay is None or not is_retryable(exc):
                raise
            _logger().warning("Upload of %s failed (%s); retrying in %.0f s", key, exc, delay)
            time.sleep(delay)
    declare_asset(stored, image)
    record_upload(stored, image)
    verb = "already in S3, not uploaded again" if stored.existed else "uploaded"
    _logger().info(
        "%s %s (%s %s, %d bytes)", verb, stored.uri, image.size, image.format, stored.size
    )
    return stored
