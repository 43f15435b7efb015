"""The same work as ``batch_generate`` written by hand, and Prefect's own floor, for the benches.

- :func:`asyncio_script`: ``openai.AsyncOpenAI`` + ``asyncio.Semaphore(concurrency)`` around
  each request, then boto3 ``put_object`` with a SHA-256 checksum in a worker thread.
- :func:`naive_prefect_flow`: the ten-minute Prefect flow: a ``@task(retries=2)`` around the
  ``openai`` SDK and ``put_object``, ``.map`` on a ``ThreadPoolTaskRunner`` of ``concurrency``
  threads (module-level clients, Prefect's defaults for everything else).
- :func:`prefect_sleep_floor`: that flow with each task sleeping the emulator's latency instead
  of working: the least any Prefect flow of one task run per item takes for the batch.
- :func:`prefect_empty_floor`: an empty flow run (the floor of a fully cached re-run).

Import after ``_harness`` (which sets the environment before anything imports Prefect).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import _harness as h

__all__ = ["asyncio_script", "naive_prefect_flow", "prefect_empty_floor", "prefect_sleep_floor"]


def _prompt(i: int, run: str) -> str:
    return f"A studio product banner of product {i} (run {run})"


def _s3(endpoint: str, concurrency: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(max_pool_connections=max(10, concurrency * 2)),
    )


def _put(s3: Any, bucket: str, key: str, data: bytes) -> None:
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType="image/png",
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=checksum,
    )


def asyncio_script(
    env: h.BenchEnv, n: int, concurrency: int, size: str, quality: str
) -> tuple[float, float]:
    """The batch as an asyncio script: AsyncOpenAI, a semaphore, boto3 in threads.

    The semaphore bounds requests in flight, not uploads; the SDK keeps its default retries
    (2). No cache, no records: the least a script can do for the same result in S3.

    Args:
        env: The servers.
        n: Items.
        concurrency: Requests at once.
        size: The size.
        quality: The quality.

    Returns:
        ``(wall seconds, CPU seconds of this process)`` of the batch.
    """
    import openai

    run = h.new_run_id()
    s3 = _s3(env.s3_endpoint, concurrency)

    async def batch() -> None:
        client = openai.AsyncOpenAI(api_key=h.API_KEY, base_url=env.emulator_url, timeout=120)
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                result = await client.images.generate(
                    model="gpt-image-2",
                    prompt=_prompt(i, run),
                    size=size,  # type: ignore[arg-type]
                    quality=quality,  # type: ignore[arg-type]
                )
            data = base64.b64decode((result.data or [])[0].b64_json or "")
            await asyncio.to_thread(_put, s3, env.bucket, f"peer/{run}/p{i:04d}.png", data)

        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            await client.close()

    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(batch())
    return time.perf_counter() - started, time.process_time() - cpu


_NAIVE: dict[str, Any] = {}


def _naive_flow(env: h.BenchEnv, concurrency: int) -> Any:
    """The naive flow (built once per process: Prefect registers a flow by its function)."""
    if "flow" in _NAIVE:
        return _NAIVE["flow"]
    import openai
    from prefect import flow, task, unmapped
    from prefect.task_runners import ThreadPoolTaskRunner

    client = openai.OpenAI(api_key=h.API_KEY, base_url=env.emulator_url, timeout=120)
    s3 = _s3(env.s3_endpoint, concurrency)

    @task(retries=2)
    def make_image(i: int, run: str, size: str, quality: str) -> str:
        result = client.images.generate(
            model="gpt-image-2",
            prompt=_prompt(i, run),
            size=size,  # type: ignore[arg-type]
            quality=quality,  # type: ignore[arg-type]
        )
        data = base64.b64decode((result.data or [])[0].b64_json or "")
        key = f"naive/{run}/p{i:04d}.png"
        _put(s3, env.bucket, key, data)
        return key

    @flow(name="bench-naive-batch", task_runner=ThreadPoolTaskRunner(max_workers=concurrency))
    def naive_batch(n: int, run: str, size: str, quality: str) -> int:
        keys = make_image.map(range(n), unmapped(run), unmapped(size), unmapped(quality))
        return len(keys.result())

    _NAIVE["flow"] = naive_batch
    return naive_batch


def naive_prefect_flow(
    env: h.BenchEnv, n: int, concurrency: int, size: str, quality: str
) -> tuple[float, float]:
    """The batch as the ten-minute Prefect flow: ``@task(retries=2)`` + ``.map`` on 16 threads.

    Args:
        env: The servers.
        n: Items.
        concurrency: Threads of the task runner (so requests at once).
        size: The size.
        quality: The quality.

    Returns:
        ``(wall seconds, CPU seconds of this process)`` of the flow call.
    """
    naive_batch = _naive_flow(env, concurrency)
    started, cpu = time.perf_counter(), time.process_time()
    naive_batch(n, h.new_run_id(), size, quality)
    return time.perf_counter() - started, time.process_time() - cpu


_FLOORS: dict[str, Any] = {}


def _floor_flow(concurrency: int) -> Any:
    if "flow" in _FLOORS:
        return _FLOORS["flow"]
    from prefect import flow, task, unmapped
    from prefect.task_runners import ThreadPoolTaskRunner

    @task
    def sleep_for(i: int, seconds: float) -> int:
        time.sleep(seconds)
        return i

    @flow(name="bench-prefect-floor", task_runner=ThreadPoolTaskRunner(max_workers=concurrency))
    def floor(n: int, seconds: float) -> int:
        return len(sleep_for.map(range(n), unmapped(seconds)).result())

    _FLOORS["flow"] = floor
    return floor


def prefect_sleep_floor(n: int, concurrency: int, latency_s: float) -> tuple[float, float]:
    """Prefect's floor for a batch: ``n`` task runs that only sleep ``latency_s``, 16 at once.

    Args:
        n: Items.
        concurrency: Threads of the task runner.
        latency_s: Seconds each task sleeps (the emulator's latency).

    Returns:
        ``(wall seconds, CPU seconds of this process)``.
    """
    floor = _floor_flow(concurrency)
    started, cpu = time.perf_counter(), time.process_time()
    floor(n, latency_s)
    return time.perf_counter() - started, time.process_time() - cpu


def prefect_empty_floor(concurrency: int) -> float:
    """Wall seconds of an empty flow run (what a re-run with nothing to do cannot go below).

    Args:
        concurrency: Threads of the task runner (as for the other floor).

    Returns:
        Seconds.
    """
    floor = _floor_flow(concurrency)
    started = time.perf_counter()
    floor(0, 0.0)
    return time.perf_counter() - started
