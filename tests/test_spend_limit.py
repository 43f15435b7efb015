"""A spend limit shared by two Prefect workers on one Prefect server, counted on the emulator."""

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from fixtures_deploy import ManagedProcess, stop_all
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from prefect_cometapi import CometAPICredentials, SpendLimitError
from prefect_cometapi.billing.spend import (
    create_spend_limit,
    estimate_request_usd,
    spend_limit_settings,
    spend_slots,
)
from prefect_cometapi.tasks import agenerate_image, generate_image

SCRIPT = Path(__file__).parent / "spend_worker.py"
BUDGET_IMAGES = 6
"""The budget: this many estimated images per window."""
WINDOW_S = 6.0
FLOW_RUNS = 2
PER_RUN = 8
RUNS_AT_ONCE = 1
"""Flow runs each worker runs at once: the two runs need both workers."""
READY_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 240.0


def _prompts(word: str, run: int) -> list[str]:
    # Equal lengths, so every request has the same estimate.
    return [f"budget {word} r{run} i{i:02d}" for i in range(PER_RUN)]


def _serving(worker: ManagedProcess) -> bool:
    return "polling for scheduled runs" in worker.log_tail(20000)


def test_two_workers_never_spend_more_than_the_budget_per_window(
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

    deployment = f"spend-limit-{word}"
    out_dir = tmp_path / "made"
    out_dir.mkdir()
    env = {
        **os.environ,
        "COMETAPI_KEY": api_key,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")]),
    }
    spec = json.dumps({"deployment": deployment, "runs_at_once": RUNS_AT_ONCE})
    workers = [
        ManagedProcess.start(
            f"spend worker {w}",
            [sys.executable, str(SCRIPT), spec],
            {**env, "SPEND_WORKER": w},
            SCRIPT.parent,
            tmp_path / f"worker-{w}.log",
        )
        for w in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(_serving(w) for w in workers):
            for w in workers:
                assert w.alive(), w.log_tail()
            assert time.monotonic() < deadline, [w.log_tail() for w in workers]
            time.sleep(0.5)
        runs = [
            run_deployment(
                f"spend/{deployment}",
                parameters={
                    "base_url": emulator.base_url,
                    "limit": name,
                    "prompts": _prompts(word, r),
                    "out_dir": str(out_dir),
                },
                timeout=0,
            )  # fmt: skip
            for r in range(FLOW_RUNS)
        ]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        with get_client(sync_client=True) as client:
            while True:
                states = [client.read_flow_run(run.id).state for run in runs]
                if all(state is not None and state.is_final() for state in states):
                    break
                assert time.monotonic() < deadline, [w.log_tail() for w in workers]
                time.sleep(1.0)
        assert all(state.is_completed() for state in states), [w.log_tail() for w in workers]
    finally:
        stop_all(workers)

    # Both workers ran flow runs; nothing lost, nothing paid twice.
    made = [json.loads(p.read_text()) for p in out_dir.glob("*.json")]
    assert len(made) == FLOW_RUNS
    assert {m["worker"] for m in made} == {"a", "b"}
    assert sum(len(m["sha256"]) for m in made) == FLOW_RUNS * PER_RUN
    records = [r for r in emulator.requests if r.billed_images]
    assert len(records) == FLOW_RUNS * PER_RUN
    assert len({r.params["prompt"] for r in records}) == FLOW_RUNS * PER_RUN
    # Never more than the budget in any window, counted where the bill is made.
    starts = sorted(r.started_at for r in records)
    busiest = max(sum(1 for t in starts if s <= t < s + WINDOW_S) for s in starts)
    span = starts[-1] - starts[0]
    print(f"spend limit: busiest {WINDOW_S:.0f} s window {busiest} images (budget "
          f"{BUDGET_IMAGES}), {len(starts)} images in {span:.1f} s")  # fmt: skip
    assert busiest <= BUDGET_IMAGES
    # ... and the limit is what held them back: unlimited, they would all go at once.
    total = FLOW_RUNS * PER_RUN
    assert span >= (total - per_window) / per_window * WINDOW_S * 0.8


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

    with pytest.raises(SpendLimitError, match="no budget left") as refused:
        two()
    assert emulator.billed_requests == 1
    # What was refused and why: the limit, the estimate, the slots, what is left, the remedy.
    message = str(refused.value)
    assert f"Spend limit {name!r}" in message and f"${one:.4f}" in message
    slots = spend_slots(one)
    assert f"it needs {slots} slots" in message
    assert "are left" in message and "enough for this request in about" in message
    assert f"create_spend_limit({name!r}" in message and "spend_limit_wait=True" in message
    assert "No request was sent" in message

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


def test_an_async_refusal_without_waiting_says_what_is_left_and_sends_nothing(
    emulator, api_key
) -> None:
    word = uuid.uuid4().hex[:8]
    name = f"spend-async-{word}"
    params = {"model": "gpt-image-2", "prompt": f"anowait {word} 0", "size": "1024x1024",
              "quality": "medium", "n": 1}  # fmt: skip
    one = estimate_request_usd(params)
    settings = create_spend_limit(name, dollars=10 * one, window_s=3600, burst_usd=1.5 * one)
    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    billed = emulator.billed_requests

    @flow
    async def two() -> None:
        for i in range(2):
            await agenerate_image.with_options(retries=0)(
                f"anowait {word} {i}", credentials, size="1024x1024", quality="medium",
                spend_limit=name, spend_limit_wait=False,
            )  # fmt: skip

    with pytest.raises(SpendLimitError, match="no budget left") as refused:
        asyncio.run(two())
    assert emulator.billed_requests == billed + 1
    message = str(refused.value)
    left = settings.limit - spend_slots(one)
    assert f"{name!r}" in message and f"it needs {spend_slots(one)} slots" in message
    assert f"and {left} of the limit's {settings.limit}" in message or (
        f"and {left + 1} of the limit's {settings.limit}" in message  # a slot decayed meanwhile
    )
    assert f"create_spend_limit({name!r}" in message
