"""The doctor's checks of where things are kept: the S3 bucket, the lock manager and the result
storage the image cache needs (shared storage for a fleet). Each returns one
:class:`~.result.CheckResult`.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

from prefect_cometapi.allowlist import ALLOWED_S3_ENDPOINTS_ENV, check_s3_endpoint, origin
from prefect_cometapi.caching.locks import (
    LOCK_DIR_ENV,
    LOCK_MANAGER_ENV,
    AtomicFileLockManager,
    lock_manager_from_url,
)
from prefect_cometapi.caching.policy import KEY_STORAGE_ENV
from prefect_cometapi.doctor.result import CheckResult, DoctorContext, Status
from prefect_cometapi.errors import CometAPIError, redact
from prefect_cometapi.s3 import classify, make_s3_client, validate_bucket_name

__all__ = ["check_lock_manager", "check_result_storage", "check_s3_bucket"]

PROBE_PREFIX = ".prefect-cometapi-doctor-probe-"
"""The start of the probe object's key (``--write-probe``); the doctor removes it again."""
_BLOCK_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][\w.-]*$")
_REDIS_FIX = (
    "start it, or check the host, port and password in {env}; workers on one machine can use "
    "lock files instead ({env}=file)"
)


def _s3_config(timeout_s: float) -> dict[str, Any]:
    return {
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": timeout_s,
        "read_timeout": timeout_s,
    }


def check_s3_bucket(ctx: DoctorContext) -> CheckResult:
    """The bucket exists and answers; with ``--write-probe`` a probe object is written and removed.

    The endpoint must pass the worker's S3 allow-list as the flows' ``s3.endpoint_url`` does.

    Args:
        ctx: The doctor's context.

    Returns:
        The check's result.
    """
    opts = ctx.options
    bucket = opts.bucket
    if not bucket:
        return CheckResult(
            "s3-bucket", Status.SKIPPED, "not asked (--bucket NAME checks the flows' bucket)"
        )
    try:
        validate_bucket_name(bucket)
        endpoint = check_s3_endpoint(opts.s3_endpoint_url, param="--s3-endpoint-url")
    except CometAPIError as exc:
        fix = "correct --bucket"
        if opts.s3_endpoint_url and "not an allowed S3 endpoint" in str(exc):
            scheme, host, port = origin(opts.s3_endpoint_url, "--s3-endpoint-url")
            fix = f"on this worker: export {ALLOWED_S3_ENDPOINTS_ENV}={scheme}://{host}:{port}"
        return CheckResult("s3-bucket", Status.PROBLEM, redact(str(exc)), fix, {"bucket": bucket})
    aws = None
    if opts.aws_credentials_block:
        try:
            from prefect.blocks.core import Block

            aws = Block.load(f"aws-credentials/{opts.aws_credentials_block}")
        except Exception as exc:  # noqa: BLE001 - not found, or no Prefect API
            return CheckResult(
                "s3-bucket",
                Status.PROBLEM,
                f"the AwsCredentials block {opts.aws_credentials_block!r} does not load "
                f"({type(exc).__name__})",
                "save it (UI: Blocks > AWS Credentials) or leave out --aws-credentials-block to "
                "use the standard AWS credential chain",
                {"bucket": bucket},
            )
    where = f"s3://{bucket}" + (f" at {endpoint}" if endpoint else "")
    details = {"bucket": bucket, "endpoint_url": endpoint, "write_probe": opts.write_probe}
    client = make_s3_client(
        endpoint_url=endpoint, aws_credentials=aws, config_overrides=_s3_config(opts.timeout_s)
    )
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - classified below
        return _bucket_failure(where, classify(exc), details)
    if not opts.write_probe:
        return CheckResult(
            "s3-bucket",
            Status.OK,
            f"{where} answers (writing not checked: --write-probe writes and removes a probe)",
            details=details,
        )
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"prefect-cometapi doctor probe\n")
    except Exception as exc:  # noqa: BLE001 - classified below
        failure = classify(exc)
        return CheckResult(
            "s3-bucket",
            Status.PROBLEM,
            f"{where} answers but this worker cannot write to it ({failure.code or failure.kind}"
            f", HTTP {failure.status}): every delivery would fail after the images are paid for",
            "give this worker's AWS identity s3:PutObject on the bucket (check the bucket "
            "policy and the IAM role), or use another bucket",
            details,
        )
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:  # noqa: BLE001 - the flows never delete; a warning only
        return CheckResult(
            "s3-bucket",
            Status.WARNING,
            f"{where} is writable, but the probe object {key} could not be removed "
            f"({classify(exc).code})",
            f"delete s3://{bucket}/{key} by hand (the flows themselves never delete)",
            details,
        )
    return CheckResult(
        "s3-bucket",
        Status.OK,
        f"{where} answers and is writable (a probe object was written and removed)",
        details=details,
    )


def _bucket_failure(where: str, failure: Any, details: dict[str, Any]) -> CheckResult:
    if failure.kind in ("no_bucket", "no_key"):
        message, fix = f"{where} does not exist", "create it, or correct --bucket"
    elif failure.kind == "denied":
        message = f"{where} refuses this worker ({failure.code}, HTTP {failure.status})"
        fix = "give this worker's AWS identity s3:ListBucket and s3:PutObject on the bucket"
    elif failure.kind == "no_credentials":
        message = f"no AWS credentials to reach {where}"
        fix = (
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role, or "
            "pass --aws-credentials-block NAME"
        )
    else:
        message = f"{where} cannot be reached ({failure.code}: {failure.message[:200]})"
        fix = "check the endpoint URL, the region and this machine's network"
    return CheckResult("s3-bucket", Status.PROBLEM, message, fix, details)


def check_lock_manager(ctx: DoctorContext) -> CheckResult:
    """The image cache's lock manager works: a writable lock directory or a Redis that answers.

    Args:
        ctx: The doctor's context.

    Returns:
        The check's result (a warning for lock files with ``--fleet``: they cover one machine).
    """
    value = os.environ.get(LOCK_MANAGER_ENV, "").strip()
    try:
        manager = lock_manager_from_url(value)
    except ValueError as exc:
        return CheckResult(
            "lock-manager",
            Status.PROBLEM,
            redact(str(exc), value),
            f"set {LOCK_MANAGER_ENV}=file, or redis://host:6379/0 with prefect-redis installed",
        )
    if isinstance(manager, AtomicFileLockManager):
        return _check_lock_dir(manager.lock_files_directory, ctx.options.fleet)
    return _check_redis(manager, ctx.options.timeout_s)


def _check_lock_dir(directory: Path, fleet: bool) -> CheckResult:
    details = {"kind": "file", "directory": str(directory)}
    token = uuid.uuid4().hex
    probe, link = directory / f".doctor-{token}.tmp", directory / f".doctor-{token}.lock"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("prefect-cometapi doctor probe")
        os.link(probe, link)  # the lock manager publishes each lock with a hard link
    except OSError as exc:
        return CheckResult(
            "lock-manager",
            Status.PROBLEM,
            f"the lock directory {directory} is not writable, or has no hard links "
            f"({exc.strerror or type(exc).__name__}): the image tasks cannot take their locks",
            f"create it writable by the worker's user, or set {LOCK_DIR_ENV} to a local "
            "directory every worker of this machine sees",
            details,
        )
    finally:
        for path in (link, probe):
            try:
                path.unlink()
            except OSError:
                pass
    if fleet:
        return CheckResult(
            "lock-manager",
            Status.WARNING,
            f"lock files in {directory} cover the workers of this machine only: workers on "
            "several machines asking for the same image at once each pay for it",
            f"pip install 'prefect-cometapi[redis]' and export {LOCK_MANAGER_ENV}="
            "redis://<host>:6379/0 on every worker",
            details,
        )
    return CheckResult(
        "lock-manager",
        Status.OK,
        f"lock files in {directory}: writable, with hard links",
        details=details,
    )


def _check_redis(manager: Any, timeout_s: float) -> CheckResult:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    shown = f"redis://{manager.host}:{manager.port}/{manager.db}"
    details = {"kind": "redis", "url": shown}
    client = redis.Redis(
        host=manager.host,
        port=manager.port,
        db=manager.db,
        username=manager.username,
        password=manager.password,
        ssl=manager.ssl,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # one try: redis-py's default retries take seconds
    )
    try:
        client.ping()
    except redis.AuthenticationError:
        return CheckResult(
            "lock-manager",
            Status.PROBLEM,
            f"Redis at {shown} refuses the user name or password",
            f"correct the credentials in {LOCK_MANAGER_ENV}",
            details,
        )
    except (redis.RedisError, OSError) as exc:
        return CheckResult(
            "lock-manager",
            Status.PROBLEM,
            f"Redis at {shown} ({LOCK_MANAGER_ENV}) is unreachable ({type(exc).__name__}): "
            "the image tasks cannot take their locks",
            _REDIS_FIX.format(env=LOCK_MANAGER_ENV),
            details,
        )
    finally:
        client.close()
    return CheckResult("lock-manager", Status.OK, f"Redis at {shown} answers", details=details)


def check_result_storage(ctx: DoctorContext) -> CheckResult:
    """Where task results (the image cache) are persisted, and whether a fleet shares them.

    Args:
        ctx: The doctor's context.

    Returns:
        The check's result (a warning for local-only storage with ``--fleet``).
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    fleet = ctx.options.fleet
    slug = ctx.options.result_storage or settings.results.default_storage_block
    key_storage = os.environ.get(KEY_STORAGE_ENV, "").strip()
    local_keys = bool(key_storage) and not _BLOCK_SLUG.match(key_storage)
    if not slug:
        path = settings.results.local_storage_path
        details = {"storage": "local", "path": str(path)}
        if fleet:
            return CheckResult(
                "result-storage",
                Status.WARNING,
                f"results are local-only ({path}; PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK is not "
                "set): the other machines never see this one's images, so the fleet pays again "
                "for them",
                "save an S3Bucket block and set PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK="
                "s3-bucket/NAME in the workers' (or the deployments' job) environment; "
                "--result-storage s3-bucket/NAME checks such a block",
                details,
            )
        return CheckResult(
            "result-storage",
            Status.OK,
            f"results are kept on this machine ({path}); --fleet checks for shared storage",
            details=details,
        )
    details = {"storage": slug}
    if not ctx.prefect_ok:
        return CheckResult(
            "result-storage", Status.SKIPPED, f"{slug} not loaded: no Prefect API", "", details
        )
    from prefect.blocks.core import Block

    try:
        block = Block.load(slug)
    except Exception as exc:  # noqa: BLE001 - not found or not loadable
        return CheckResult(
            "result-storage",
            Status.PROBLEM,
            f"the result storage block {slug!r} does not load ({type(exc).__name__}): every "
            "image task would fail to persist its result",
            "save it (see docs/doctor.md), or correct PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK",
            details,
        )
    kind = type(block).__name__
    details["type"] = kind
    if fleet and (kind == "LocalFileSystem" or local_keys):
        what = (
            f"{slug} is a {kind}" if kind == "LocalFileSystem" else f"{KEY_STORAGE_ENV} is a path"
        )
        return CheckResult(
            "result-storage",
            Status.WARNING,
            f"{what}: the cache is local to this machine unless every worker mounts it",
            "use an S3Bucket block for the results (and leave the cache keys with them)",
            details,
        )
    return CheckResult(
        "result-storage", Status.OK, f"results go to the block {slug} ({kind})", details=details
    )
