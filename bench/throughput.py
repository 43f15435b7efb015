"""API-bound throughput: ``batch_generate`` beside an asyncio script and a naive Prefect flow.

The emulator answers every image request after ``--latency`` seconds (2 s by default) with
images as heavy as the real API's (about 2 MB per 1024x1024 PNG; by default from a pool of 8
pre-drawn ones, so the stand-in's drawing, which the real API does on its own servers, does not
take the cores of the machine under test: ``--image-pool 0`` draws each); the batch runs
``--concurrency`` requests at once (16), no upscale, uploads to moto's S3 server (its own
process), on a temporary Prefect server. The ideal wall time is
``ceil(N / concurrency) x latency``; efficiency = ideal / wall.

In the same run, for each N, right after ours (:mod:`_peers`): the asyncio script
(``AsyncOpenAI`` + ``asyncio.Semaphore(concurrency)`` + boto3 ``put_object`` in threads), the
naive Prefect flow (``@task(retries=2)`` around the ``openai`` SDK and ``put_object``, ``.map``
on a ``concurrency``-thread runner) and Prefect's floor (the same flow with each task only
sleeping the latency). Printed: walls, efficiency, ratios, and the flow-process CPU per paid
image of each (all run in this process, one after the other). Then the cached re-run of one
batch (the first N): the same batch twice, the second must send 0 requests and take <= 10 % of
the first; Prefect's empty flow run is printed beside it. ``--busy`` keeps one core busy with a
spinning process during the measured runs. ``--baseline-items K`` also times the sample code's
sequential ``openai`` loop over K items.

Run: ``python bench/throughput.py [--sizes 128 512] [--concurrency 16] [--latency 2] [--busy]``.
Every batch uses new prompts (a random run id), so nothing comes from the cache unless meant to.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time

import _harness as h
import _peers as peers

GOAL_EFFICIENCY = 0.9
GOAL_SCRIPT_128 = 1.05
GOAL_RATIO_BUSY = 1.15
GOAL_NAIVE = 0.9
GOAL_CPU_MS = 50.0
GOAL_CACHED = 0.10
SETTLE_S = 5.0


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[128], help="batch sizes N")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=2.0, help="emulator s per image")
    parser.add_argument("--baseline-items", type=int, default=0, help="0: no sequential loop")
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument("--no-cached", action="store_true", help="skip the cached re-run")
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--quality", default="low")
    h.add_image_pool_argument(parser)
    args = parser.parse_args()
    c, size, quality = args.concurrency, args.size, args.quality

    print(f"machine: {h.machine()}")
    print(h.image_pool_line(args.image_pool))
    with h.BenchEnv(latency_s=args.latency, image_pool=args.image_pool) as env:
        seq_per_item = None
        if args.baseline_items:
            seq = sequential_baseline(env.emulator_url, args.baseline_items, size, quality)
            seq_per_item = seq / args.baseline_items
            print(f"sequential openai SDK loop: {args.baseline_items} items in {seq:.2f} s "
                  f"({seq_per_item:.3f} s/item)")  # fmt: skip
        # Two items of each first: one-time costs (imports, flow registration, the clients)
        # are not what a batch of N costs.
        env.run_batch(2, h.new_run_id(), c, size, quality)
        peers.asyncio_script(env, 2, c, size, quality)
        peers.naive_prefect_flow(env, 2, c, size, quality)
        peers.prefect_sleep_floor(2, c, 0.0)
        print(
            f"batch_generate vs the asyncio script and the naive Prefect flow, concurrency {c}, "
            f"latency {args.latency:g} s/image, {size} {quality}, no upscale, upload to moto"
            + (", one core kept busy by another process" if args.busy else "")
        )
        rows: list[dict[str, float]] = []
        cached = None
        with h.busy_core(args.busy):
            for n in args.sizes:
                rows.append(one_size(env, n, args, seq_per_item))
            if not args.no_cached:
                cached = cached_rerun(env, args.sizes[0], args)
        print(f"objects {env.objects()}; load avg after: {h.load()}")
    goals(rows, cached, args.busy)


def one_size(
    env: h.BenchEnv, n: int, args: argparse.Namespace, seq_per_item: float | None
) -> dict[str, float]:
    """Time ours, both peers and Prefect's floor at one N, and print them.

    Args:
        env: The servers.
        n: Items.
        args: The command line.
        seq_per_item: The sequential loop's seconds per item, if it ran.

    Returns:
        The figures of this N.
    """
    c, size, quality = args.concurrency, args.size, args.quality
    run_id = h.new_run_id()
    load_before = h.load()
    ours = env.run_batch(n, run_id, c, size, quality)
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in ours.children_cpu_s.items())
    print(f"  N={n} ours: {ours.wall_s:.2f} s, {ours.requests} requests, peak in flight "
          f"{ours.peak_in_flight}; CPU s: flow process {ours.cpu_s:.1f}; {cpu}; load before "
          f"{load_before}, after {h.load()}", flush=True)  # fmt: skip
    script, script_cpu = peers.asyncio_script(env, n, c, size, quality)
    print(f"  N={n} asyncio script: {script:.2f} s; load {h.load()}", flush=True)
    naive, naive_cpu = peers.naive_prefect_flow(env, n, c, size, quality)
    print(f"  N={n} naive Prefect flow: {naive:.2f} s; load {h.load()}", flush=True)
    floor, floor_cpu = peers.prefect_sleep_floor(n, c, args.latency)
    print(f"  N={n} Prefect's floor (one task run per item sleeping {args.latency:g} s, "
          f"{c} threads): {floor:.2f} s; load {h.load()}", flush=True)  # fmt: skip
    ideal = h.ideal_wall(n, c, args.latency)
    row = {
        "n": n, "ours": ours.wall_s, "script": script, "naive": naive, "floor": floor,
        "ideal": ideal, "eff": ideal / ours.wall_s, "floor_eff": ideal / floor,
        "cpu_ms": ours.cpu_s / n * 1000, "script_ms": script_cpu / n * 1000,
        "naive_ms": naive_cpu / n * 1000, "floor_ms": floor_cpu / n * 1000,
    }  # fmt: skip
    print("    N   ours s script s  naive s  floor s  ideal s  eff  floor eff  ours/script  "
          "ours/naive")  # fmt: skip
    print(f"{n:>5} {ours.wall_s:8.2f} {script:8.2f} {naive:8.2f} {floor:8.2f} {ideal:8.2f} "
          f"{row['eff']:5.3f} {row['floor_eff']:9.3f} {ours.wall_s / script:12.3f} "
          f"{ours.wall_s / naive:11.3f}")  # fmt: skip
    print(f"  flow-process CPU ms per paid image: ours {row['cpu_ms']:.1f}, asyncio script "
          f"{row['script_ms']:.1f}, naive Prefect flow {row['naive_ms']:.1f}; Prefect's floor "
          f"(empty task runs) {row['floor_ms']:.1f}", flush=True)  # fmt: skip
    if seq_per_item:
        print(f"  speedup over the sequential loop: {seq_per_item / (ours.wall_s / n):.1f}x")
    return row


def cached_rerun(env: h.BenchEnv, n: int, args: argparse.Namespace) -> dict[str, float]:
    """The same batch twice (new prompts, then the same ones); print both and the floor.

    Args:
        env: The servers.
        n: Items.
        args: The command line.

    Returns:
        The figures.
    """
    c, size, quality = args.concurrency, args.size, args.quality
    run_id = h.new_run_id()
    first = env.run_batch(n, run_id, c, size, quality)
    time.sleep(SETTLE_S)  # let the server record the first run's events first
    second = env.run_batch(n, run_id, c, size, quality)
    empty = peers.prefect_empty_floor(c)
    ratio = second.wall_s / first.wall_s
    print(f"  cached re-run, N={n}: first {first.wall_s:.2f} s ({first.requests} requests), "
          f"second {second.wall_s:.2f} s ({second.requests} requests, {second.already_delivered}"
          f" already delivered): {ratio:.1%}; flow CPU per item {second.cpu_s / n * 1000:.1f} "
          f"ms; Prefect's floor: an empty flow run {empty:.2f} s "
          f"({empty / first.wall_s:.1%} of the first); load {h.load()}", flush=True)  # fmt: skip
    return {"n": n, "ratio": ratio, "requests": second.requests, "empty": empty / first.wall_s}


def goals(rows: list[dict[str, float]], cached: dict[str, float] | None, busy: bool) -> None:
    """Print each goal's verdict.

    Args:
        rows: The figures per N.
        cached: The cached re-run's figures.
        busy: One core was kept busy.
    """
    for row in rows:
        n = int(row["n"])
        script_goal = GOAL_RATIO_BUSY if busy else (GOAL_SCRIPT_128 if n < 512 else 1.0)
        checks = [
            (f"efficiency >= {GOAL_EFFICIENCY}", row["eff"], row["eff"] >= GOAL_EFFICIENCY,
             f"Prefect's floor {row['floor_eff']:.3f}"),
            (f"ours/asyncio script <= {script_goal}", row["ours"] / row["script"],
             row["ours"] / row["script"] <= script_goal,
             f"floor/script {row['floor'] / row['script']:.3f}"),
            (f"ours/naive Prefect flow <= {GOAL_NAIVE}", row["ours"] / row["naive"],
             row["ours"] / row["naive"] <= GOAL_NAIVE,
             f"floor/naive {row['floor'] / row['naive']:.3f}"),
            (f"flow CPU per paid image <= {GOAL_CPU_MS:g} ms", row["cpu_ms"],
             row["cpu_ms"] <= GOAL_CPU_MS, f"Prefect's floor {row['floor_ms']:.1f} ms"),
        ]  # fmt: skip
        for name, value, ok, floor in checks:
            print(f"goal {name} at N={n}: {value:.3f} -> {h.verdict(ok)} ({floor})")
    if cached is not None:
        n = int(cached["n"])
        print(f"goal cached re-run 0 requests at N={n}: {int(cached['requests'])} -> "
              f"{h.verdict(cached['requests'] == 0)}")  # fmt: skip
        print(f"goal cached re-run <= {GOAL_CACHED:.0%} of the first at N={n}: "
              f"{cached['ratio']:.1%} -> {h.verdict(cached['ratio'] <= GOAL_CACHED)} "
              f"(Prefect's empty flow run {cached['empty']:.1%})")  # fmt: skip


if __name__ == "__main__":
    main()
