"""Async twins under ``asyncio.gather``: N image requests at once from one async flow.

An ``async def`` flow gathers ``--n`` (32) ``agenerate_image`` calls with distinct prompts
against the emulator with ``--latency`` seconds (2 s) per image, then runs again (all cache
hits). Printed: the gather's wall time inside the flow (ideal: one latency), the emulator's peak
of requests in flight (goal: N), requests billed (goal: N, then none more), and when the first
request arrived and the last was answered.

Run: ``python bench/async_gather.py [--n 32] [--latency 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import _harness as h

GOAL_WALL_LATENCIES = 1.5
"""Goal: the gather's wall time within this many latencies."""


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--latency", type=float, default=2.0)
    args = parser.parse_args()
    print(f"machine: {h.machine()}")
    with h.BenchEnv(latency_s=args.latency) as env:
        from prefect import flow

        from prefect_cometapi.tasks import agenerate_image

        run = h.new_run_id()
        prompts = [f"async gather bench {run} {i:03d}" for i in range(args.n)]
        gathers: list[tuple[float, float]] = []

        @flow
        async def gather_all() -> None:
            began = time.monotonic()
            await asyncio.gather(
                *(
                    agenerate_image(p, h.CREDENTIALS_BLOCK, size="1024x1024", quality="low")
                    for p in prompts
                )
            )
            gathers.append((began, time.monotonic()))

        load = h.load()
        asyncio.run(gather_all())
        state = env.emulator_state()
        wall = gathers[-1][1] - gathers[-1][0]
        billed = state["billed_images"]
        peak = state["peak_in_flight"]
        asyncio.run(gather_all())
        again = gathers[-1][1] - gathers[-1][0]
        billed_again = env.emulator_state()["billed_images"] - billed
        print(f"load before: {load}")
        print(
            f"gather {args.n} x {args.latency:g} s: wall {wall:.2f} s "
            f"({wall / args.latency:.2f} latencies) "
            f"{h.verdict(wall <= GOAL_WALL_LATENCIES * args.latency)}; peak in flight {peak} "
            f"{h.verdict(peak == args.n)}; billed {billed} {h.verdict(billed == args.n)}"
        )
        print(
            f"again: wall {again:.2f} s, billed {billed_again} more {h.verdict(billed_again == 0)}"
        )


if __name__ == "__main__":
    main()
