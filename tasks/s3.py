"""The ``upload_to_s3`` task: store a generated image in S3 (or any S3-compatible store).

A thin Prefect wrapper around :func:`prefect_cometapi.orchestration.upload.store_image`, the
upload path the packaged flows' delivery uses too (one client per process and credentials,
skip-if-there, checksum, asset, cost ledger, log); :func:`prefect_cometapi.s3.upload_image` can
be used without Prefect. Attempt budget: botocore retries each request
(:data:`~prefect_cometapi.s3.client.S3_MAX_ATTEMPTS` attempts), and the task retries the whole
upload :data:`UPLOAD_TASK_RETRIES` times, only when the error is transient. ``aupload_to_s3`` is
its async twin (the same upload in a thread of its own pool of :data:`UPLOAD_THREADS`).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_cometapi.errors import ValidationError, retry_on_transient
from prefect_cometapi.inputs.coerce import ImageLike, as_generated_image
from prefect_cometapi.orchestration.twins import async_twin
from prefect_cometapi.orchestration.upload import store_image
from prefect_cometapi.s3.client import S3_MAX_POOL_CONNECTIONS
from prefect_cometapi.s3.keys import DEFAULT_KEY_TEMPLATE, render_key
from prefect_cometapi.s3.target import s3_target
from prefect_cometapi.s3.upload import UPLOAD_RETRY_DELAYS, S3Object, check_presign_expires

__all__ = ["UPLOAD_TASK_RETRIES", "aupload_to_s3", "upload_to_s3"]

UPLOAD_TASK_RETRIES = len(UPLOAD_RETRY_DELAYS)
UPLOAD_THREADS = 64
"""Threads ``aupload_to_s3`` runs uploads in (its own pool, not the event loop's default of
``cpu_count + 4``): a gather of 48 uploads sends 48 at once. Below the client's
:data:`~prefect_cometapi.s3.client.S3_MAX_POOL_CONNECTIONS`, so each has a connection."""
assert UPLOAD_THREADS <= S3_MAX_POOL_CONNECTIONS


@task(
    name="upload-to-s3",
    retries=UPLOAD_TASK_RETRIES,
    retry_delay_seconds=list(UPLOAD_RETRY_DELAYS),
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,  # idempotency comes from S3 itself (same sha256 at the key)
)
def upload_to_s3(
    image: ImageLike,
    bucket: Any,
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
        bucket: The bucket name (it must exist), or a prefect-aws ``S3Bucket`` block: its
            bucket, its credentials (and their ``aws_client_parameters.endpoint_url``) and its
            ``bucket_folder`` (put before ``prefix``).
        key_template: The key template; placeholders as in
            :func:`~prefect_cometapi.s3.keys.render_key`.
        prefix: A folder for the key, e.g. ``"banners/"``.
        endpoint_url: An S3-compatible endpoint (MinIO, R2...); default AWS or
            ``AWS_ENDPOINT_URL_S3``.
        aws_credentials: A prefect-aws ``AwsCredentials`` block for a bucket name; default:
            boto3's standard chain. One client per process and credentials serves every call.
        presign_expires: If set, also return a presigned GET URL valid this many seconds.
        key_vars: More placeholder values for the template (e.g. ``{"item_id": "sku-42"}``).

    Returns:
        The :class:`~prefect_cometapi.s3.upload.S3Object` (``existed=True`` when nothing had to
        be uploaded).
    """
    target = s3_target(bucket, endpoint_url, aws_credentials)
    check_presign_expires(presign_expires)
    image = as_generated_image(image, "image", endpoint_url=endpoint_url)
    key_vars = dict(key_vars or {})
    for reserved in ("prefix", "now"):
        if reserved in key_vars:
            raise ValidationError(
                "key_vars", f"{reserved!r} cannot be a key variable (use the parameter)", reserved
            )
    key = render_key(key_template, image, prefix=target.prefix(prefix), **key_vars)
    return store_image(image, target, key, presign_expires=presign_expires)


aupload_to_s3 = async_twin(upload_to_s3, threads=UPLOAD_THREADS)
