"""Delivering an image: optional upscale, upload to S3, and the S3 object declared as an asset.

The upload runs inside the item's task run (not as a task run of its own): at hundreds of
images per batch, a task run per upload costs more orchestration than the upload itself. It is
the ``upload_to_s3`` task's own path (:func:`~prefect_cometapi.orchestration.upload.store_image`:
one client per process and credentials, skip-if-there, checksum, asset, cost ledger, log),
retried on the same terms (botocore's own retries first, then :data:`UPLOAD_RETRY_DELAYS`, only
for transient failures).

Assets: each object is declared as the Prefect asset ``s3://bucket/key`` with the event a
materializing task emits (``prefect.asset.materialization.succeeded``, the object's checksum,
size and format as metadata). Keys are only known after the image exists, which ``@materialize``
(assets fixed when the task is made) does not fit, so the event is emitted directly with
:func:`prefect.events.emit_event`; inside a run Prefect links it to the flow and task run.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime

from prefect_cometapi.forms.options import S3Options, UpscaleOptions
from prefect_cometapi.models import GeneratedImage, ImageResult
from prefect_cometapi.orchestration.named_blocks import load_block
from prefect_cometapi.orchestration.upload import store_image
from prefect_cometapi.reports.outcomes import DeliveredImage
from prefect_cometapi.s3.keys import render_key
from prefect_cometapi.s3.target import S3Target, s3_target
from prefect_cometapi.s3.upload import UPLOAD_RETRY_DELAYS
from prefect_cometapi.tasks.upscale import upscale_image

__all__ = ["deliver_image", "deliver_result", "s3_target_of"]

_upscale_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
"""Upscales at once in this process: one per core. Resizing is CPU-bound, so more would only
hold more 4K frames in memory without finishing sooner."""


def s3_target_of(s3: S3Options) -> S3Target:
    """Where a flow's S3 options point: the bucket and this process's client for it.

    Saved blocks named in the options (``bucket_block``, ``aws_credentials_block``) are loaded
    once per flow run (:func:`~prefect_cometapi.orchestration.named_blocks.load_block`); the
    client is built once per process and credentials. prefect-aws is imported only when a
    block is named.

    Args:
        s3: The S3 options.

    Returns:
        The target.
    """
    if s3.bucket_block:
        from prefect_aws.s3 import S3Bucket

        return s3_target(load_block(S3Bucket, s3.bucket_block), s3.endpoint_url)
    credentials = None
    if s3.aws_credentials_block:
        from prefect_aws.credentials import AwsCredentials

        credentials = load_block(AwsCredentials, s3.aws_credentials_block)
    return s3_target(s3.bucket, s3.endpoint_url, credentials)


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
    target = s3_target_of(s3)
    key = render_key(
        s3.key_template, image, prefix=target.prefix(s3.prefix), now=run_time, item=item_id
    )
    stored = store_image(
        image,
        target,
        key,
        presign_expires=s3.presign_expires,
        metadata_extra={"item": item_id},
        retry_delays=UPLOAD_RETRY_DELAYS,
    )
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
