"""Run one ``batch_generate`` in its own process (the crash-and-resume test kills it; the
shared-lock test runs two at once, as two machines).

Usage: ``python crash_batch.py '<json>'`` with ``base_url``, ``bucket``, ``endpoint_url``,
``tag``, ``count`` and ``concurrency``, and optionally ``ready_file`` and ``go_file``: the
process creates the first once imported and waits for the second before it starts the batch,
so two processes start together. The API key comes from ``COMETAPI_KEY`` (never argv), the
Prefect API, result storage and lock manager from the environment the test passes on. The batch
is built with the same helpers as the tests' own runs, so every run sends identical requests.
The last line printed is the summary as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prefect import flow
from reliability_support import crash_batch_kwargs

from prefect_cometapi.flows import batch_generate

GO_TIMEOUT_S = 120.0


@flow
def warm_up() -> None:
    """An empty flow run: Prefect's client, settings and threads start before the go."""


def wait_for_go(ready_file: str, go_file: str) -> None:
    """Warm up, say this process is ready, then wait until the test says go.

    Args:
        ready_file: Created now.
        go_file: Waited for.

    Raises:
        TimeoutError: No go within ``GO_TIMEOUT_S``.
    """
    warm_up()
    Path(ready_file).touch()
    deadline = time.monotonic() + GO_TIMEOUT_S
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go_file} did not appear within {GO_TIMEOUT_S:.0f} s")
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    """Run the batch described by ``argv[1]`` and print its headline and summary.

    Args:
        argv: ``sys.argv``.

    Returns:
        The exit code.
    """
    spec = json.loads(argv[1])
    ready_file, go_file = spec.pop("ready_file", None), spec.pop("go_file", None)
    if ready_file and go_file:
        wait_for_go(ready_file, go_file)
    summary = batch_generate(**crash_batch_kwargs(**spec))
    print(summary.headline(), flush=True)
    print(summary.model_dump_json(include={"items", "delivered", "failed", "cached"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
