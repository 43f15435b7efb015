"""Delivering an image: optional upscale, upload to S3, and the S3 object declared as an asset.

The upload runs inside the item's task run (not as a task run of its own): at hundreds of
images per batch, a task run per upload costs more orchestration than the upload itself. It is
retried here on the same terms as ``upload_to_s3`` (botocore's own retries first, then
:data:`UPLOAD_RETRY_DELAYS`, only for transient failures).

Assets: each object is declared as the Prefect asset ``s3://bucket/key`` with the event a
materializing task emits (``prefect.asset.materialization.succeeded``, the object's checksum,
size and format as metadata). Keys are only known after the image exists, which ``@materialize``
(assets fixed when the task is made) does not fit, so the event is emitted directly with
:func:`prefect.events.emit_event`; inside a run Prefect links it to the flow and task run.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime

from prefect import get_run_logger

from prefect_cometapi.errors import is_retryable
from prefect_cometapi.events import declare_asset
from prefect_cometapi.forms.options import S3Options, UpscaleOptions
from prefect_cometapi.models import GeneratedImage, ImageResult
from prefect_cometapi.reports.outcomes import DeliveredImage
from prefect_cometapi.s3.client import shared_s3_client
from prefect_cometapi.s3.keys import render_key
from prefect_cometapi.s3.upload import UPLOAD_RETRY_DELAYS, S3Object, upload_image
from prefect_cometapi.tasks.upscale import upscale_image

__all__ = ["deliver_image", "deliver_result"]

_upscale_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
"""Upscales at once in this process: one per core. Resizing is CPU-bound, so more would only
hold more 4K frames in memory without finishing sooner."""


def _store_image(image: GeneratedImage, key: str, s3: S3Options, item_id: str) -> S3Object:
    """Upload with ``upload_image`` (idempotent, checksummed), retrying transient failures.

    Args:
        image: The image.
        key: The object key.
        s3: The S3 options.
        item_id: Stored as ``x-amz-meta-item``.

    Returns:
        The stored object.

    Raises:
        CometAPIError: A non-transient failure, or a transient one that outlasted the retries.
    """
    client = shared_s3_client(s3.endpoint_url, s3.aws_credentials_block)
    for delay in (*UPLOAD_RETRY_DELAYS, None):
        try:
            return upload_image(
                image,
                s3.bucket,
                key,
                s3_client=client,
                presign_expires=s3.presign_expires,
                metadata_extra={"item": item_id},
            )
        except Exception as exc:
            if delay is None or not is_retryable(exc):
                raise
            get_run_logger().warning(
                "Upload of %s failed (%s); retrying in %.0f s", key, exc, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def deliver_image(
    image: GeneratedImage,
    item_id: str,
    s3: S3Options,
    upscale: UpscaleOptions,
    run_time: datetime | None = None,
) -> DeliveredImage:
    """Upscale (if asked), upload and declare one image; its bytes are dropped on return.

    Args:
        image: The generated image.
        item_id: The item's id (the ``{item}`` placeholder of the key template).
        s3: Where to store it.
        upscale: The upscale options.
        run_time: The time for the key's date placeholders (the run's start).

    Returns:
        Where it went (no bytes).
    """
    if upscale.enabled:
        with _upscale_slots:
            image = upscale_image.with_options(task_run_name=f"upscale-{item_id}-{image.index}")(
                image, **upscale.task_kwargs()
            )
    key = render_key(s3.key_template, image, prefix=s3.prefix, now=run_time, item=item_id)
    stored = _store_image(image, key, s3, item_id)
    declare_asset(stored, image)
    verb = "already in S3" if stored.existed else "uploaded"
    get_run_logger().info("%s %s (%s, %d bytes)", verb, stored.uri, image.size, stored.size)
    return DeliveredImage(
        uri=stored.uri,
        bucket=stored.bucket,
        key=stored.key,
        url=stored.presigned_url,
        sha256=stored.sha256,
        size=image.size,
        format=image.format,
        bytes=stored.size,
        existed=stored.existed,
    )


def deliver_result(
    result: ImageResult,
    item_id: str,
    s3: S3Options,
    upscale: UpscaleOptions,
    run_time: datetime | None,
) -> list[DeliveredImage]:
    """Deliver every image of a result, one at a time.

    Args:
        result: The API's result.
        item_id: The item id.
        s3: Where to store them.
        upscale: The upscale options.
        run_time: The time for the key's date placeholders.

    Returns:
        What was stored.
    """
    return [deliver_image(image, item_id, s3, upscale, run_time) for image in result.images]
