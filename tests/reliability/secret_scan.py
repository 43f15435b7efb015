"""Finding a secret anywhere: the detector and the places a run leaves text behind.

:func:`find_leaks` looks for a secret in every form it can take (itself, ``Bearer <key>``, its
head and tail, hex, base64 at every alignment), also inside compressed payloads and base64
strings of JSON (how Prefect persists results). The ``*_sources`` helpers collect what a run
leaves: log records, what the Prefect server keeps (logs, artifacts, task and flow runs with
their names, states and parameters), S3 objects with their metadata, and files. Used by
``test_no_secrets.py`` and ``test_hostile_parameters.py``.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import json
import logging
import lzma
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, TaskRunSort
from prefect.settings import (
    PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
)
from reliability_support import read_bucket

from prefect_cometapi.flows import RunSummary

LOG_PAGE = 200
MAX_DEPTH = 4
RECENT = 50
"""Runs and artifacts read back by :func:`recent_server_sources` (newest first)."""


def secret_forms(secret: str) -> dict[str, bytes]:
    """The byte strings whose presence means ``secret`` leaked.

    The key itself, ``Bearer <key>``, its head and tail (a masked key such as ``sk-ab***xyz``
    still gives them away), its hex, and its standard and URL-safe base64 at each of the three
    alignments it can have inside a larger base64 payload (the 4 characters at each end, which
    depend on the neighbouring bytes, are left out).

    Args:
        secret: The secret.

    Returns:
        ``form name -> bytes``.
    """
    raw = secret.encode()
    forms = {
        "key": raw,
        "bearer": b"Bearer " + raw,
        "head": raw[:20],
        "tail": raw[-16:],
        "hex": raw.hex().encode(),
    }
    for offset in range(3):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(b"\0" * offset + raw)
            forms[f"{name}@{offset}"] = text[4 if offset else 0 : -4]
    return forms


def _decompressed(data: bytes) -> bytes | None:
    for magic, decompress in (
        (b"\x1f\x8b", gzip.decompress),
        (b"\xfd7zXZ", lzma.decompress),
        (b"BZh", bz2.decompress),
        (b"\x78", zlib.decompress),
    ):
        if data.startswith(magic):
            try:
                return decompress(data)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                return None
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def payloads(data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """``data`` and what is packed inside it: compressed bytes, JSON with base64 strings.

    Prefect persists a result as JSON whose ``result`` is the base64 of the serialized (and
    perhaps compressed) value, so a key inside a result is found only after unpacking.

    Args:
        data: File contents or any other bytes.
        depth: Unpacking depth so far.

    Yields:
        ``(how it was unpacked, bytes)``, starting with ``("raw", data)``.
    """
    yield "raw", data
    if depth >= MAX_DEPTH:
        return
    inner = _decompressed(data)
    if inner is not None:
        for how, found in payloads(inner, depth + 1):
            yield f"decompressed/{how}", found
    if data[:1] not in (b"{", b"["):
        return
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return
    for text in _strings(document):
        if len(text) < 16:
            continue
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            continue
        for how, found in payloads(decoded, depth + 1):
            yield f"base64/{how}", found


def find_leaks(data: bytes | str, secrets: Iterable[str]) -> list[str]:
    """Every form of every secret found in ``data`` (or in what is packed inside it).

    Args:
        data: What to search.
        secrets: The secrets.

    Returns:
        ``"<form> in <how>"`` descriptions; empty when clean.
    """
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    found: list[str] = []
    all_forms = [(f"{i}:{name}", form) for i, s in enumerate(secrets) for name, form in
                 secret_forms(s).items()]  # fmt: skip
    for how, payload in payloads(blob):
        for name, form in all_forms:
            if form in payload:
                at = payload.index(form)
                found.append(f"key {name} in {how} near {payload[max(0, at - 60) : at]!r}")
    return found


def assert_no_secret(sources: Mapping[str, bytes | str], secrets: Iterable[str]) -> None:
    """Fail, naming every source and form, if any secret is in any source.

    Args:
        sources: ``where -> contents``.
        secrets: The secrets.
    """
    secrets = tuple(secrets)
    leaks = {
        where: found for where, text in sources.items() if (found := find_leaks(text, secrets))
    }
    report = [f"{where}: {'; '.join(found[:3])}" for where, found in leaks.items()]
    assert not leaks, f"the API key leaks through {len(leaks)} source(s):\n" + "\n".join(
        report[:20]
    )


def file_sources(*roots: Path) -> dict[str, bytes]:
    """Every regular file under ``roots`` with its bytes.

    Args:
        *roots: Directories (or files); missing ones are skipped.

    Returns:
        ``path -> bytes``.
    """
    files: dict[str, bytes] = {}
    for root in roots:
        if root.is_file():
            files[str(root)] = root.read_bytes()
            continue
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    try:
                        files[str(path)] = path.read_bytes()
                    except FileNotFoundError:  # a lock released while we walked
                        continue
    return files


def record_sources(records: Iterable[logging.LogRecord]) -> dict[str, str]:
    """What a log record can show: message, args, formatted text with traceback, attributes."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    sources: dict[str, str] = {}
    for i, record in enumerate(records):
        sources[f"log record {i} ({record.name})"] = "\n".join(
            (record.getMessage(), repr(record.args), formatter.format(record), repr(vars(record)))
        )
    return sources


def server_sources(flow_run_id: UUID) -> tuple[dict[str, str], dict[str, Any]]:
    """What the Prefect server holds about a flow run: its logs, artifacts, task runs and run.

    Args:
        flow_run_id: The flow run.

    Returns:
        ``where -> JSON text`` and the counts of logs, artifacts and task runs read.
    """
    sources: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        logs: list[Any] = []
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                limit=LOG_PAGE,
                offset=len(logs),
            )
            logs.extend(page)
            if len(page) < LOG_PAGE:
                break
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        flow_run = client.read_flow_run(flow_run_id)
    for log in logs:
        sources[f"server log {log.id}"] = log.model_dump_json()
    for artifact in artifacts:
        sources[f"artifact {artifact.key or artifact.id} ({artifact.type})"] = (
            artifact.model_dump_json()
        )
    for task_run in task_runs:
        sources[f"task run {task_run.name}"] = task_run.model_dump_json()
    sources["flow run parameters"] = json.dumps(flow_run.parameters, default=str)
    sources["flow run"] = flow_run.model_dump_json()
    counts = {
        "logs": len(logs),
        "artifacts": len(artifacts),
        "task_runs": len(task_runs),
        "parameters": flow_run.parameters,
    }
    return sources, counts


def s3_sources(s3_client: Any, bucket: str) -> dict[str, bytes | str]:
    """Every object of the bucket: its key, bytes, head (metadata included) and tags."""
    sources: dict[str, bytes | str] = {}
    for key, stored in read_bucket(s3_client, bucket).items():
        head = s3_client.head_object(Bucket=bucket, Key=key)
        head.pop("ResponseMetadata", None)
        tags = s3_client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
        sources[f"s3 key {key}"] = key
        sources[f"s3 object {key}"] = stored.data
        sources[f"s3 metadata {key}"] = json.dumps(
            {"metadata": stored.metadata, "head": head, "tags": tags}, default=str
        )
    return sources


def summary_sources(label: str, summary: RunSummary) -> dict[str, str]:
    """The run's summary and each failed item's error, as a user would read them."""
    sources = {f"{label} summary": summary.model_dump_json()}
    for outcome in summary.outcomes:
        if outcome.status == "failed":
            sources[f"{label} error of {outcome.item_id}"] = (
                f"{outcome.error_code}: {outcome.error}"
            )
    return sources


def storage_roots() -> list[Path]:
    """Result storage, lock files, the Prefect home and the test server's database directory."""
    roots = [Path(PREFECT_HOME.value()), Path(PREFECT_LOCAL_STORAGE_PATH.value())]
    if os.environ.get("PREFECT_COMETAPI_LOCK_DIR"):
        roots.append(Path(os.environ["PREFECT_COMETAPI_LOCK_DIR"]))
    url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    if url.startswith("sqlite") and ":///" in url:
        roots.append(Path(url.split(":///", 1)[1]).parent)
    return roots


def recent_server_sources(since: datetime) -> tuple[dict[str, str], int]:
    """What the Prefect server holds that was made at or after ``since``, in any run.

    Flow runs (names, states with their messages, parameters), task runs (those of no flow run
    too), artifacts and logs. For tests that run one thing at a time.

    Args:
        since: A timezone-aware time just before the thing ran.

    Returns:
        ``where -> JSON text``, and how many flow and task runs were read.
    """
    sources: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        flow_runs = [
            run
            for run in client.read_flow_runs(
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=RECENT
            )
            if run.created and run.created >= since
        ]
        task_runs = [
            run
            for run in client.read_task_runs(
                sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=RECENT
            )
            if run.created and run.created >= since
        ]
        artifacts = [
            artifact
            for artifact in client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=RECENT)
            if artifact.created and artifact.created >= since
        ]
        logs = client.read_logs(
            log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)), limit=LOG_PAGE
        )
    for run in flow_runs:
        sources[f"flow run {run.name}"] = run.model_dump_json()
        sources[f"flow run {run.name} parameters"] = json.dumps(run.parameters, default=str)
    for run in task_runs:
        sources[f"task run {run.name}"] = run.model_dump_json()
    for artifact in artifacts:
        sources[f"artifact {artifact.key or artifact.id}"] = artifact.model_dump_json()
    for log in logs:
        sources[f"server log {log.id}"] = log.model_dump_json()
    return sources, len(flow_runs) + len(task_runs)
