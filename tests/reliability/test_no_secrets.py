"""Issue 6, item 8: no secret anywhere, after a batch with failures and retries.

Two ``batch_generate`` runs go through faults (429 and 503 with short Retry-After, a dropped
connection, items refused by the content policy, an item whose every attempt gets a 503 until the
task retries run out, an item answered 401): one run names a SAVED ``CometAPICredentials`` block
(so the run's parameters hold only the name), the other passes a block object. Then the two keys
(long, random, one shaped like ``sk-...`` and one not, so no redaction pattern can catch it by
luck) must appear in none of: the log records (DEBUG, Prefect's and ours), the runs' logs and
artifacts and task runs as the Prefect server returns them, the flow runs' stored parameters, the
persisted results, cache and lock files and the test server's database, the S3 objects with their
metadata, and the failed items' error texts. Files are searched for the key, ``Bearer <key>``,
its base64 at every alignment, and inside base64 and compressed payloads (how Prefect persists
results). One helper checks every source, and a sanity test proves it finds a planted key.
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
import pickle
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from prefect.settings import (
    PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_DATABASE_CONNECTION_URL,
)
from reliability_support import (
    batch_items,
    batch_template,
    cached_prompts,
    read_bucket,
    s3_options,
    small_image,
)

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.flows import RunSummary, batch_generate
from prefect_cometapi.templates import render_template

#: Long random keys: a substring search for them cannot hit anything by chance.
KEY_SAVED = f"sk-nosecret-{uuid.uuid4().hex}{uuid.uuid4().hex}"
KEY_OBJECT = f"cmtkey_{uuid.uuid4().hex}{uuid.uuid4().hex}"
KEYS = (KEY_SAVED, KEY_OBJECT)

N_ITEMS = 10
MODERATED = (2, 7)
ALWAYS_503 = 4  # every attempt answered 503: client and task retries, then a failure
AUTH_401 = 8  # answered 401, as a revoked key would be
CLIENT_RETRIES = 1
LOGGERS = ("prefect", "prefect._internal", "prefect.extra", "prefect_cometapi", "httpx", "httpcore")
LOG_PAGE = 200
MAX_DEPTH = 4


# ------------------------------------------------------------------------------ the detector


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


def assert_no_secret(sources: Mapping[str, bytes | str], secrets: Iterable[str] = KEYS) -> None:
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


# ------------------------------------------------------------------------------ the sources


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG on Prefect's and our loggers, including those that do not propagate."""
    attached = []
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
        logger = logging.getLogger(name)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            attached.append(logger)
    yield caplog
    for logger in attached:
        logger.removeHandler(caplog.handler)


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


# ------------------------------------------------------------------------------ the tests


def test_the_detector_finds_a_planted_key_in_every_form(tmp_path: Path) -> None:
    """The check cannot pass by looking in the wrong way: a planted key is always found."""
    key = KEY_SAVED
    record = pickle.dumps({"prompt": "a lamp", "note": key})
    planted = {
        "log.txt": f"2026-01-01 WARNING retry with key {key}\n".encode(),
        "headers.json": json.dumps({"Authorization": f"Bearer {key}"}).encode(),
        "hex.txt": key.encode().hex().encode(),
        "masked.txt": f"Incorrect API key provided: {key[:20]}****{key[-16:]}".encode(),
        "result.json": json.dumps({"result": base64.b64encode(record).decode()}).encode(),
        "lzma.json": json.dumps(
            {"result": base64.b64encode(lzma.compress(record)).decode()}
        ).encode(),
        "zlib.bin": zlib.compress(b"x" * 100 + key.encode()),
    }
    for shift in range(3):  # the key at each alignment inside a base64 payload
        payload = base64.b64encode(b"p" * shift + key.encode() + b"suffix")
        planted[f"b64-{shift}.txt"] = b"data=" + payload
    for name, data in planted.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AssertionError, match="leaks"):
            assert_no_secret(file_sources(tmp_path / name))
    (tmp_path / "clean.json").write_bytes(
        json.dumps(
            {"result": base64.b64encode(pickle.dumps({"k": KEY_OBJECT[:10]})).decode()}
        ).encode()
    )
    assert_no_secret(file_sources(tmp_path / "clean.json"))
    with pytest.raises(AssertionError, match="10 source"):
        assert_no_secret(file_sources(tmp_path))  # a fault in one file does not hide another


def test_no_secret_anywhere_after_a_batch_with_failures_and_retries(
    emulator: Any,
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    fast_task_retries: Any,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    emulator.configure(
        api_keys=KEYS, rate_429=0.2, rate_503=0.1, retry_after_s=0.05, latency_s=0.01, seed=8
    )
    emulator.script("429", "503", "drop")  # one of each up front, whatever the draw
    block_name = f"nosecret-{uuid.uuid4().hex[:8]}"
    CometAPICredentials(
        api_key=KEY_SAVED, base_url=emulator.base_url, max_retries=CLIENT_RETRIES
    ).save(block_name)
    by_object = CometAPICredentials(
        api_key=KEY_OBJECT, base_url=emulator.base_url, max_retries=CLIENT_RETRIES
    )
    items = batch_items(N_ITEMS, moderated=MODERATED)
    items[ALWAYS_503]["extra"] = "[[fault:503]]"
    items[AUTH_401]["extra"] = "[[fault:401]]"
    failing = {f"item-{i:03d}" for i in (*MODERATED, ALWAYS_503, AUTH_401)}

    runs: dict[str, tuple[UUID, RunSummary, str]] = {}
    for label, credentials in (("by-name", block_name), ("by-object", by_object)):
        tag = f"nosecret-{label}-{uuid.uuid4().hex[:8]}"
        state = batch_generate(
            s3=s3_options(s3_bucket, s3_server.endpoint_url, prefix=f"{label}/"),
            template=batch_template(tag),
            items=items,
            image=small_image(),
            concurrency=4,
            credentials_block=credentials,
            return_state=True,
        )
        assert state.is_completed(), state.message
        summary = state.result()
        assert isinstance(summary, RunSummary)
        runs[label] = (state.state_details.flow_run_id, summary, tag)
    emulator.wait_idle(timeout=10)
    APILogHandler().flush()

    # The runs really went through failures and retries, and delivered the rest.
    records = emulator.requests
    faults = [r.fault for r in records]
    for kind in ("429", "503", "drop", "moderation", "401"):
        assert kind in faults, f"no {kind!r} fault: {sorted(set(map(str, faults)))}"
    for label, (_, summary, tag) in runs.items():
        failed = {o.item_id for o in summary.outcomes if o.status == "failed"}
        assert failing <= failed, (label, summary.failures)
        assert summary.delivered >= N_ITEMS - len(failing) - 2, summary.failures
        always_503 = render_template(batch_template(tag), items[ALWAYS_503])
        attempts = [r for r in records if r.params.get("prompt") == always_503]
        assert len(attempts) == (CLIENT_RETRIES + 1) * (fast_task_retries.retries + 1), label
        codes = {o.item_id: o.error_code for o in summary.outcomes}
        assert codes[f"item-{MODERATED[0]:03d}"] == "moderation_blocked"
        assert codes[f"item-{AUTH_401:03d}"] and codes[f"item-{ALWAYS_503:03d}"]

    sources: dict[str, bytes | str] = {}
    # 1. Log records, DEBUG, Prefect's and ours (non-empty: the check is not vacuous).
    names = {r.name for r in all_logs.records}
    assert any(n.startswith("prefect.") for n in names), names
    assert any(n.startswith("prefect_cometapi") for n in names), names
    assert any(r.levelno == logging.DEBUG for r in all_logs.records)
    assert any("retry" in r.getMessage() for r in all_logs.records if r.name.startswith("prefect_"))
    sources.update(record_sources(all_logs.records))
    sources["caplog text"] = all_logs.text

    for label, (flow_run_id, summary, tag) in runs.items():
        # 2. What the Prefect server keeps: logs, artifacts, task runs, the run's parameters.
        server, counts = server_sources(flow_run_id)
        assert counts["logs"] > 0 and counts["artifacts"] > 0 and counts["task_runs"], counts
        sources.update({f"{label} {where}": text for where, text in server.items()})
        # 3. The failed items' error texts and the whole summary.
        sources.update(summary_sources(label, summary))
        # The persisted results of this run are where the file walk below looks.
        prompts = [render_template(batch_template(tag), item) for item in items]
        ok = {prompts[o.index] for o in summary.outcomes if o.status == "delivered"}
        assert cached_prompts(prompts, small_image()) == ok, f"{label}: results not persisted"
    named = runs["by-name"][0]
    parameters = server_sources(named)[1]["parameters"]
    assert parameters["credentials_block"] == block_name, parameters

    # 4. S3: every object, its metadata, head and tags.
    objects = s3_sources(s3_client, s3_bucket)
    assert sum(k.startswith("s3 object") for k in objects) == sum(
        s.images for _, s, _ in runs.values()
    )
    sources.update(objects)

    # 5. Every file of the result storage, cache, locks, Prefect home and the server's database.
    files = file_sources(*storage_roots())
    storage = str(Path(PREFECT_LOCAL_STORAGE_PATH.value()))
    assert sum(path.startswith(storage) for path in files) >= 2, "no persisted result found"
    assert any(path.endswith(".db") for path in files), "the server's database was not read"
    sources.update(files)

    assert_no_secret(sources)
