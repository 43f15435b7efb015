"""Issue 6, item 9: the batch's process is SIGKILLed halfway; the re-run pays only for the rest.

What can be paid twice, precisely: an item whose request the emulator billed but whose result
was not yet persisted in the image cache when the process died (the request was in flight, or
its answer had arrived and was being stored). Each such item is one of the batch's items in
flight: ``concurrency`` requests plus ``concurrency // DELIVERY_SHARE`` items that finished their
request and are persisting or uploading, so there are at most that many. Everything else either
was never sent (the re-run sends it once) or is in the cache (the re-run sends nothing for it).
The test reads the cache after the kill and checks exactly that split, then that S3 ends with
one object per item.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_API_URL
from reliability_support import (
    assert_accounted,
    assert_delivered_intact,
    cached_prompts,
    crash_batch_kwargs,
    read_bucket,
    rendered_prompts,
    small_image,
)

from prefect_cometapi.batching.window import DELIVERY_SHARE
from prefect_cometapi.flows import batch_generate

N_ITEMS = 40
CONCURRENCY = 4
IN_FLIGHT = CONCURRENCY + max(1, CONCURRENCY // DELIVERY_SHARE)
"""Items of the batch in flight at once: the most that can be paid and not yet persisted."""
SCRIPT = Path(__file__).with_name("crash_batch.py")
START_TIMEOUT_S = 120.0


def _billed_prompts(records: list[Any]) -> Counter[str]:
    return Counter(str(r.params.get("prompt")) for r in records if r.billed_images)


def test_sigkill_halfway_then_rerun_pays_only_for_unfinished_items(
    emulator: Any,
    api_key: str,
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    emulator.configure(latency_s=0.15)
    tag = f"crash-{uuid.uuid4().hex[:8]}"
    spec = {
        "base_url": emulator.base_url,
        "bucket": s3_bucket,
        "endpoint_url": s3_server.endpoint_url,
        "tag": tag,
        "count": N_ITEMS,
        "concurrency": CONCURRENCY,
    }
    env = {**os.environ, "COMETAPI_KEY": api_key, "PREFECT_API_URL": PREFECT_API_URL.value()}
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parent), env.get("PYTHONPATH", "")])
    log = tmp_path / "crash_batch.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), json.dumps(spec)], env=env, stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while emulator.billed_requests < N_ITEMS // 2:
                assert process.poll() is None, "the batch ended before the kill:\n" + _tail(log)
                assert time.monotonic() < deadline, "the batch made no progress:\n" + _tail(log)
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            in_flight_at_kill = emulator.in_flight
            assert process.wait(timeout=30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    emulator.wait_idle(timeout=10)  # requests of the dead process still finish (and are billed)

    prompts = rendered_prompts(tag, N_ITEMS)
    first_records = emulator.requests
    first_billed = _billed_prompts(first_records)
    assert set(first_billed) <= set(prompts)
    assert max(first_billed.values()) == 1, "the first run paid an item twice"
    cached = cached_prompts(prompts, small_image(), api_key)
    assert cached <= set(first_billed), "a cached item was never paid for"
    assert N_ITEMS // 2 - IN_FLIGHT <= len(cached) < N_ITEMS, "the kill was not halfway"
    lost = set(first_billed) - cached  # paid, but the result died with the process
    assert len(lost) <= IN_FLIGHT, (len(lost), in_flight_at_kill)
    # Anything already in S3 was uploaded after its generation was persisted.
    uploaded_items = {
        key.split("/")[-1].rsplit("-", 1)[0] for key in read_bucket(s3_client, s3_bucket)
    }
    cached_items = {f"item-{prompts.index(p):03d}" for p in cached}
    assert uploaded_items <= cached_items

    monkeypatch.setenv("COMETAPI_KEY", api_key)
    summary = batch_generate(**crash_batch_kwargs(**spec))
    emulator.wait_idle(timeout=10)

    second_records = emulator.requests[len(first_records) :]
    second_sent = Counter(str(r.params.get("prompt")) for r in second_records)
    assert set(second_sent) == set(prompts) - cached, "the re-run sent requests for cached items"
    assert set(second_sent.values()) == {1}
    assert all(r.billed_images == 1 for r in second_records)
    assert emulator.billed_requests == N_ITEMS + len(lost)
    assert emulator.billed_requests <= N_ITEMS + IN_FLIGHT

    assert_accounted(summary, N_ITEMS)
    assert summary.delivered == N_ITEMS and summary.cached == len(cached)
    objects = assert_delivered_intact(s3_client, s3_bucket, summary.outcomes)
    per_item = Counter(key.split("/")[-1].rsplit("-", 1)[0] for key in objects)
    assert per_item == Counter({f"item-{i:03d}": 1 for i in range(N_ITEMS)})


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]
