"""The one S3 client factory, and the process-wide cache of the clients it builds.

:func:`make_s3_client` builds a boto3 client with bounded retries and timeouts from the standard
credential chain, an explicit ``endpoint_url`` (MinIO, R2, moto) or a prefect-aws
``AwsCredentials`` block. :func:`shared_s3_client` hands out one client per endpoint and block
name, shared by every thread (boto3 clients are thread-safe and costly to build).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

__all__ = [
    "S3_CONNECT_TIMEOUT",
    "S3_MAX_ATTEMPTS",
    "S3_MAX_POOL_CONNECTIONS",
    "S3_READ_TIMEOUT",
    "make_s3_client",
    "s3_config",
    "shared_s3_client",
]

S3_MAX_ATTEMPTS = 4
"""Attempts botocore makes per request, the first included (``standard`` retry mode)."""
S3_CONNECT_TIMEOUT = 10.0
S3_READ_TIMEOUT = 60.0
S3_MAX_POOL_CONNECTIONS = 100
"""HTTP connections a client keeps: one client is shared by a batch's items in flight (up to
64 requests plus the items delivering), and botocore's default of 10 would drop and reopen them."""

_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def s3_config(**overrides: Any) -> Config:
    """The botocore ``Config`` every client of ours uses.

    Args:
        **overrides: Any ``botocore.config.Config`` argument to change.

    Returns:
        ``standard`` retries (:data:`S3_MAX_ATTEMPTS` attempts: connection errors, 5xx and
        throttling), bounded connect/read timeouts, SigV4 signing (needed for presigned URLs) and
        a connection pool of :data:`S3_MAX_POOL_CONNECTIONS`.
    """
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        "connect_timeout": S3_CONNECT_TIMEOUT,
        "read_timeout": S3_READ_TIMEOUT,
        "signature_version": "s3v4",
        "max_pool_connections": S3_MAX_POOL_CONNECTIONS,
    }
    options.update(overrides)
    return Config(**options)


def make_s3_client(
    endpoint_url: str | None = None,
    region_name: str | None = None,
    aws_credentials: Any | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Build a boto3 S3 client.

    Args:
        endpoint_url: An S3-compatible endpoint (MinIO, Cloudflare R2, moto...). ``None`` uses
            AWS, or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` if set (boto3 honours them).
        region_name: The region; ``None`` uses the standard chain (``AWS_DEFAULT_REGION``,
            the profile, or the credentials block's own region).
        aws_credentials: A prefect-aws ``AwsCredentials`` block (``pip install
            prefect-cometapi[aws]``), or any object with ``get_boto3_session()``, or a
            ``boto3.Session``. ``None`` uses boto3's standard credential chain. The block's
            ``aws_client_parameters`` (endpoint, verify, config) are honoured; an explicit
            ``endpoint_url`` wins.
        config_overrides: :func:`s3_config` arguments to change (e.g. fewer attempts and
            shorter timeouts for a quick check).

    Returns:
        A boto3 S3 client with :func:`s3_config` (the block's own ``Config`` merged on top).

    Raises:
        TypeError: ``aws_credentials`` is none of the accepted kinds.
    """
    config = s3_config(**(config_overrides or {}))
    kwargs: dict[str, Any] = {}
    if aws_credentials is None:
        session: Any = boto3.session.Session()
    elif isinstance(aws_credentials, boto3.session.Session):
        session = aws_credentials
    elif callable(getattr(aws_credentials, "get_boto3_session", None)):
        session = aws_credentials.get_boto3_session()
        params = getattr(aws_credentials, "aws_client_parameters", None)
        overrides = params.get_params_override() if params is not None else {}
        if isinstance(overrides, Mapping):
            block_config = overrides.get("config")
            if isinstance(block_config, Config):
                config = config.merge(block_config)
            kwargs.update(
                {k: v for k, v in overrides.items() if k in ("endpoint_url", "verify", "use_ssl")}
            )
    else:
        raise TypeError(
            "aws_credentials must be a prefect_aws AwsCredentials block (or any object with "
            f"get_boto3_session()) or a boto3.Session, got {type(aws_credentials).__name__}"
        )
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if region_name:
        kwargs["region_name"] = region_name
    return session.client("s3", config=config, **kwargs)


def shared_s3_client(endpoint_url: str | None, aws_credentials_block: str | None) -> Any:
    """One S3 client per endpoint and credentials block name, shared by every thread.

    Args:
        endpoint_url: S3-compatible endpoint, or ``None``.
        aws_credentials_block: Name of a saved prefect-aws ``AwsCredentials`` block, or ``None``
            for boto3's standard credential chain.

    Returns:
        The client (built by :func:`make_s3_client` on first use).
    """
    key = (endpoint_url, aws_credentials_block)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            aws = None
            if aws_credentials_block:
                from prefect.blocks.core import Block

                aws = Block.load(f"aws-credentials/{aws_credentials_block}")
            client = make_s3_client(endpoint_url=endpoint_url, aws_credentials=aws)
            _clients[key] = client
        return client
