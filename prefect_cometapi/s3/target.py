"""Where uploads go: a bucket, its client and a folder, from a bucket name or an S3Bucket block.

:func:`s3_target` is the one reading of "where to upload" for the ``upload_to_s3`` tasks and the
flows' delivery: a bucket name with an optional endpoint and credentials, or a prefect-aws
``S3Bucket`` block (its ``bucket_name``, its ``credentials`` with their
``aws_client_parameters.endpoint_url``, its ``bucket_folder``). prefect-aws stays optional: a
block is recognised without importing it (a block can only exist if it was imported).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from prefect_cometapi.errors import ValidationError
from prefect_cometapi.s3.client import credentials_endpoint, shared_s3_client
from prefect_cometapi.s3.keys import normalize_prefix, validate_bucket_name

__all__ = ["S3Target", "s3_target", "saved_bucket_block"]


@dataclass(frozen=True)
class S3Target:
    """A resolved upload destination.

    Attributes:
        bucket: The bucket name (checked).
        endpoint_url: The endpoint given explicitly, else the credentials' own, else ``None``.
        credentials: The credentials the client is built from (``None``: boto3's chain).
        folder: The S3Bucket block's ``bucket_folder`` (``""`` or ending in ``/``), put before
            every key's prefix.
    """

    bucket: str
    endpoint_url: str | None = None
    credentials: Any | None = None
    folder: str = ""

    @property
    def client(self) -> Any:
        """This process's one client for the endpoint and credentials (:func:`shared_s3_client`).

        Returns:
            A boto3 S3 client.
        """
        return shared_s3_client(self.endpoint_url, self.credentials)

    def prefix(self, prefix: str) -> str:
        """A key prefix under the block's folder.

        Args:
            prefix: The caller's prefix (``""`` or a relative folder).

        Returns:
            ``folder + prefix``, each part normalised to end in ``/``.
        """
        return self.folder + normalize_prefix(prefix) if self.folder else prefix


def is_s3_bucket_block(value: Any) -> bool:
    """Whether ``value`` is a prefect-aws ``S3Bucket`` block (without importing prefect-aws).

    Args:
        value: Anything.

    Returns:
        ``True`` for an ``S3Bucket`` instance.
    """
    module = sys.modules.get("prefect_aws.s3")
    bucket_type = getattr(module, "S3Bucket", None)
    return bucket_type is not None and isinstance(value, bucket_type)


def saved_bucket_block(value: Any) -> str:
    """The name of a saved ``S3Bucket`` block, for a run parameter (which holds names: it is
    stored with the run and read by other processes, and must not carry credentials).

    Args:
        value: What was given as a bucket.

    Returns:
        The block's saved name.

    Raises:
        ValidationError: ``param="s3.bucket"`` naming what it got: not an ``S3Bucket`` block, or
            one never saved.
    """
    if not is_s3_bucket_block(value):
        raise ValidationError(
            "s3.bucket", f"a bucket name or a saved S3Bucket block, not {_kind(value)}"
        )
    name = getattr(value, "_block_document_name", None)
    if not name or getattr(value, "_is_anonymous", False):
        raise ValidationError(
            "s3.bucket",
            "this S3Bucket block is not saved: save it (block.save('name')) and give its name "
            "as bucket_block",
            value.bucket_name,
        )
    return str(name)


def s3_target(
    bucket: Any, endpoint_url: str | None = None, aws_credentials: Any | None = None
) -> S3Target:
    """Read a ``bucket`` argument: a bucket name or a prefect-aws ``S3Bucket`` block.

    Args:
        bucket: The bucket name, or an ``S3Bucket`` block (its bucket name, credentials,
            endpoint and ``bucket_folder``).
        endpoint_url: An endpoint that wins over the credentials' own.
        aws_credentials: Credentials for a bucket name (``None``: boto3's standard chain); not
            with an ``S3Bucket`` block, which carries its own.

    Returns:
        The target (no request is sent; the client is built on first use).

    Raises:
        ValidationError: ``param="bucket"`` naming what it got when it is neither a bucket
            name nor an ``S3Bucket`` block, or a name that breaks S3's rules;
            ``param="aws_credentials"`` when both a block and credentials are given.
    """
    if isinstance(bucket, str):
        validate_bucket_name(bucket)
        return S3Target(
            bucket=bucket,
            endpoint_url=endpoint_url or credentials_endpoint(aws_credentials),
            credentials=aws_credentials,
        )
    if is_s3_bucket_block(bucket):
        if aws_credentials is not None:
            raise ValidationError(
                "aws_credentials",
                "an S3Bucket block carries its own credentials: give the block or the "
                "credentials with a bucket name, not both",
                type(aws_credentials).__name__,
            )
        credentials = bucket.credentials
        return S3Target(
            bucket=validate_bucket_name(bucket.bucket_name),
            endpoint_url=endpoint_url or credentials_endpoint(credentials),
            credentials=credentials,
            folder=normalize_prefix(bucket.bucket_folder or ""),
        )
    raise ValidationError(
        "bucket",
        "give a bucket name (e.g. 'my-images') or a prefect-aws S3Bucket block, not "
        f"{_kind(bucket)}",
        bucket if isinstance(bucket, (int, float, bytes, type(None))) else type(bucket).__name__,
    )


def _kind(value: Any) -> str:
    """How an error names a value of the wrong kind (its type, and a block's slug)."""
    slug = getattr(type(value), "_block_type_slug", None) or getattr(value, "block_type_slug", None)
    name = type(value).__name__
    if slug:
        return f"a {name} block ({slug})"
    if value is None:
        return "None"
    return f"a {name}"
