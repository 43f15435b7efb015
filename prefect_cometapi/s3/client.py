"""The one S3 client factory, and the process-wide cache of the clients it builds.

:func:`make_s3_client` builds a boto3 client with bounded retries and timeouts from the standard
credential chain, an explicit ``endpoint_url`` (MinIO, R2, moto) or a prefect-aws
``AwsCredentials`` block. :func:`shared_s3_client` hands out one client per process, endpoint
and credentials (:func:`credentials_identity`), shared by every thread (boto3 clients are
thread-safe and costly to build); it is how the tasks and the flows get their clients.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.session
from botocore.config import Config

__all__ = [
    "S3_CONNECT_TIMEOUT",
    "S3_MAX_ATTEMPTS",
    "S3_MAX_POOL_CONNECTIONS",
    "credentials_endpoint",
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

_KEEP = 32
"""Clients kept (one per endpoint and credentials); the least recently used goes first."""
_CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
)  # fmt: skip
"""The environment boto3's standard chain reads: a change makes another client."""
_clients: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()
_clients_lock = threading.Lock()
_gates: dict[tuple[Any, ...], threading.Lock] = {}
_loader: Any = None


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


def _botocore_session() -> Any:
    """A new botocore session that reads service models through this process's one loader
    (loading S3's models is most of the cost of a client; they are the same for every one)."""
    global _loader
    session = botocore.session.Session()
    with _clients_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        loader = _loader
    session.register_component("data_loader", loader)
    return session


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
        session: Any = boto3.session.Session(botocore_session=_botocore_session())
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


def credentials_endpoint(aws_credentials: Any | None) -> str | None:
    """The endpoint a credentials block names (``aws_client_parameters.endpoint_url``), if any.

    Args:
        aws_credentials: A prefect-aws credentials block, another credentials object or ``None``.

    Returns:
        The endpoint URL, or ``None``.
    """
    params = getattr(aws_credentials, "aws_client_parameters", None)
    url = getattr(params, "endpoint_url", None)
    return str(url) if url else None


def credentials_identity(aws_credentials: Any | None) -> tuple[Any, ...]:
    """What makes two credentials the same for the client cache.

    Args:
        aws_credentials: ``None`` (boto3's standard chain), a prefect-aws block
            (``AwsCredentials``, ``MinIOCredentials``: any pydantic model), another object with
            ``get_boto3_session()`` or a ``boto3.Session``.

    Returns:
        A hashable identity: for a block, a SHA-256 of its type and every field (secrets
        included, so an edited or another block is another identity, and the same saved block
        loaded twice is the same); for the standard chain, the ``AWS_*`` environment it reads;
        for any other object, the object itself.
    """
    if aws_credentials is None:
        return ("chain", *(os.environ.get(name) for name in _CHAIN_ENV))
    dump = getattr(aws_credentials, "model_dump", None)
    if callable(dump):
        fields = dump(mode="json", context={"include_secrets": True})
        blob = json.dumps([type(aws_credentials).__qualname__, fields], sort_keys=True, default=str)
        return ("block", hashlib.sha256(blob.encode()).hexdigest())
    return ("object", id(aws_credentials))


def shared_s3_client(endpoint_url: str | None = None, aws_credentials: Any | None = None) -> Any:
    """The one S3 client of this process for an endpoint and credentials.

    Every caller (the ``upload_to_s3`` tasks, the flows' delivery and ledger, ``s3://`` inputs)
    gets its client here: building one costs about a second of CPU (botocore loads its service
    models, a TLS context, a connection pool), and boto3 clients are thread-safe. Callers of the
    same endpoint and credentials share one client (its pool holds
    :data:`S3_MAX_POOL_CONNECTIONS` connections); the first callers of a new pair wait for one
    build, callers of other pairs do not wait for it.

    Args:
        endpoint_url: An S3-compatible endpoint, or ``None`` (the credentials' own, else AWS or
            ``AWS_ENDPOINT_URL_S3``).
        aws_credentials: As :func:`make_s3_client` takes them (a block, not a block's name:
            saved blocks are loaded by the caller).

    Returns:
        The client (built by :func:`make_s3_client` on first use).
    """
    endpoint_url = endpoint_url or credentials_endpoint(aws_credentials)
    key = (endpoint_url, credentials_identity(aws_credentials))
    with _clients_lock:
        entry = _clients.get(key)
        if entry is not None:
            _clients.move_to_end(key)
            return entry[0]
        gate = _gates.setdefault(key, threading.Lock())
    with gate:
        with _clients_lock:
            entry = _clients.get(key)
        if entry is None:
            client = make_s3_client(endpoint_url=endpoint_url, aws_credentials=aws_credentials)
            # The credentials object is kept with its client: an identity by id() stays valid.
            entry = (client, aws_credentials)
            with _clients_lock:
                _clients[key] = entry
                while len(_clients) > _KEEP:
                    _clients.popitem(last=False)
                _gates.pop(key, None)
        return entry[0]
