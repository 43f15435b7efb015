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
import json
import logging
import lzma
import pickle
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from reliability_support import (
    batch_items,
    batch_template,
    cached_prompts,
    s3_options,
    small_image,
)
from secret_scan import (
    assert_no_secret,
    file_sources,
    record_sources,
    s3_sources,
    server_sources,
    storage_roots,
    summary_sources,
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


# ------------------------------------------------------------------------------ the logs


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
            assert_no_secret(file_sources(tmp_path / name), KEYS)
    (tmp_path / "clean.json").write_bytes(
        json.dumps(
            {"result": base64.b64encode(pickle.dumps({"k": KEY_OBJECT[:10]})).decode()}
        ).encode()
    )
    assert_no_secret(file_sources(tmp_path / "clean.json"), KEYS)
    with pytest.raises(AssertionError, match="10 source"):
        assert_no_secret(file_sources(tmp_path), KEYS)  # a fault in one file does not hide another


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
        key = KEY_SAVED if label == "by-name" else KEY_OBJECT
        assert cached_prompts(prompts, small_image(), key) == ok, f"{label}: results not persisted"
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

    assert_no_secret(sources, KEYS)
