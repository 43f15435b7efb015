"""API-bound throughput: ``batch_generate`` against an emulator with a fixed latency per image.

The emulator answers every image request after ``--latency`` seconds (2 s by default) with
images as heavy as the real API's (about 2 MB per 1024x1024 PNG; by default from a pool of 8
pre-drawn ones, so the stand-in's drawing, which the real API does on its own servers, does not
take the cores of the machine under test: ``--image-pool 0`` draws each); the batch runs
``--concurrency`` requests at once (16), no upscale, uploads to moto's S3 server (its own
process). The ideal wall time is ``ceil(N / concurrency) x latency``; efficiency = ideal / ours.

In the same run, for each N, the same work written by hand is timed as the peer:
``openai.AsyncOpenAI`` + ``asyncio.Semaphore(concurrency)`` around each request, then boto3
``put_object`` with a SHA-256 checksum in a worker thread (:func:`hand_written_peer`); ours/peer
is printed beside efficiency, and each one's CPU per item (the flow process's, the peer's
process's: both run in this process, one after the other), which a shared machine distorts far
less than walls. ``--busy`` keeps one core busy with a spinning process during the
measured runs (the "loaded worker" case). The seed's sample-code pattern is timed too: the
``openai`` SDK calling ``images.generate`` in a plain sequential loop, over ``--baseline-items``
(0 skips it).

Run: ``python bench/throughput.py [--sizes 128 512] [--concurrency 16] [--latency 2] [--busy]``.
Every batch uses new prompts (a random run id), so nothing comes from the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import tempfile
import time

import _harness as h

GOAL_EFFICIENCY = 0.9
GOAL_RATIO_QUIET = 1.05
GOAL_RATIO_BUSY = 1.15


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


def hand_written_peer(
    base_url: str,
    s3_endpoint: str,
    bucket: str,
    n: int,
    concurrency: int,
    size: str,
    quality: str,
) -> tuple[float, float]:
    """The same batch written by hand: AsyncOpenAI, a semaphore, boto3 in a thread.

    Each item generates one image (the semaphore bounds requests in flight, not uploads),
    decodes it and uploads it with ``put_object`` and a SHA-256 checksum S3 verifies, from a
    worker thread so the event loop keeps serving the other requests. No retries, no cache, no
    records: the least a script can do for the same result in S3.

    Args:
        base_url: The emulator's ``base_url``.
        s3_endpoint: moto's endpoint.
        bucket: The bucket.
        n: Items.
        concurrency: Requests at once.
        size: The size.
        quality: The quality.

    Returns:
        ``(wall seconds, CPU seconds of this process)`` of the batch.
    """
    import boto3
    import openai
    from botocore.config import Config

    run = h.new_run_id()
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        config=Config(max_pool_connections=max(10, concurrency * 2)),
    )

    async def batch() -> None:
        # The SDK's default retries (2), as a script would leave them.
        client = openai.AsyncOpenAI(api_key=h.API_KEY, base_url=base_url, timeout=120)
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                result = await client.images.generate(
                    model="gpt-image-2",
                    prompt=f"A studio product banner of product {i} (run {run})",
                    size=size,  # type: ignore[arg-type]
                    quality=quality,  # type: ignore[arg-type]
                )
            data = base64.b64decode((result.data or [])[0].b64_json or "")
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            await asyncio.to_thread(
                s3.put_object,
                Bucket=bucket,
                Key=f"peer/{run}/p{i:04d}.png",
                Body=data,
                ContentType="image/png",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )

        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            await client.close()

    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(batch())
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    """Measure and print the throughput figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="batch sizes N")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=2.0, help="emulator s per image")
    parser.add_argument("--baseline-items", type=int, default=16, help="0: no sequential loop")
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--quality", default="low")
    h.add_image_pool_argument(parser)
    args = parser.parse_args()

    print(f"machine: {h.machine()}")
    print(h.image_pool_line(args.image_pool))
    with h.BenchEnv(latency_s=args.latency, image_pool=args.image_pool) as env:
        seq_per_item = None
        if args.baseline_items:
            seq = sequential_baseline(
                env.emulator_url, args.baseline_items, args.size, args.quality
            )
            seq_per_item = seq / args.baseline_items
            print(
                f"sequential openai SDK loop: {args.baseline_items} items in {seq:.2f} s "
                f"({seq_per_item:.3f} s/item)"
            )
        # One small batch (and one small peer batch) first: the process's one-time costs
        # (imports, flow registration, the clients) are not what a batch of N costs.
        env.run_batch(2, h.new_run_id(), args.concurrency, args.size, args.quality)
        hand_written_peer(
            env.emulator_url, env.s3_endpoint, env.bucket, 2, args.concurrency, args.size,
            args.quality,
        )  # fmt: skip
        print(
            f"batch_generate vs the hand-written peer, concurrency {args.concurrency}, latency "
            f"{args.latency:g} s/image, {args.size} {args.quality}, no upscale, upload to moto"
            + (", one core kept busy by another process" if args.busy else "")
        )
        header = ("N", "ours s", "peer s", "ideal s", "efficiency", "ours/peer", "speedup",
                  "peak", "req", "load")  # fmt: skip
        print("{:>5} {:>8} {:>8} {:>8} {:>11} {:>10} {:>8} {:>5} {:>5}  {}".format(*header))
        results = []
        with h.busy_core(args.busy):
            for n in args.sizes:
                run = env.run_batch(n, h.new_run_id(), args.concurrency, args.size, args.quality)
                cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.children_cpu_s.items())
                print(
                    f"      ours: {run.wall_s:.2f} s; CPU s: flow process {run.cpu_s:.1f}; {cpu}; "
                    f"load {h.load()}",
                    flush=True,
                )
                peer, peer_cpu = hand_written_peer(
                    env.emulator_url, env.s3_endpoint, env.bucket, n, args.concurrency,
                    args.size, args.quality,
                )  # fmt: skip
                print(
                    f"      CPU ms per item: ours {run.cpu_s / n * 1000:.1f} (flow process), "
                    f"peer {peer_cpu / n * 1000:.1f}",
                    flush=True,
                )
                ideal = h.ideal_wall(n, args.concurrency, args.latency)
                efficiency = ideal / run.wall_s
                ratio = run.wall_s / peer
                speedup = f"{seq_per_item / (run.wall_s / n):7.1f}x" if seq_per_item else "-"
                results.append((n, efficiency, ratio))
                print(
                    f"{n:>5} {run.wall_s:8.2f} {peer:8.2f} {ideal:8.2f} {efficiency:11.3f} "
                    f"{ratio:10.3f} {speedup:>8} {run.peak_in_flight:5d} {run.requests:5d}  "
                    f"{h.load()}",
                    flush=True,
                )
        print(f"objects {env.objects()}; load avg after: {h.load()}")
    ratio_goal = GOAL_RATIO_BUSY if args.busy else GOAL_RATIO_QUIET
    for n, efficiency, ratio in results:
        print(
            f"goal efficiency >= {GOAL_EFFICIENCY} at N={n}: {efficiency:.3f} -> "
            f"{h.verdict(efficiency >= GOAL_EFFICIENCY)}"
        )
        print(
            f"goal ours/peer <= {ratio_goal} ({'one core busy' if args.busy else 'quiet'}) at "
            f"N={n}: {ratio:.3f} -> {h.verdict(ratio <= ratio_goal)}"
        )


if __name__ == "__main__":
    main()
