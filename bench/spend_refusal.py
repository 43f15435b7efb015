"""How long a spend-limit refusal takes in fail-fast mode (``spend_limit_wait=False``).

Starts a temporary Prefect server (Prefect's own test harness, on 127.0.0.1), creates a spend
limit, takes its whole burst, then times refusals with
:func:`prefect_cometapi.billing.spend.acquire_spend` (``wait=False``: one request to the server)
and, beside them, Prefect's
``rate_limit(..., timeout_seconds=FAIL_FAST_TIMEOUT_S, strict=True)``, the call the package made
before (it retries after the server's ``Retry-After`` until the timeout runs out). Wall-clock
seconds per refusal, sync and async.

Run: ``python bench/spend_refusal.py [--n 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

GOAL_S = 0.5


def _summary(label: str, times: list[float]) -> None:
    verdict = "met" if max(times) <= GOAL_S else "NOT met"
    print(f"{label:<44} median {statistics.median(times):.3f} s  max {max(times):.3f} s  "
          f"(n={len(times)}; goal <= {GOAL_S} s: {verdict})")  # fmt: skip


def main() -> None:
    """Measure and print refusal times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--old", type=int, default=3, help="refusals timed on the old path")
    args = parser.parse_args()
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # nothing leaves 127.0.0.1
    from prefect.concurrency.sync import rate_limit
    from prefect.testing.utilities import prefect_test_harness

    from prefect_cometapi.billing.spend import (
        FAIL_FAST_TIMEOUT_S,
        aacquire_spend,
        acquire_spend,
        create_spend_limit,
    )
    from prefect_cometapi.errors import SpendLimitError

    print(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with prefect_test_harness():
        name = f"bench-spend-{uuid.uuid4().hex[:8]}"
        settings = create_spend_limit(name, dollars=1.0, window_s=3600, burst_usd=0.1)
        one = 0.04  # an image's estimate: 40 slots
        with acquire_spend(name, settings.limit * 0.001, wait=False):
            pass  # the whole burst is taken
        times = []
        for _ in range(args.n):
            started = time.perf_counter()
            try:
                with acquire_spend(name, one, wait=False):
                    raise AssertionError("the limit should have no budget")
            except SpendLimitError as exc:
                times.append(time.perf_counter() - started)
                message = str(exc)
        _summary("acquire_spend(wait=False), sync", times)

        async def arefusals() -> list[float]:
            out = []
            for _ in range(args.n):
                started = time.perf_counter()
                try:
                    async with aacquire_spend(name, one, wait=False):
                        raise AssertionError("the limit should have no budget")
                except SpendLimitError:
                    out.append(time.perf_counter() - started)
            return out

        _summary("aacquire_spend(wait=False), async", asyncio.run(arefusals()))
        old = []
        for _ in range(args.old):
            started = time.perf_counter()
            try:
                rate_limit(name, occupy=40, timeout_seconds=FAIL_FAST_TIMEOUT_S, strict=True)
                raise AssertionError("the limit should have no budget")
            except TimeoutError:
                old.append(time.perf_counter() - started)
        _summary(f"before: rate_limit(timeout_seconds={FAIL_FAST_TIMEOUT_S:g})", old)
        print(f"message: {message}")
    print(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
