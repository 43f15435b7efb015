"""S3 machinery under the ``upload_to_s3`` task and the flows' delivery step.

* :mod:`.client`: the one client factory (:func:`make_s3_client`) and its cache
  (:func:`shared_s3_client`).
* :mod:`.keys`: bucket names and object keys, checked and rendered from templates.
* :mod:`.metadata`: the ``x-amz-meta-*`` stored with each image.
* :mod:`.failures`: the one classifier of S3 failures and their translation into our errors.
* :mod:`.upload`: :func:`upload_image`, idempotent, checksummed, multipart when large.

Attempt budget: botocore retries each request itself (``standard`` mode,
:data:`~.client.S3_MAX_ATTEMPTS` attempts: connection errors, 5xx, throttling); the callers
(the ``upload_to_s3`` task, the flows' delivery) then retry a whole upload twice, only when the
error is transient.
"""

from prefect_cometapi.s3.client import make_s3_client, s3_config, shared_s3_client
from prefect_cometapi.s3.failures import S3Failure, classify, s3_error
from prefect_cometapi.s3.keys import (
    DEFAULT_ITEM_KEY_TEMPLATE,
    DEFAULT_KEY_TEMPLATE,
    KEY_PLACEHOLDERS,
    normalize_prefix,
    render_key,
    template_fields,
    validate_bucket_name,
    validate_key,
)
from prefect_cometapi.s3.metadata import build_metadata
from prefect_cometapi.s3.upload import S3Object, check_presign_expires, presign, upload_image

__all__ = [
    "DEFAULT_ITEM_KEY_TEMPLATE",
    "DEFAULT_KEY_TEMPLATE",
    "KEY_PLACEHOLDERS",
    "S3Failure",
    "S3Object",
    "build_metadata",
    "check_presign_expires",
    "classify",
    "make_s3_client",
    "normalize_prefix",
    "presign",
    "render_key",
    "s3_config",
    "s3_error",
    "shared_s3_client",
    "template_fields",
    "upload_image",
    "validate_bucket_name",
    "validate_key",
]
