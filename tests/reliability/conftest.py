"""Fixtures of the reliability suite (the servers themselves come from tests/fixtures_*.py).

The suite keeps Prefect's task-level retry delays short (``fast_task_retries``) so that a batch
under heavy fault injection finishes in seconds; the client's own retry logic (Retry-After,
backoff) is left as shipped, only the emulator's Retry-After is made small.
"""

from __future__ import annotations

from typing import Any

import pytest

from prefect_cometapi.batching import item as item_pipeline
from prefect_cometapi.emulator import Emulator

#: Task-level retry delays used by the suite instead of the shipped 30 s and 120 s.
FAST_TASK_RETRY_DELAYS = [0.2, 0.5]


@pytest.fixture
def emulator(emulator: Emulator) -> Emulator:
    """The session's emulator, reset, answering images as heavy as the real API's (~2 MB).

    The rest of the suite uses the light drawings for speed; reliability is measured on the
    bytes production sees.
    """
    emulator.configure(light_images=False)
    return emulator


@pytest.fixture
def fast_task_retries(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``batch_generate``'s image task with the same retry budget but sub-second delays.

    ``process_item`` looks ``generate_step`` up at call time, so patching the module attribute
    changes what the flow runs; the retry count and ``retry_condition_fn`` stay as shipped.

    Returns:
        The patched task.
    """
    fast = item_pipeline.generate_step.with_options(
        retry_delay_seconds=FAST_TASK_RETRY_DELAYS, retry_jitter_factor=None
    )
    assert fast.retries == item_pipeline.generate_step.retries > 0
    assert fast.retry_condition_fn is item_pipeline.generate_step.retry_condition_fn
    monkeypatch.setattr(item_pipeline, "generate_step", fast)
    return fast
