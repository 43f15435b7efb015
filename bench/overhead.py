"""Orchestration overhead: CPU per image of the flow process when the API costs nothing.

The emulator answers at once (latency 0), so the batch (``--n`` items, 200, at ``--concurrency``
16, no upscale, uploads to moto's S3 server) measures what Prefect and our code cost per image
in the process that runs the flow. The emulator, moto and the Prefect server run in their own
processes and are reported apart, not counted. For scale, the same run times Prefect's floor:
a flow submitting the same number of items, each one task run calling one nested task run (the
shape of ``process_item`` -> ``generate_image``) that do nothing.

Run: ``python bench/overhead.py [--n 200] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _harness as h

THROUGHPUT_LATENCY_S = 2.0
GOAL_CORE_SHARE = 0.5


def prefect_floor(n: int, concurrency: int) -> tuple[float, float]:
    """Run ``n`` empty ``outer -> inner`` task-run pairs, ``concurrency`` + half at once.

    Args:
        n: Items.
        concurrency: As for the batch (the same window: ``concurrency + concurrency // 2``).

    Returns:
        ``(wall seconds, CPU seconds of this process)``.
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(cache_policy=NO_CACHE, persist_result=False)
    def inner(i: int) -> int:
        return i

    @task(cache_policy=NO_CACHE, persist_result=False)
    def outer(i: int) -> int:
        return inner(i)

    @flow(name="bench-prefect-floor")
    def floor(n: int, window: int) -> int:
        pending: list[Any] = []
        done = 0
        for i in range(n):
            pending.append(outer.submit(i))
            if len(pending) >= window:
                done += pending.pop(0).result()
        return done + sum(f.result() for f in pending)

    window = concurrency + max(1, concurrency // 2)
    floor(2, window)  # registration and first-call costs
    wall, cpu = time.perf_counter(), time.process_time()
    floor(n, window)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Measure and print the overhead figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="items in the batch")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--quality", default="low")
    args = parser.parse_args()

    print(f"machine: {h.machine()}")
    with h.BenchEnv(latency_s=0.0) as env:
        env.run_batch(2, h.new_run_id(), args.concurrency, args.size, args.quality)
        run = env.run_batch(args.n, h.new_run_id(), args.concurrency, args.size, args.quality)
        time.sleep(2)  # let the server drain the batch's events before the floor runs
        _, floor_cpu = prefect_floor(args.n, args.concurrency)
        load_after = h.machine().rsplit("load avg ", 1)[1]
    n = args.n
    per_image = run.cpu_s / n
    print(
        f"batch_generate, N={n}, concurrency {args.concurrency}, emulator latency 0, "
        f"{args.size} {args.quality}, no upscale, upload to moto; requests {run.requests}"
    )
    print(f"flow process CPU: {run.cpu_s:.2f} s = {per_image * 1000:.1f} ms/image")
    print(f"wall: {run.wall_s:.2f} s = {run.wall_s / n * 1000:.1f} ms/image")
    others = ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in run.children_cpu_s.items())
    print(f"other processes (not counted), CPU ms/image: {others}")
    print(
        f"Prefect floor (2 empty nested task runs per item, same window): CPU "
        f"{floor_cpu / n * 1000:.1f} ms/item; ours above it: "
        f"{(run.cpu_s - floor_cpu) / n * 1000:.1f} ms/image"
    )
    api_rate = args.concurrency / THROUGHPUT_LATENCY_S
    share = per_image * api_rate
    print(
        f"at the throughput bench's API rate ({args.concurrency} x 1 image / "
        f"{THROUGHPUT_LATENCY_S:g} s = {api_rate:g} images/s) the flow process needs "
        f"{share:.2f} of one core; CPU-bound ceiling {1 / per_image:.0f} images/s"
    )
    print(f"load avg after: {load_after}")
    print(
        f"goal overhead small enough for the throughput goal (the flow process keeps up with "
        f"the API using < {GOAL_CORE_SHARE} of one core, its GIL's limit, so efficiency >= 0.85 "
        f"is not CPU-bound): {share:.2f} -> {h.verdict(share < GOAL_CORE_SHARE)}"
    )


if __name__ == "__main__":
    main()
