"""Honest results in a user's own flow (issue 20): paid or cached on every result, the small
JSON form validates back, and the same figures in events, the cost ledger and the artifacts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flow_checks import EVENTS_PAGE, read_artifacts, table_rows, tag
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.runtime import flow_run

from prefect_cometapi import CometAPICredentials, ImageResult
from prefect_cometapi.flows import cost_summary
from prefect_cometapi.models import ImageDataMissingError
from prefect_cometapi.tasks import agenerate_image, generate_image


def _image_events(flow_run_id: str, expected: int, timeout: float = 30.0) -> list[Any]:
    filter = EventFilter(
        event=EventNameFilter(prefix=["prefect-cometapi.image."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = list(client.read_events(filter=filter, limit=EVENTS_PAGE).events)
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_a_rerun_sums_to_zero_billed(credentials: CometAPICredentials, emulator) -> None:
    word = tag()
    prompts = [f"honest lamp {word} {i}" for i in range(3)]

    @flow(name=f"honest-{word}")
    def banners() -> tuple[str, list[ImageResult]]:
        with cost_summary("banners"):
            direct = [generate_image(p, credentials, quality="low") for p in prompts[:2]]
            futures = [generate_image.submit(prompts[2], credentials, quality="low")]
            return str(flow_run.id), direct + [f.result() for f in futures]

    first_id, first = banners()
    assert len(emulator.requests) == 3
    assert [r.cached for r in first] == [False] * 3
    assert all(r.billed_usd == r.cost_usd and r.cost_usd > 0 for r in first)
    paid = sum(r.billed_usd for r in first)

    again_id, again = banners()
    assert len(emulator.requests) == 3  # nothing paid again
    assert sum(r.billed_usd for r in again) == 0
    for before, after in zip(first, again, strict=True):
        assert after.cached and after.images[0].cached and after.images[0].billed_usd == 0
        assert after.cost_usd == before.cost_usd  # the price stays the image's price
        assert after.cache_key and after.cache_key == before.cache_key
        assert after.images[0].data == before.images[0].data
        dumped = json.loads(after.model_dump_json())
        assert (dumped["cached"], dumped["billed_usd"]) == (True, 0.0)
        assert dumped["cost_usd"] == pytest.approx(before.cost_usd)
        assert dumped["images"][0]["cached"] and dumped["images"][0]["billed_usd"] == 0
    assert not any(r.cached for r in first)  # the paid run's objects still say they paid

    # The events: the same two figures, summing to what each run paid.
    for run_id, total, outcome in ((first_id, paid, "generated"), (again_id, 0.0, "cached")):
        events = _image_events(run_id, 3)
        assert {e.event for e in events} == {f"prefect-cometapi.image.{outcome}"}
        assert sum(e.payload["billed_usd"] for e in events) == pytest.approx(total)
        assert all(e.payload["cached"] is (outcome == "cached") for e in events)
        assert all(e.payload["billed_usd"] == e.payload["cost_usd"] for e in events)

    # The cost artifacts of the ledger: the re-run's rows are cached and billed nothing.
    for run_id, total, cached in ((first_id, paid, False), (again_id, 0.0, True)):
        artifacts = read_artifacts(run_id)
        results = next(a for k, a in artifacts.items() if k and k.endswith("results"))
        details = next(a for k, a in artifacts.items() if k and k.endswith("details"))
        costs = [float(str(row["cost"]).lstrip("$")) for row in table_rows(results)]  # "$0.0047"
        assert sum(costs) == pytest.approx(total, abs=len(costs) * 5e-5)
        assert all(row["cached"] is cached for row in table_rows(details))


def test_async_twin_says_cached_too(credentials: CometAPICredentials, emulator) -> None:
    import asyncio

    word = tag()

    @flow
    async def twice() -> list[ImageResult]:
        first = await agenerate_image(f"async honest {word}", credentials, quality="low")
        second = await agenerate_image(f"async honest {word}", credentials, quality="low")
        return [first, second]

    first, second = asyncio.run(twice())
    assert len(emulator.requests) == 1
    assert (first.cached, first.billed_usd) == (False, first.cost_usd)
    assert (second.cached, second.billed_usd) == (True, 0.0)


def test_metadata_dump_validates_back_without_bytes(credentials: CometAPICredentials) -> None:
    word = tag()

    @flow
    def one() -> ImageResult:
        return generate_image(f"metadata kite {word}", credentials, quality="low", n=2)

    result = one()
    small = result.model_dump()
    assert "data" not in small["images"][0]
    back = ImageResult.model_validate(small)
    assert not back.has_data and not back.images[0].has_data
    assert back.images[1].nbytes == result.images[1].nbytes > 0
    assert back.images[0].sha256 == result.images[0].sha256
    assert (back.cost_usd, back.billed_usd, back.cache_key) == (
        result.cost_usd,
        result.billed_usd,
        result.cache_key,
    )
    with pytest.raises(ImageDataMissingError, match="include_data=True") as caught:
        back.images[0].data  # noqa: B018 - the access is the test
    assert result.cache_key in str(caught.value) and "without paying again" in str(caught.value)
    # The small form is stable: dumping the rebuilt value gives the same dict and JSON.
    assert back.model_dump() == small
    assert ImageResult.model_validate_json(back.model_dump_json()) == back
    # The full form still round-trips exactly, bytes included.
    full = ImageResult.model_validate_json(result.model_dump_json(include_data=True))
    assert full == result and full.has_data
    assert [i.data for i in full.images] == [i.data for i in result.images]
    assert back != result  # a value without bytes is not the image
