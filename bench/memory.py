"""Memory does not grow with the batch: peak RSS of the flow process at N=20 and N=200.

``batch_generate`` generates 1536x864 PNGs (emulator latency ``--latency``, 0 by default),
upscales each to 3840x2160 (about 33 MB decoded as RGBA) and uploads it to moto's S3 server,
``--concurrency`` (16) at a time. Each N runs in a fresh subprocess, so its peak is its own
(``ru_maxrss`` and ``VmHWM``); the emulator, moto and the Prefect server run in other processes.
If the batch kept each image's bytes (in Prefect's in-memory result cache, say), N=200 would hold
ten times the images of N=20.

Run: ``python bench/memory.py [--sizes 20 200] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import _harness as h

GOAL_RATIO = 1.2
SIZE = "1536x864"
TARGET = "3840x2160"


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(n: int, concurrency: int) -> None:
    """Run one batch in this (fresh) process and print its memory figures as JSON.

    Args:
        n: Items.
        concurrency: ``batch_generate(concurrency=...)``.
    """
    import prefect_cometapi.flows  # noqa: F401 - imports count in the baseline, not the batch

    before = _vm("VmRSS")
    summary, wall, cpu = h.run_batch_here(
        n,
        h.new_run_id(),
        concurrency,
        s3_endpoint=os.environ["BENCH_S3_ENDPOINT"],
        bucket=os.environ["BENCH_BUCKET"],
        size=SIZE,
        upscale=TARGET,
    )
    figures = {
        "n": n,
        "delivered": summary.delivered,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before": before,
        "rss_after": _vm("VmRSS"),
        "vmhwm": _vm("VmHWM"),
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print("BENCH-RESULT " + json.dumps(figures), flush=True)


def run_child(env: h.BenchEnv, n: int, concurrency: int) -> dict[str, float]:
    """Run :func:`child` in a fresh subprocess against ``env``'s servers.

    Args:
        env: The servers.
        n: Items.
        concurrency: Items at once.

    Returns:
        The child's figures.

    Raises:
        RuntimeError: If the child failed.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, os.path.join(here, "memory.py"), "--child", str(n), str(concurrency)],
        env=env.child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return json.loads(line.removeprefix("BENCH-RESULT "))
    raise RuntimeError(f"the N={n} run failed (exit {proc.returncode}): {proc.stderr[-3000:]}")


def main() -> None:
    """Measure and print the memory figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200], help="batch sizes N")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.0, help="emulator s per image")
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    print(f"machine: {h.machine()}")
    with h.BenchEnv(latency_s=args.latency) as env:
        results = [run_child(env, n, args.concurrency) for n in args.sizes]
        load_after = h.machine().rsplit("load avg ", 1)[1]
    print(
        f"batch_generate {SIZE} -> upscale {TARGET} PNG -> moto, concurrency "
        f"{args.concurrency}, emulator latency {args.latency:g} s; one fresh process per N"
    )
    header = ("N", "wall s", "CPU s", "RSS before MB", "peak RSS MB", "VmHWM MB", "after MB")
    print("{:>5} {:>7} {:>7} {:>14} {:>12} {:>9} {:>9}".format(*header))
    mb = 1e6
    for r in results:
        print(
            f"{r['n']:>5} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['rss_before'] / mb:14.0f} "
            f"{r['maxrss'] / mb:12.0f} {r['vmhwm'] / mb:9.0f} {r['rss_after'] / mb:9.0f}"
        )
    print(f"load avg after: {load_after}")
    small, large = results[0], results[-1]
    ratio = large["maxrss"] / small["maxrss"]
    print(
        f"goal peak RSS at N={large['n']} within {GOAL_RATIO}x of N={small['n']}: "
        f"{ratio:.2f}x -> {h.verdict(ratio <= GOAL_RATIO)}"
    )


if __name__ == "__main__":
    main()
