"""The async twins in async flows: concurrent, cached, sharing the sync tasks' cache."""

import asyncio
import time
import uuid

from prefect import flow

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.tasks import (
    agenerate_image,
    arender_prompt,
    aupload_to_s3,
    aupscale_image,
    generate_image,
)

GATHERED = 32
LATENCY_S = 4.0


def _creds(emulator, api_key: str) -> CometAPICredentials:
    return CometAPICredentials(api_key=api_key, base_url=emulator.base_url)


def test_gather_32_generations_at_once_then_all_cached(emulator, api_key) -> None:
    emulator.configure(latency_s=LATENCY_S)
    credentials = _creds(emulator, api_key)
    word = uuid.uuid4().hex[:8]
    prompts = [f"async kite {word} {i}" for i in range(GATHERED)]

    gathers: list[tuple[float, float]] = []

    @flow
    async def many() -> list:
        began = time.monotonic()
        results = await asyncio.gather(
            *(agenerate_image(p, credentials, size="1024x1024", quality="low") for p in prompts)
        )
        gathers.append((began, time.monotonic()))
        return results

    first = asyncio.run(many())
    started, ended = gathers[-1]
    wall = ended - started
    peak = emulator.peak_in_flight
    records = emulator.requests
    first_in = min(r.started_at for r in records) - started
    last_out = max(r.finished_at for r in records) - started
    print(
        f"gather {GATHERED}: peak in flight {peak}, gather wall {wall:.2f} s "
        f"(latency {LATENCY_S} s; "
        f"first request in at {first_in:.2f} s, last answered at {last_out:.2f} s)"
    )
    assert peak == GATHERED
    assert emulator.billed_requests == GATHERED
    assert sorted(r.params["prompt"] for r in emulator.requests) == sorted(prompts)
    # All requests overlapped (the peak); one at a time would take 32 latencies.
    assert wall < GATHERED * LATENCY_S / 2, wall

    again = asyncio.run(many())
    print(
        f"gather {GATHERED} again: gather wall {gathers[-1][1] - gathers[-1][0]:.2f} s, all cached"
    )
    assert emulator.billed_requests == GATHERED
    assert [r.images[0].sha256 for r in again] == [r.images[0].sha256 for r in first]


def test_sync_and_async_flows_share_one_cache_entry(emulator, api_key) -> None:
    credentials = _creds(emulator, api_key)
    prompt = f"shared entry {uuid.uuid4().hex[:8]}"

    @flow
    def sync_flow():
        return generate_image(prompt, credentials, size="1024x1024")

    @flow
    async def async_flow():
        return await agenerate_image(prompt, credentials, size="1024x1024")

    made = sync_flow()
    again = asyncio.run(async_flow())
    assert emulator.billed_requests == 1
    assert again.images[0].sha256 == made.images[0].sha256

    other = f"async first {uuid.uuid4().hex[:8]}"

    @flow
    async def async_other():
        return await agenerate_image(other, credentials, size="1024x1024")

    @flow
    def sync_other():
        return generate_image(other, credentials, size="1024x1024")

    asyncio.run(async_other())
    sync_other()
    assert emulator.billed_requests == 2


def test_async_pipeline_render_upscale_upload(emulator, api_key, s3_bucket, s3_server) -> None:
    credentials = _creds(emulator, api_key)

    @flow
    async def pipeline(name: str):
        prompt = await arender_prompt("A banner for {{ name }}", {"name": name})
        result = await agenerate_image(prompt, credentials, size="1024x1024", quality="low")
        big = await aupscale_image(result, size="2048x2048")
        return await aupload_to_s3(
            big, bucket=s3_bucket, prefix="async/", endpoint_url=s3_server.endpoint_url
        )

    stored = asyncio.run(pipeline(f"kite {uuid.uuid4().hex[:6]}"))
    assert stored.uri.startswith(f"s3://{s3_bucket}/async/")
    assert stored.size > 0
