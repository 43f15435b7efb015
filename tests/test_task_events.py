"""Events, the cost artifact and asset events of the tasks in a custom flow, read back from the
Prefect server; docs/reference.md's spend automation matches the events with the right numbers."""

import time
import uuid
from typing import Any

import pytest
from flow_checks import EVENTS_PAGE, asset_events, read_artifacts, table_rows
from prefect import flow
from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.flow_engine import run_flow
from prefect.runtime import flow_run

from prefect_cometapi import CometAPICredentials, ContentPolicyError, ValidationError
from prefect_cometapi.events import SPEND_EVENT, SPEND_INCREMENT_USD, spend_automation
from prefect_cometapi.flows import cost_summary
from prefect_cometapi.tasks import generate_image, upload_to_s3
from prefect_cometapi.text import usd


def _creds(emulator, api_key: str) -> CometAPICredentials:
    return CometAPICredentials(api_key=api_key, base_url=emulator.base_url)


def _events(filter: EventFilter, expected: int, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = list(client.read_events(filter=filter, limit=EVENTS_PAGE).events)
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def _related(event: Any, role: str) -> str | None:
    for resource in event.related:
        if resource.role == role:
            return resource.id
    return None


def test_deployment_spend_events_feed_the_documented_automation(emulator, api_key) -> None:
    credentials = _creds(emulator, api_key)
    word = uuid.uuid4().hex[:8]

    @flow(name=f"spender-{word}")
    def spender() -> list[float]:
        costs = []
        for i in range(3):
            result = generate_image(
                f"gold {word} {i}", credentials, size="1024x1024", quality="high"
            )
            costs.append(result.cost_usd)
        generate_image(f"gold {word} 0", credentials, size="1024x1024", quality="high")  # cached
        with pytest.raises(ContentPolicyError):
            generate_image.with_options(retries=0)(f"[[fault:moderation]] {word}", credentials)
        with pytest.raises(ValidationError):
            generate_image.with_options(retries=0)(f"bad {word}", credentials, size="100x100")
        return costs

    deployment_id = spender.to_deployment(name="spend-test").apply()
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id)
    costs = run_flow(spender, flow_run=flow_run)
    assert len(emulator.requests) == 4  # three images and the refused request
    spent = sum(costs)
    increments = int((spent + 1e-9) // SPEND_INCREMENT_USD)
    assert increments >= 4, spent

    # The spend events: one per increment, on the deployment's spend resource.
    resource_id = f"prefect-cometapi.spend.deployment.{deployment_id}"
    spend = _events(
        EventFilter(
            event=EventNameFilter(name=[SPEND_EVENT]),
            resource=EventResourceFilter(id=[resource_id]),
        ),
        increments,
    )
    assert len(spend) == increments
    assert all(e.payload["usd"] == SPEND_INCREMENT_USD for e in spend)
    assert all(_related(e, "deployment") == f"prefect.deployment.{deployment_id}" for e in spend)

    # The image events, filtered by the deployment, with the numbers.
    image_events = _events(
        EventFilter(
            event=EventNameFilter(prefix=["prefect-cometapi.image."]),
            related=EventRelatedFilter(id=[f"prefect.deployment.{deployment_id}"]),
        ),
        6,
    )
    by_name: dict[str, list[Any]] = {}
    for event in image_events:
        by_name.setdefault(event.event, []).append(event)
    generated = by_name["prefect-cometapi.image.generated"]
    assert len(generated) == 3
    assert sum(e.payload["cost_usd"] for e in generated) == pytest.approx(spent)
    for event in generated:
        assert event.resource.id == "prefect-cometapi.model.gpt-image-2"
        assert event.payload["size"] == "1024x1024" and event.payload["quality"] == "high"
        assert event.payload["request_id"].startswith("req_")
        assert event.payload["output_tokens"] > 0 and event.payload["duration_s"] > 0
        assert _related(event, "flow-run") == f"prefect.flow-run.{flow_run.id}"
    (cached,) = by_name["prefect-cometapi.image.cached"]
    assert cached.payload["cost_usd"] == 0.0
    assert cached.payload["cost_avoided_usd"] == pytest.approx(costs[0])
    (refused,) = by_name["prefect-cometapi.image.refused"]
    assert refused.payload["code"] == "moderation_blocked"
    (failed,) = by_name["prefect-cometapi.image.failed"]
    assert failed.payload["error_type"] == "ValidationError"

    # docs/reference.md's automation is accepted by the server and watches exactly these events.
    automation = spend_automation(dollars=5.0, within_s=3600, name=f"spend-{word}")
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Reactive
    assert trigger.expect == {SPEND_EVENT} and trigger.threshold == 50
    assert trigger.match["prefect.resource.id"] == ["prefect-cometapi.spend.deployment.*"]
    assert resource_id.startswith("prefect-cometapi.spend.deployment.")
    created = automation.create()
    try:
        assert Automation.read(id=created.id).trigger.threshold == 50
    finally:
        created.delete()


def test_cost_summary_and_asset_events_in_a_custom_flow(
    emulator, api_key, s3_bucket, s3_server
) -> None:
    block = f"events-{uuid.uuid4().hex[:8]}"
    _creds(emulator, api_key).save(block)  # the tasks take the block's name too
    word = uuid.uuid4().hex[:8]

    @flow(name="custom-banners")
    def custom() -> tuple[str, float, float, str]:
        with cost_summary("Custom banners") as ledger:
            first = generate_image(f"custom {word}", block, size="1024x1024", quality="low")
            generate_image(f"custom {word}", block, size="1024x1024", quality="low")
            stored = upload_to_s3(
                first, bucket=s3_bucket, prefix="custom/", endpoint_url=s3_server.endpoint_url
            )
        return stored.uri, ledger.total_cost_usd, ledger.cost_avoided_usd, flow_run.id

    uri, total, avoided, run_id = custom()
    assert emulator.billed_requests == 1
    assert total == pytest.approx(avoided) and total > 0
    artifacts = read_artifacts(uuid.UUID(run_id))
    gallery = artifacts["cometapi-custom-banners-gallery"]
    assert f"Total cost: {usd(total)}" in gallery.data
    rows = table_rows(artifacts["cometapi-custom-banners-results"])
    objects = table_rows(artifacts["cometapi-custom-banners-objects"])
    assert objects[0]["s3_uri"] == uri and rows[0]["cost"] == usd(total)
    assert rows[1]["cost"] == "$0.0000"
    details = table_rows(artifacts["cometapi-custom-banners-details"])
    assert [r["cached"] for r in details] == [False, True]
    (event,) = asset_events(uri)
    assert event.event == "prefect.asset.materialization.succeeded"
