"""A task timeout shorter than the request (issue 20.5): warned about before sending, and the
image paid for after the timeout is cached when it arrives, so a re-run pays nothing. Measured on
the emulator with injected latency, read back from the Prefect server."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import pytest
from flow_checks import tag
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.runtime import flow_run

from prefect_cometapi import CometAPICredentials, ImageResult
from prefect_cometapi.tasks import agenerate_image, generate_image

LATENCY_S = 4.0
TIMEOUT_S = 1.5


def _logs(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]


def _rerun_pays_nothing(prompt: str, credentials: CometAPICredentials, emulator) -> ImageResult:
    emulator.configure(latency_s=0.0)

    @flow
    def patient() -> ImageResult:
        return generate_image(prompt, credentials, quality="low")

    return patient()


@pytest.mark.parametrize("twin", ["sync", "submitted", "async"])
def test_a_late_image_is_cached_and_a_rerun_pays_nothing(
    twin: str, credentials: CometAPICredentials, emulator
) -> None:
    prompt = f"slow lighthouse {tag()}"
    emulator.configure(latency_s=LATENCY_S)
    options = {"timeout_seconds": TIMEOUT_S, "retries": 0}

    if twin == "sync":

        @flow
        def impatient() -> tuple[str, object]:
            short = generate_image.with_options(**options)
            return str(flow_run.id), short(prompt, credentials, quality="low", return_state=True)

        run_id, state = impatient()
    elif twin == "submitted":  # in a task runner's worker thread: Prefect raises into it

        @flow
        def impatient_submitted() -> tuple[str, object]:
            short = generate_image.with_options(**options)
            future = short.submit(prompt, credentials, quality="low")
            future.wait()
            return str(flow_run.id), future.state

        run_id, state = impatient_submitted()
    else:

        @flow
        async def aimpatient() -> tuple[str, object]:
            short = agenerate_image.with_options(**options)
            state = await short(prompt, credentials, quality="low", return_state=True)
            return str(flow_run.id), state

        run_id, state = asyncio.run(aimpatient())

    started = time.monotonic()
    assert state.is_failed() and state.name == "TimedOut", state
    assert len(emulator.requests) == 1  # it was sent, and it is being paid for
    # Warned before the request was sent, in the task run's logs on the server.
    time.sleep(2.0)
    logs = _logs(UUID(run_id))
    assert any("shorter than this request may take" in m for m in logs), logs
    assert any("the answer will be cached" in m or "timeout" in m for m in logs)

    # The answer arrives LATENCY_S after the request; then it is in the cache.
    deadline = started + LATENCY_S + 20
    while emulator.billed_requests < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert emulator.billed_requests == 1
    time.sleep(1.0)  # the late answer's cache record is written right after it arrives
    again = _rerun_pays_nothing(prompt, credentials, emulator)
    assert len(emulator.requests) == 1 and emulator.billed_requests == 1
    assert again.cached and again.billed_usd == 0 and again.cost_usd > 0


def test_a_long_enough_timeout_is_not_warned_about(credentials: CometAPICredentials, emulator):
    prompt = f"patient lighthouse {tag()}"

    @flow
    def fine() -> tuple[str, ImageResult]:
        task = generate_image.with_options(timeout_seconds=credentials.read_timeout + 60)
        return str(flow_run.id), task(prompt, credentials, quality="low")

    run_id, result = fine()
    assert not result.cached and len(emulator.requests) == 1
    time.sleep(1.5)
    assert not any("shorter than this request" in m for m in _logs(UUID(run_id)))
