"""API-bound throughput: ``batch_generate`` against an emulator with a fixed latency per image.

The emulator answers every image request after ``--latency`` seconds (2 s by default); the batch
runs ``--concurrency`` requests at once (16), no upscale, uploads to moto's S3 server. The ideal
wall time is ``ceil(N / concurrency) x latency``; efficiency = ideal / ours. In the same run,
the seed's sample-code pattern is timed as the baseline: the official ``openai`` SDK calling
``images.generate`` in a plain sequential loop and writing each file, over ``--baseline-items``.

Run: ``python bench/throughput.py [--sizes 50 200] [--concurrency 16] [--latency 2]``.
Every batch uses new prompts (a random run id), so nothing comes from the cache.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time

import _harness as h


def sequential_baseline(base_url: str, items: int, size: str, quality: str) -> float:
    """The sample-code loop: ``openai`` SDK, one ``images.generate`` after another, write files.

    Args:
        base_url: The emulator's ``base_url``.
        items: How many images.
        size: The size.
        quality: The quality.

    Returns:
        Wall seconds of the loop.
    """
    import openai

    run = h.new_run_id()
    client = openai.OpenAI(api_key=h.API_KEY, base_url=base_url, max_retries=0, timeout=120)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        for i in range(items):
            result = client.images.generate(
                model="gpt-image-2",
                prompt=f"A studio product banner of product {i} (run {run})",
                size=size,  # type: ignore[arg-type]
                quality=quality,  # type: ignore[arg-type]
            )
            data = result.data or []
            with open(os.path.join(out, f"p{i:04d}.png"), "wb") as fh:
                fh.write(base64.b64decode(data[0].b64_json or ""))
        wall = time.perf_counter() - started
    client.close()
    return wall


def main() -> None:
    """Measure and print the throughput figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="batch sizes N")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=2.0, help="emulator s per image")
    parser.add_argument("--baseline-items", type=int, default=16)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--quality", default="low")
    args = parser.parse_args()

    print(f"machine: {h.machine()}")
    with h.BenchEnv(latency_s=args.latency) as env:
        seq = sequential_baseline(env.emulator_url, args.baseline_items, args.size, args.quality)
        seq_per_item = seq / args.baseline_items
        print(
            f"sequential openai SDK loop: {args.baseline_items} items in {seq:.2f} s "
            f"({seq_per_item:.3f} s/item)"
        )
        # One small batch first: the process's one-time costs (imports, flow registration,
        # the S3 client) are not what a batch of N costs.
        env.run_batch(2, h.new_run_id(), args.concurrency, args.size, args.quality)
        print(
            f"batch_generate, concurrency {args.concurrency}, latency {args.latency:g} s/image, "
            f"{args.size} {args.quality}, no upscale, upload to moto"
        )
        header = ("N", "ours s", "ideal s", "efficiency", "s/item", "speedup", "peak", "req")
        print("{:>5} {:>8} {:>8} {:>11} {:>7} {:>8} {:>5} {:>5}".format(*header))
        results = []
        for n in args.sizes:
            run = env.run_batch(n, h.new_run_id(), args.concurrency, args.size, args.quality)
            ideal = h.ideal_wall(n, args.concurrency, args.latency)
            efficiency = ideal / run.wall_s
            speedup = seq_per_item / (run.wall_s / n)
            results.append((n, efficiency))
            print(
                f"{n:>5} {run.wall_s:8.2f} {ideal:8.2f} {efficiency:11.3f} "
                f"{run.wall_s / n:7.3f} {speedup:7.1f}x {run.peak_in_flight:5d} {run.requests:5d}"
            )
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.children_cpu_s.items())
            print(f"      CPU s: flow process {run.cpu_s:.1f}; {cpu}; objects {env.objects()}")
        print(f"load avg after: {h.machine().rsplit('load avg ', 1)[1]}")
    largest = max(results)
    smallest = min(results)
    print(
        f"goal efficiency >= 0.85 at N={largest[0]}: {largest[1]:.3f} -> "
        f"{h.verdict(largest[1] >= 0.85)}"
    )
    print(
        f"goal efficiency not falling as N grows (N={smallest[0]} {smallest[1]:.3f} -> "
        f"N={largest[0]} {largest[1]:.3f}): {h.verdict(largest[1] >= smallest[1])}"
    )


if __name__ == "__main__":
    main()
