"""A user's own flows of our public tasks beside the same work written by hand (issue 19.5).

Against the emulator answering realistic 1.5-3 MB PNGs after ``--latency`` (2 s) seconds, moto's
S3 server in its own process and a real (temporary) Prefect server, each variant makes ``--n``
(48) images with fresh prompts and stores them in S3:

- ours, async: an ``async`` flow gathering ``agenerate_image`` for every prompt, then gathering
  ``aupload_to_s3`` of every result;
- by hand, async: ``AsyncOpenAI`` gathering the same requests, then one boto3 client in
  ``--threads`` (16) threads putting the objects;
- ours, sync: a flow of ``generate_image.map`` then ``upload_to_s3.map`` (Prefect's thread pool);
- by hand, sync: the openai SDK's sync client in one thread per prompt, then one boto3 client
  in ``--threads`` threads.

Beside them, Prefect's floor for each twin: the same flow shape (two rounds of ``--n`` task runs,
gathered or mapped) of tasks that do nothing. Printed per variant: wall of the generations, of
the uploads and in all, CPU of this process and of each helper process (emulator, moto, Prefect
server), images billed; then ours/by hand for each twin (goal <= 1.15x) and a re-run of each of our
flows (every image cached, every object already there: nothing paid, nothing uploaded).
``--profile FILE`` writes a cProfile of every thread of our async flow (``pstats``).

Run: ``python bench/user_flows.py [--n 48] [--latency 2] [--threads 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import pstats
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import _harness as h

GOAL_RATIO = 1.15
SIZE = "1024x1024"
QUALITY = "low"


class Timing:
    """Wall and CPU of one variant, in phases.

    Attributes:
        phases: Wall seconds of each phase by name (``generate``, ``upload``).
        wall_s: Wall seconds of the whole variant as its caller sees it.
        cpu_s: CPU seconds of this process during the variant.
        billed: Images the emulator billed during the variant.
        uploaded: Objects written (``existed=False``), where known.
    """

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.billed = 0
        self.uploaded: int | None = None
        self.helpers: dict[str, float] = {}

    def line(self, label: str) -> str:
        """One printed line.

        Args:
            label: The variant's name.

        Returns:
            The line.
        """
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in self.phases.items())
        uploaded = "" if self.uploaded is None else f", uploaded {self.uploaded}"
        helpers = ", ".join(f"{k} {v:.1f}" for k, v in self.helpers.items())
        return (
            f"{label:<22} wall {self.wall_s:6.2f} s ({phases}); CPU {self.cpu_s:.2f} s "
            f"(helpers: {helpers}); billed {self.billed}{uploaded}"
        )


def measure(env: h.BenchEnv, body: Callable[[Timing], None]) -> Timing:
    """Run ``body`` and fill in its wall, CPU and billed images.

    Args:
        env: The servers.
        body: The variant; it records its phases in the timing it is given.

    Returns:
        The timing.
    """
    timing = Timing()
    billed = env.emulator_state()["billed_images"]
    helpers = env.helper_cpu()
    cpu, began = time.process_time(), time.monotonic()
    body(timing)
    timing.wall_s = time.monotonic() - began
    timing.cpu_s = time.process_time() - cpu
    after = env.helper_cpu()
    timing.helpers = {k: after[k] - helpers.get(k, 0.0) for k in after}
    timing.billed = env.emulator_state()["billed_images"] - billed
    return timing


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile this thread and every thread started inside, merged into ``path`` (pstats).

    Args:
        path: Where to write the stats; ``None`` profiles nothing.

    Yields:
        Nothing.
    """
    if path is None:
        yield
        return
    profiles: list[cProfile.Profile] = []

    def start(*_: Any) -> None:
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()

    threading.setprofile(start)
    start()
    try:
        yield
    finally:
        threading.setprofile(None)
        for profile in profiles:
            profile.disable()  # only stops the calling thread's; the others have ended or idle
        stats = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def hand_upload(
    env: h.BenchEnv, client: Any, images: list[bytes], prefix: str, threads: int
) -> None:
    """Put each image with one boto3 client in ``threads`` threads (the by-hand uploads).

    Args:
        env: The servers.
        client: One boto3 S3 client.
        images: The PNG bytes.
        prefix: A folder for the keys.
        threads: Threads putting at once.
    """
    import hashlib

    def put(data: bytes) -> None:
        key = f"{prefix}{hashlib.sha256(data).hexdigest()}.png"
        client.put_object(Bucket=env.bucket, Key=key, Body=data, ContentType="image/png")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, images))


def main() -> None:  # noqa: C901 - one script, variants side by side
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=16, help="upload threads by hand")
    parser.add_argument("--profile", help="write a cProfile of our async flow (all threads)")
    parser.add_argument("--twins", nargs="+", choices=["async", "sync"], default=["async", "sync"])
    h.add_image_pool_argument(parser)
    args = parser.parse_args()
    print(f"machine: {h.machine()}")
    print(h.image_pool_line(args.image_pool))
    with h.BenchEnv(latency_s=args.latency, image_pool=args.image_pool) as env:
        import boto3
        from botocore.config import Config
        from openai import AsyncOpenAI, OpenAI
        from prefect import flow, unmapped

        from prefect_cometapi.tasks import (
            agenerate_image,
            aupload_to_s3,
            generate_image,
            upload_to_s3,
        )

        run = h.new_run_id()
        n = args.n

        def prompts(variant: str) -> list[str]:
            return [f"user flow bench {run} {variant} {i:03d}" for i in range(n)]

        target = {"bucket": env.bucket, "endpoint_url": env.s3_endpoint}
        s3_pool = Config(max_pool_connections=max(10, args.threads))  # one connection a thread

        def ours_async(timing: Timing, words: list[str]) -> None:
            @flow(name="user-async-gather")
            async def user_async() -> None:
                began = time.monotonic()
                timing.phases["start"] = began - called
                results = await asyncio.gather(
                    *(agenerate_image(p, h.CREDENTIALS_BLOCK, size=SIZE, quality=QUALITY)
                      for p in words)
                )  # fmt: skip
                timing.phases["generate"] = time.monotonic() - began
                began = time.monotonic()
                stored = await asyncio.gather(
                    *(aupload_to_s3(r, prefix=f"ours-async-{run}/", **target) for r in results)
                )
                timing.phases["upload"] = time.monotonic() - began
                timing.uploaded = sum(not s.existed for s in stored)
                ended.append(time.monotonic())

            ended: list[float] = []
            called = time.monotonic()
            asyncio.run(user_async())
            timing.phases["finish"] = time.monotonic() - ended[0]

        def ours_sync(timing: Timing, words: list[str]) -> None:
            @flow(name="user-sync-map")
            def user_sync() -> None:
                began = time.monotonic()
                timing.phases["start"] = began - called
                futures = generate_image.map(
                    words, unmapped(h.CREDENTIALS_BLOCK), size=SIZE, quality=QUALITY
                )
                results = [f.result() for f in futures]
                timing.phases["generate"] = time.monotonic() - began
                began = time.monotonic()
                stored = upload_to_s3.map(
                    results,
                    prefix=unmapped(f"ours-sync-{run}/"),
                    **{k: unmapped(v) for k, v in target.items()},
                )
                stored = [s.result() for s in stored]
                timing.phases["upload"] = time.monotonic() - began
                timing.uploaded = sum(not s.existed for s in stored)
                ended.append(time.monotonic())

            ended: list[float] = []
            called = time.monotonic()
            user_sync()
            timing.phases["finish"] = time.monotonic() - ended[0]

        def hand_async(timing: Timing) -> None:
            s3 = boto3.client(
                "s3", endpoint_url=env.s3_endpoint, region_name="us-east-1", config=s3_pool
            )

            async def generate_all() -> list[bytes]:
                async with AsyncOpenAI(
                    api_key=h.API_KEY, base_url=env.emulator_url, max_retries=0, timeout=120
                ) as client:
                    answers = await asyncio.gather(
                        *(client.images.generate(model="gpt-image-2", prompt=p, size=SIZE,
                                                 quality=QUALITY)
                          for p in prompts("hand-async"))
                    )  # fmt: skip
                return [base64.b64decode(a.data[0].b64_json) for a in answers]

            began = time.monotonic()
            images = asyncio.run(generate_all())
            timing.phases["generate"] = time.monotonic() - began
            began = time.monotonic()
            hand_upload(env, s3, images, f"hand-async-{run}/", args.threads)
            timing.phases["upload"] = time.monotonic() - began

        def hand_sync(timing: Timing) -> None:
            s3 = boto3.client(
                "s3", endpoint_url=env.s3_endpoint, region_name="us-east-1", config=s3_pool
            )
            client = OpenAI(
                api_key=h.API_KEY, base_url=env.emulator_url, max_retries=0, timeout=120
            )

            def one(prompt: str) -> bytes:
                answer = client.images.generate(
                    model="gpt-image-2", prompt=prompt, size=SIZE, quality=QUALITY
                )
                return base64.b64decode(answer.data[0].b64_json)

            began = time.monotonic()
            with ThreadPoolExecutor(n) as pool:
                images = list(pool.map(one, prompts("hand-sync")))
            timing.phases["generate"] = time.monotonic() - began
            began = time.monotonic()
            hand_upload(env, s3, images, f"hand-sync-{run}/", args.threads)
            timing.phases["upload"] = time.monotonic() - began
            client.close()

        from prefect import task

        @task
        async def anothing(i: int) -> int:
            return i

        @task
        def nothing(i: int) -> int:
            return i

        def floor_async(timing: Timing) -> None:
            @flow(name="prefect-floor-async")
            async def floor() -> None:
                for phase in ("generate", "upload"):
                    began = time.monotonic()
                    await asyncio.gather(*(anothing(i) for i in range(n)))
                    timing.phases[phase] = time.monotonic() - began

            asyncio.run(floor())

        def floor_sync(timing: Timing) -> None:
            @flow(name="prefect-floor-sync")
            def floor() -> None:
                for phase in ("generate", "upload"):
                    began = time.monotonic()
                    [f.result() for f in nothing.map(range(n))]
                    timing.phases[phase] = time.monotonic() - began

            floor()

        # Warm-up: imports, the first flow run, the first clients (not measured).
        warm = [f"user flow bench {run} warm-up"]
        measure(env, lambda t: ours_async(t, warm))
        measure(env, lambda t: ours_sync(t, warm))

        load_before = h.load()
        words_async, words_sync = prompts("ours-async"), prompts("ours-sync")
        results: dict[str, Timing] = {}
        again: dict[str, Timing] = {}
        if "async" in args.twins:
            results["Prefect floor async"] = measure(env, floor_async)
        if "sync" in args.twins:
            results["Prefect floor sync"] = measure(env, floor_sync)
        if "async" in args.twins:
            with profiled(args.profile):
                results["ours async"] = measure(env, lambda t: ours_async(t, words_async))
            results["by hand async"] = measure(env, hand_async)
        if "sync" in args.twins:
            results["ours sync"] = measure(env, lambda t: ours_sync(t, words_sync))
            results["by hand sync"] = measure(env, hand_sync)
        if "async" in args.twins:
            again["ours async, re-run"] = measure(env, lambda t: ours_async(t, words_async))
        if "sync" in args.twins:
            again["ours sync, re-run"] = measure(env, lambda t: ours_sync(t, words_sync))
        print(f"load before: {load_before}, after: {h.load()}")
        print(f"{n} images of {SIZE} at {args.latency:g} s latency; {args.threads} threads by hand")
        for label, timing in {**results, **again}.items():
            print(timing.line(label))
        for twin in args.twins:
            ours, hand = results[f"ours {twin}"], results[f"by hand {twin}"]
            ratio = ours.wall_s / hand.wall_s
            parts = ", ".join(
                f"{k} {ours.phases[k] / hand.phases[k]:.2f}x" for k in ("generate", "upload")
            )
            print(
                f"{twin}: ours/by hand {ratio:.2f}x (goal <= {GOAL_RATIO}x) "
                f"{h.verdict(ratio <= GOAL_RATIO)}; {parts}"
            )
        for label, timing in again.items():
            ok = timing.billed == 0 and timing.uploaded == 0
            print(f"{label}: billed {timing.billed}, uploaded {timing.uploaded} {h.verdict(ok)}")


if __name__ == "__main__":
    main()
