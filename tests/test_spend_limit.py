"""A spend limit shared by two processes on one Prefect server, counted on the emulator."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL

from prefect_cometapi import CometAPICredentials, SpendLimitError
from prefect_cometapi.spend import (
    create_spend_limit,
    estimate_request_usd,
    spend_limit_settings,
    spend_slots,
)
from prefect_cometapi.tasks import generate_image

SCRIPT = Path(__file__).parent / "spend_worker.py"
BUDGET_IMAGES = 6
"""The budget: this many estimated images per window."""
WINDOW_S = 6.0
PER_PROCESS = 8
RUN_TIMEOUT_S = 240.0


def _prompts(word: str, process: int) -> list[str]:
    # Equal lengths, so every request has the same estimate.
    return [f"budget {word} p{process} i{i:02d}" for i in range(PER_PROCESS)]


def test_two_processes_never_spend_more_than_the_budget_per_window(
    emulator, api_key, tmp_path
) -> None:
    word = uuid.uuid4().hex[:8]
    one = estimate_request_usd(
        {"model": "gpt-image-2", "prompt": _prompts(word, 0)[0], "size": "1024x1024",
         "quality": "medium", "n": 1}
    )  # fmt: skip
    name = f"spend-{word}"
    settings = create_spend_limit(
        name, dollars=BUDGET_IMAGES * one, window_s=WINDOW_S, burst_usd=1.5 * one
    )
    # Any window admits at most limit + decay * window slots: the budget, in whole images.
    admitted = settings.limit + settings.slot_decay_per_second * WINDOW_S
    per_window = int(admitted // spend_slots(one))
    assert per_window <= BUDGET_IMAGES

    go = tmp_path / "go"
    processes = []
    for process in range(2):
        env = {
            **os.environ,
            "COMETAPI_KEY": api_key,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")]),
        }
        spec = {
            "base_url": emulator.base_url,
            "limit": name,
            "prompts": _prompts(word, process),
            "go_file": str(go),
        }
        log = tmp_path / f"worker-{process}.log"
        with log.open("wb") as out:
            processes.append(
                (
                    subprocess.Popen(
                        [sys.executable, str(SCRIPT), json.dumps(spec)],
                        env=env,
                        stdout=out,
                        stderr=out,
                    ),
                    log,
                )
            )
    try:
        time.sleep(1.0)
        go.touch()
        results = []
        for process, log in processes:
            code = process.wait(timeout=RUN_TIMEOUT_S)
            text = log.read_text(errors="replace")
            assert code == 0, text[-4000:]
            results.append(json.loads(text.strip().splitlines()[-1]))
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    # Nothing lost, nothing paid twice.
    assert [len(r) for r in results] == [PER_PROCESS, PER_PROCESS]
    records = [r for r in emulator.requests if r.billed_images]
    assert len(records) == 2 * PER_PROCESS
    assert len({r.params["prompt"] for r in records}) == 2 * PER_PROCESS
    # Never more than the budget in any window, counted where the bill is made.
    starts = sorted(r.started_at for r in records)
    busiest = max(sum(1 for t in starts if s <= t < s + WINDOW_S) for s in starts)
    span = starts[-1] - starts[0]
    print(f"spend limit: busiest {WINDOW_S:.0f} s window {busiest} images (budget "
          f"{BUDGET_IMAGES}), {len(starts)} images in {span:.1f} s")  # fmt: skip
    assert busiest <= BUDGET_IMAGES
    # ... and the limit is what held them back: unlimited, they would all go at once.
    assert span >= (2 * PER_PROCESS - per_window) / per_window * WINDOW_S * 0.8


def test_over_the_budget_without_waiting_fails_before_sending(emulator, api_key) -> None:
    word = uuid.uuid4().hex[:8]
    name = f"spend-fail-{word}"
    one = estimate_request_usd(
        {"model": "gpt-image-2", "prompt": f"nowait {word} 0", "size": "1024x1024",
         "quality": "medium", "n": 1}
    )  # fmt: skip
    create_spend_limit(name, dollars=10 * one, window_s=3600, burst_usd=1.5 * one)
    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    nowait = generate_image.with_options(retries=0)

    @flow
    def two():
        nowait(f"nowait {word} 0", credentials, size="1024x1024", quality="medium",
               spend_limit=name, spend_limit_wait=False)  # fmt: skip
        nowait(f"nowait {word} 1", credentials, size="1024x1024", quality="medium",
               spend_limit=name, spend_limit_wait=False)  # fmt: skip

    with pytest.raises(SpendLimitError, match="no budget left"):
        two()
    assert emulator.billed_requests == 1

    big = generate_image.with_options(retries=0)

    @flow
    def too_big():
        big(f"huge {word}", credentials, size="3840x2160", quality="high", spend_limit=name)

    with pytest.raises(SpendLimitError, match="the limit holds"):
        too_big()
    assert emulator.billed_requests == 1


def test_settings_bound_every_window() -> None:
    settings = spend_limit_settings(5.0, 3600)
    assert settings.limit == 500  # a tenth of the budget at once
    assert settings.limit + settings.slot_decay_per_second * 3600 == pytest.approx(5000)
