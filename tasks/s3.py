"""The ``upload_to_s3`` task: store a generated image in S3 (or any S3-compatible store).

A thin Prefect wrapper around :func:`prefect_cometapi.s3.upload_image`, which can be used
without Prefect. Attempt budget: botocore retries each request
(:data:`~prefect_cometapi.s3.client.S3_MAX_ATTEMPTS` attempts), and the task retries the whole
upload :data:`UPLOAD_TASK_RETRIES` times, only when the error is transient. ``aupload_to_s3`` is
its async twin (the same upload in a worker thread).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from prefect_cometapi.billing.ledger import record_upload
from prefect_cometapi.errors import ValidationError, retry_on_transient
from prefect_cometapi.events import declare_asset
from prefect_cometapi.inputs.coerce import ImageLike, as_generated_image
from prefect_cometapi.orchestration.twins import async_twin
from prefect_cometapi.s3.client import make_s3_client
from prefect_cometapi.s3.keys import DEFAULT_KEY_TEMPLATE, render_key, validate_bucket_name
from prefect_cometapi.s3.upload import (
    UPLOAD_RETRY_DELAYS,
    S3Object,
    check_presign_expires,
    upload_image,
)

__all__ = ["UPLOAD_TASK_RETRIES", "aupload_to_s3", "upload_to_s3"]

UPLOAD_TASK_RETRIES = len(UPLOAD_RETRY_DELAYS)


@task(
    name="upload-to-s3",
    retries=UPLOAD_TASK_RETRIES,
    retry_delay_seconds=list(UPLOAD_RETRY_DELAYS),
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,  # idempotency comes from S3 itself (same sha256 at the key)
)
def upload_to_s3(
    image: ImageLike,
    bucket: str,
    key_template: str = DEFAULT_KEY_TEMPLATE,
    prefix: str = "",
    endpoint_url: str | None = None,
    aws_credentials: Any | None = None,
    presign_expires: int | None = None,
    key_vars: dict[str, Any] | None = None,
) -> S3Object:
    """Upload a generated image to S3 (idempotent, checksummed, multipart when large).

    The bucket name and the key are checked before anything is sent. Re-running with the same
    image writes the same key (the default template holds the UTC date and the sha256) and does
    not upload again. The object is declared as the Prefect asset ``s3://bucket/key`` (the
    ``prefect.asset.materialization.succeeded`` event the packaged flows emit) and recorded in
    the enclosing ``cost_summary`` block, if any.

    Args:
        image: The image: a ``GeneratedImage`` (from ``generate_image``, ``edit_image`` or
            ``upscale_image``), an ``ImageResult`` holding one image, bytes, a local path, an
            ``https://`` URL or an ``s3://`` URI (read with ``endpoint_url``).
        bucket: The bucket name (it must exist).
        key_template: The key template; placeholders as in
            :func:`~prefect_cometapi.s3.keys.render_key`.
        prefix: A folder for the key, e.g. ``"banners/"``.
        endpoint_url: An S3-compatible endpoint (MinIO, R2...); default AWS or
            ``AWS_ENDPOINT_URL_S3``.
        aws_credentials: A prefect-aws ``AwsCredentials`` block; default: boto3's standard chain.
        presign_expires: If set, also return a presigned GET URL valid this many seconds.
        key_vars: More placeholder values for the template (e.g. ``{"item_id": "sku-42"}``).

    Returns:
        The :class:`~prefect_cometapi.s3.upload.S3Object` (``existed=True`` when nothing had to
        be uploaded).
    """
    validate_bucket_name(bucket)
    check_presign_expires(presign_expires)
    image = as_generated_image(image, "image", endpoint_url=endpoint_url)
    key_vars = dict(key_vars or {})
    for reserved in ("prefix", "now"):
        if reserved in key_vars:
            raise ValidationError(
                "key_vars", f"{reserved!r} cannot be a key variable (use the parameter)", reserved
            )
    key = render_key(key_template, image, prefix=prefix, **key_vars)
    s3_client = make_s3_client(endpoint_url=endpoint_url, aws_credentials=aws_credentials)
    result = upload_image(image, bucket, key, s3_client=s3_client, presign_expires=presign_expires)
    declare_asset(result, image)
    record_upload(result, image)
    try:
        logger = get_run_logger()
    except Exception:  # noqa: BLE001 - called via .fn outside a run
        return result
    verb = "already there, not re-uploaded" if result.existed else "uploaded"
    logger.info("%s (%d bytes) %s", result.uri, result.size, verb)
    return result


aupload_to_s3 = async_twin(upload_to_s3)
