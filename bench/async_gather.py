"""Async twins under ``asyncio.gather``: N image requests at once from one async flow.

An ``async def`` flow gathers ``--n`` (32) ``agenerate_image`` calls with distinct prompts
against the emulator with ``--latency`` seconds (2 s) per image, then runs again (all cache
hits). Beside it, in the same process and against the same servers, two floors:

- Prefect's: an async flow gathering N plain tasks that only ``await asyncio.sleep(latency)``
  (task-run creation and state changes, nothing of ours);
- the emulator's: the same N requests gathered on one ``AsyncCometAPIClient`` without Prefect
  (the emulator draws every image after its latency, so on a small machine its own CPU, not
  the client, decides when the last answer comes).

Printed: each wall time; for the gather, when the first and the last request arrived and when
the last was answered (seconds after the gather began), the peak of requests in flight (goal:
N), requests billed (goal: N, then none more), and how much of the wall is ours and Prefect's
(the gather's wall minus the emulator floor's). ``--light`` asks the emulator for its light
drawings (about 0.1 MB instead of 2 MB an image).

Run: ``python bench/async_gather.py [--n 32] [--latency 2] [--light]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from typing import Any

import _harness as h

GOAL_WALL_LATENCIES = 1.5
"""Goal: the gather's wall time within this many latencies."""


def _configure_emulator(env: h.BenchEnv, **changes: Any) -> None:
    url = env.emulator_url.removesuffix("/v1") + "/_emulator/config"
    request = urllib.request.Request(
        url, data=json.dumps(changes).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - loopback only
        pass


def _window(env: h.BenchEnv, began: float, ended: float) -> dict[str, float]:
    """What the emulator saw of the requests that arrived between ``began`` and ``ended``."""
    state = env.emulator_state()
    records = [r for r in state["records"] if began <= r["started_at"] <= ended]
    events = sorted(
        [(r["started_at"], 1) for r in records] + [(r["finished_at"], -1) for r in records]
    )
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return {
        "requests": len(records),
        "billed": sum(r.get("billed_images", 0) for r in records),
        "peak": peak,
        "first_in": min(r["started_at"] for r in records) - began,
        "last_in": max(r["started_at"] for r in records) - began,
        "last_out": max(r["finished_at"] for r in records) - began,
    }


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--light", action="store_true", help="the emulator's light drawings")
    h.add_image_pool_argument(parser)
    args = parser.parse_args()
    print(f"machine: {h.machine()}")
    print(h.image_pool_line(args.image_pool))
    with h.BenchEnv(latency_s=args.latency, image_pool=args.image_pool) as env:
        from prefect import flow, task

        from prefect_cometapi.client import AsyncCometAPIClient
        from prefect_cometapi.tasks import agenerate_image

        if args.light:
            _configure_emulator(env, light_images=True)
        run = h.new_run_id()
        prompts = [f"async gather bench {run} {i:03d}" for i in range(args.n)]
        walls: list[tuple[float, float]] = []

        @task
        async def sleep_like_a_request(i: int) -> int:
            await asyncio.sleep(args.latency)
            return i

        @flow
        async def prefect_floor() -> None:
            began = time.monotonic()
            await asyncio.gather(*(sleep_like_a_request(i) for i in range(args.n)))
            walls.append((began, time.monotonic()))

        async def client_floor() -> None:
            async with AsyncCometAPIClient(
                api_key=h.API_KEY, base_url=env.emulator_url, read_timeout=120, max_retries=0
            ) as client:
                await client.generate(f"warm-up {run}", size="1024x1024", quality="low")
                began = time.monotonic()
                await asyncio.gather(
                    *(
                        client.generate(f"floor {p}", size="1024x1024", quality="low")
                        for p in prompts
                    )
                )
                walls.append((began, time.monotonic()))

        @flow
        async def gather_all() -> None:
            began = time.monotonic()
            await asyncio.gather(
                *(
                    agenerate_image(p, h.CREDENTIALS_BLOCK, size="1024x1024", quality="low")
                    for p in prompts
                )
            )
            walls.append((began, time.monotonic()))

        load = h.load()
        asyncio.run(prefect_floor())
        prefect_wall = walls[-1][1] - walls[-1][0]
        asyncio.run(client_floor())
        floor = _window(env, *walls[-1])
        client_wall = walls[-1][1] - walls[-1][0]
        asyncio.run(gather_all())
        seen = _window(env, *walls[-1])
        wall = walls[-1][1] - walls[-1][0]
        billed = env.emulator_state()["billed_images"]
        asyncio.run(gather_all())
        again = walls[-1][1] - walls[-1][0]
        billed_again = env.emulator_state()["billed_images"] - billed
        print(f"load before: {load}, after: {h.load()}")
        print(
            f"Prefect floor, {args.n} tasks sleeping {args.latency:g} s: wall {prefect_wall:.2f} s"
        )
        print(
            f"emulator floor, {args.n} requests on one client without Prefect: wall "
            f"{client_wall:.2f} s (last answered at {floor['last_out']:.2f} s)"
        )
        print(
            f"gather {args.n} x {args.latency:g} s: wall {wall:.2f} s "
            f"({wall / args.latency:.2f} latencies) "
            f"{h.verdict(wall <= GOAL_WALL_LATENCIES * args.latency)}; requests in from "
            f"{seen['first_in']:.2f} s to {seen['last_in']:.2f} s, last answered at "
            f"{seen['last_out']:.2f} s; peak in flight {seen['peak']} "
            f"{h.verdict(seen['peak'] == args.n)}; billed {seen['billed']} "
            f"{h.verdict(seen['billed'] == args.n)}"
        )
        print(f"ours and Prefect's: {wall - client_wall:+.2f} s over the emulator floor")
        print(
            f"again: wall {again:.2f} s, billed {billed_again} more {h.verdict(billed_again == 0)}"
        )


if __name__ == "__main__":
    main()
