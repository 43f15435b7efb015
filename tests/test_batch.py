"""batch_generate end to end: the session's emulator, moto's S3 server and the Prefect test server.

Each test salts its prompts with a fresh word (``tag()``): generate_image's cache lives for the
whole session, and a salted prompt is a request no other test has made. Images are small
(1024x640, the smallest gpt-image-2 allows), at quality low, without upscaling.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection
from typing import Any

import pytest
from flow_checks import (
    assert_gallery_shape,
    asset_events_under,
    billed_cost,
    read_artifacts,
    s3_image,
    table_rows,
    tag,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.billing.prices import estimate_cost
from prefect_cometapi.billing.spend import create_spend_limit
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.flows import (
    BatchFailedError,
    BudgetExceededError,
    ImageOptions,
    RunSummary,
    S3Options,
    batch_generate,
)
from prefect_cometapi.reports.artifacts import artifact_key
from prefect_cometapi.text import usd

FLOW = "batch-generate"
TEMPLATE = "A banner for {{ name }} in {{ colour }} ({{ salt }}) {{ note | default('') }}"
MODERATED = "[[fault:moderation]]"
SIZE = "1024x640"
SMALL = ImageOptions(custom_size=SIZE, quality="low")


def prompt_of(item: dict[str, Any]) -> str:
    """What TEMPLATE renders for an item (written out here, not by the code under test)."""
    note = item.get("note", "")
    return f"A banner for {item['name']} in {item['colour']} ({item['salt']}) {note}".strip()


def make_items(count: int, salt: str, failing: Collection[int] = ()) -> list[dict[str, Any]]:
    """``count`` items with ids ``p00``...; those in ``failing`` carry the moderation marker."""
    return [
        {
            "id": f"p{i:02d}",
            "name": f"Product {i}",
            "colour": ("teal", "amber", "slate")[i % 3],
            "salt": salt,
            "note": MODERATED if i in failing else "",
        }
        for i in range(count)
    ]


def failing_ids(indexes: Collection[int]) -> set[str]:
    """Item ids of item positions."""
    return {f"p{i:02d}" for i in indexes}


def estimate_of(items: list[dict[str, Any]], image: ImageOptions = SMALL) -> float:
    """The pre-flight estimate of a batch, from the pricing module's token estimate."""
    costs = [
        estimate_cost(image.model, prompt_of(item), image.request_size, image.quality, image.n)
        for item in items
    ]
    return round(sum(c or 0.0 for c in costs), 6)


def objects(s3_client: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """Every object of a bucket: ``s3://bucket/key -> head``."""
    listing = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {f"s3://{bucket}/{o['Key']}": o for o in listing}


def test_thirty_items_two_refused_are_reported_and_a_rerun_pays_only_for_them(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    failing = {7, 21}
    items = make_items(30, tag(), failing)
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "items": items,
        "image": SMALL,
        "concurrency": 8,
        "credentials_block": credentials,
    }
    state = batch_generate(**params, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert isinstance(summary, RunSummary)
    assert (summary.items, summary.delivered, summary.failed, summary.images) == (30, 28, 2, 28)
    assert "28/30 items delivered, 2 failed" in state.message

    # The emulator saw every prompt once and billed only the 28 it drew.
    requests = emulator.requests
    assert sorted(r.params["prompt"] for r in requests) == sorted(prompt_of(i) for i in items)
    refused = {r.params["prompt"] for r in requests if r.status == 400}
    assert refused == {prompt_of(items[i]) for i in failing}
    assert emulator.billed_requests == 28 and emulator.billed_images == 28

    # The two failures, with the API's own code and message.
    assert set(summary.failures) == {"p07", "p21"}
    for outcome in summary.outcomes:
        if outcome.item_id in summary.failures:
            assert outcome.status == "failed" and outcome.images == []
            assert outcome.error_code == "moderation_blocked"
            assert "rejected by the safety system" in (outcome.error or "")
            assert outcome.cost_usd == 0 and outcome.output_tokens == 0
    assert "safety system" in summary.failures["p07"]

    # 28 objects really in S3, each as reported: checksum, byte size, pixel size.
    stored = objects(s3_client, s3_options.bucket)
    assert set(stored) == set(summary.uris) and len(stored) == 28
    for outcome in summary.outcomes:
        if outcome.status == "failed":
            continue
        (image,) = outcome.images
        assert image.uri.startswith(f"s3://{s3_options.bucket}/out/")
        assert f"/{outcome.item_id}-" in image.uri
        data, size, fmt = s3_image(s3_client, image.uri)
        assert hashlib.sha256(data).hexdigest() == image.sha256
        assert len(data) == image.bytes == stored[image.uri]["Size"]
        assert size == (1024, 640) and fmt == "png" and image.size == SIZE

    # Cost: the sum of the items, and what the emulator billed.
    assert summary.total_cost_usd > 0
    assert summary.total_cost_usd == pytest.approx(sum(o.cost_usd for o in summary.outcomes))
    assert summary.total_cost_usd == pytest.approx(billed_cost(emulator), abs=1e-6)
    assert summary.estimated_cost_usd == pytest.approx(estimate_of(items), abs=1e-6)

    # Artifacts, read back through the Prefect client.
    artifacts = read_artifacts(state.state_details.flow_run_id)
    progress = artifacts[artifact_key(FLOW, "progress")]
    assert progress.type == "progress" and float(progress.data) == pytest.approx(100.0)
    assert progress.description == "30 of 30 items done, 2 failed"
    gallery = artifacts[artifact_key(FLOW, "gallery")]
    assert gallery.type == "markdown"
    assert "**28 of 30 items delivered**, 2 failed" in gallery.data
    assert f"Total cost: {usd(summary.total_cost_usd)}" in gallery.data
    failed_section = gallery.data.split("## Failed items", 1)[1]
    for item_id in ("p07", "p21"):
        assert f"**{item_id}** (moderation_blocked)" in failed_section
    assert failed_section.count("safety system") == 2
    assert failed_section.count(" · prompt: ") == 2
    for uri in summary.uris:
        assert uri in gallery.data
    # The images of the first 24 items (22 delivered) are previews embedded in the artifact;
    # later items are one line each.
    assert_gallery_shape(gallery.data, previews=22)
    table = artifacts[artifact_key(FLOW, "results")]
    assert table.type == "table"
    rows = table_rows(table)
    assert [row["item"] for row in rows] == [f"p{i:02d}" for i in range(30)]
    assert all(list(row) == ["item", "status", "cost", "object"] for row in rows)
    by_item = {row["item"]: row for row in rows}
    details = {row["item"]: row for row in table_rows(artifacts[artifact_key(FLOW, "details")])}
    where = {row["item"]: row for row in table_rows(artifacts[artifact_key(FLOW, "objects")])}
    for outcome in summary.outcomes:
        row = by_item[outcome.item_id]
        assert row["status"] == outcome.status
        uri = outcome.images[0].uri if outcome.images else ""
        assert row["object"] == uri.rsplit("/", 1)[-1]
        assert row["cost"] == usd(outcome.cost_usd)
        detail = details[outcome.item_id]
        assert detail["size"] == SIZE and detail["quality"] == "low"
        assert detail["output_size"] == (SIZE if outcome.images else "")
        if outcome.images:
            assert where[outcome.item_id]["s3_uri"] == uri
        else:
            assert outcome.item_id not in where
    assert {row["status"] for row in rows if row["item"] in failing_ids(failing)} == {"failed"}
    paid = sum(float(str(row["cost"]).lstrip("$")) for row in rows)
    assert paid == pytest.approx(summary.total_cost_usd, abs=len(rows) * 5e-5)  # 4 decimals each

    # Each object declared as an asset, with its checksum.
    events = asset_events_under(f"s3://{s3_options.bucket}/out/", expected=28)
    assert {e.resource.id for e in events} == set(summary.uris)
    assert {e.event for e in events} == {"prefect.asset.materialization.succeeded"}
    sha_by_uri = {uri: o.images[0].sha256 for o in summary.outcomes for uri in o.uris}
    assert all(e.payload["sha256"] == sha_by_uri[e.resource.id] for e in events)

    # The same batch again: requests only for the two failures, nothing billed.
    before = len(emulator.requests)
    again = batch_generate(**params, return_state=True)
    assert again.is_completed(), again.message
    second = again.result()
    new = emulator.requests[before:]
    assert sorted(r.params["prompt"] for r in new) == sorted(prompt_of(items[i]) for i in failing)
    assert emulator.billed_requests == 28
    assert (second.delivered, second.failed, second.cached) == (28, 2, 28)
    assert second.total_cost_usd == 0 and second.uris == summary.uris
    assert all(o.images[0].existed for o in second.outcomes if o.status == "delivered")
    assert "(28 from cache)" in again.message
    gallery = read_artifacts(again.state_details.flow_run_id)[artifact_key(FLOW, "gallery")]
    assert "28 items from the cache, not paid again" in gallery.data
    assert_gallery_shape(gallery.data, previews=22)  # kept from the first run's delivery


def test_all_or_nothing_fails_the_run_but_delivers_the_rest(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    items = make_items(4, tag(), failing={2})
    state = batch_generate(
        s3=s3_options,
        template=TEMPLATE,
        items=items,
        image=SMALL,
        all_or_nothing=True,
        credentials_block=credentials,
        return_state=True,
    )
    assert state.is_failed()
    assert "all_or_nothing=True" in state.message and "p02: moderation_blocked" in state.message
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BatchFailedError)
    assert (error.summary.delivered, error.summary.failed) == (3, 1)
    assert set(objects(s3_client, s3_options.bucket)) == set(error.summary.uris)
    assert len(error.summary.uris) == 3
    assert len(emulator.requests) == 4
    gallery = read_artifacts(state.state_details.flow_run_id)[artifact_key(FLOW, "gallery")]
    assert "**3 of 4 items delivered**, 1 failed" in gallery.data


def test_budget_guard_refuses_before_any_request_and_counts_cached_items_as_free(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options
) -> None:
    items = make_items(3, tag())
    estimate = estimate_of(items)
    assert estimate > 0
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "image": SMALL,
        "credentials_block": credentials,
    }

    with pytest.raises(BudgetExceededError, match="max_cost_usd") as refused:
        batch_generate(**params, items=items, max_cost_usd=round(estimate * 0.95, 6))
    assert refused.value.estimate == pytest.approx(estimate, abs=1e-6)
    assert refused.value.items == 3
    assert emulator.requests == []

    summary = batch_generate(**params, items=items, max_cost_usd=round(estimate * 1.05, 6))
    assert summary.delivered == 3 and len(emulator.requests) == 3
    assert summary.estimated_cost_usd == pytest.approx(estimate, abs=1e-6)
    assert 0 < summary.total_cost_usd <= estimate * 1.05

    # Three of four items are in the cache: only the new one counts against the budget.
    more = [*items, *make_items(4, items[0]["salt"])[3:]]
    one_item = estimate_of(more[3:])
    assert estimate_of(more) > one_item * 1.5
    summary = batch_generate(**params, items=more, max_cost_usd=round(one_item * 1.5, 6))
    assert summary.delivered == 4 and summary.cached == 3
    assert len(emulator.requests) == 4


ITEMS_ROWS = [
    {"sku": "lamp-01", "name": "Lumen lamp", "colour": "brass"},
    {"sku": "kettle-02", "name": "Drift kettle", "colour": "sage"},
]


def items_text(kind: str, salt: str) -> str:
    """ITEMS_ROWS (salted) as CSV or JSONL."""
    rows = [{**row, "salt": salt} for row in ITEMS_ROWS]
    if kind == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    header = ",".join(rows[0])
    return header + "\n" + "".join(",".join(row.values()) + "\n" for row in rows)


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_items_from_a_csv_or_jsonl_file_local_or_in_s3(
    emulator: Any,
    credentials: CometAPICredentials,
    s3_options: S3Options,
    s3_client: Any,
    tmp_path: Any,
    kind: str,
    where: str,
) -> None:
    salt = tag()
    text = items_text(kind, salt)
    if where == "local":
        path = tmp_path / f"items.{kind}"
        path.write_text(text, encoding="utf-8")
        items_file = str(path)
    else:
        key = f"inputs/items.{kind}"
        s3_client.put_object(Bucket=s3_options.bucket, Key=key, Body=text.encode())
        items_file = f"s3://{s3_options.bucket}/{key}"
    summary = batch_generate(
        s3=s3_options,
        template=TEMPLATE,
        items_file=items_file,
        id_field="sku",
        image=SMALL,
        credentials_block=credentials,
    )
    expected = [prompt_of({**row, "salt": salt}) for row in ITEMS_ROWS]
    assert sorted(r.params["prompt"] for r in emulator.requests) == sorted(expected)
    assert [o.item_id for o in summary.outcomes] == ["lamp-01", "kettle-02"]
    assert summary.delivered == 2
    stored = objects(s3_client, s3_options.bucket)
    assert set(summary.uris) <= set(stored)
    assert any("/lamp-01-" in uri for uri in summary.uris)
    assert any("/kettle-02-" in uri for uri in summary.uris)


BAD_FILES = {
    "broken.jsonl": ('{"id": "a", "name": "A", "colour": "red"}\n{"id": "b", "na', "line 2"),
    "not-objects.jsonl": ('{"id": "a", "name": "A", "colour": "red"}\n42\n', "not a JSON object"),
    "extra-cells.csv": ("id,name,colour\na,A,red,surprise\n", "line 2 has more cells"),
    "empty.csv": ("", "at least one item"),
    "missing-variable.csv": ("id,name\na,A\n", "colour"),
    "short-row.csv": ("id,name,colour\na,A,red\nb,B\n", "b: missing template variables: colour"),
    "long-row.csv": ("id,name,colour\na,A,red\nb,B,blue,big\n", "line 3 has more cells"),
    "object.json": ('{"id": "a", "name": "A", "colour": "red"}', "list of objects"),
}


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_items_file_refuses_the_batch_with_zero_requests(
    emulator: Any,
    credentials: CometAPICredentials,
    s3_options: S3Options,
    s3_client: Any,
    tmp_path: Any,
    name: str,
    where: str,
) -> None:
    text, message = BAD_FILES[name]
    if where == "local":
        (tmp_path / name).write_text(text, encoding="utf-8")
        items_file = str(tmp_path / name)
    else:
        s3_client.put_object(Bucket=s3_options.bucket, Key=f"in/{name}", Body=text.encode())
        items_file = f"s3://{s3_options.bucket}/in/{name}"
    with pytest.raises(ValidationError, match=message):
        batch_generate(
            s3=s3_options,
            template=TEMPLATE + f" {tag()}",
            items_file=items_file,
            image=SMALL,
            credentials_block=credentials,
        )
    assert emulator.requests == []
    assert objects(s3_client, s3_options.bucket).keys() <= {f"s3://{s3_options.bucket}/in/{name}"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items_file": "/nonexistent/items.csv"}, "items_file"),
        ({"items_file": "s3://{bucket}/missing/items.jsonl"}, "items_file"),
        ({"items": [{"id": "a", "name": "A", "colour": "red"}, {"id": "b", "name": "B"}]}, "b:"),
        ({"items": [{"id": "a", "name": "A", "colour": "red"}], "template": "{{ oops"}, "syntax"),
        (
            {"items": [{"name": "A", "colour": "red", "salt": "s"}], "concurrency_limit": "nope"},
            "gcl create",
        ),
        (
            {"items": [{"name": "A", "colour": "red", "salt": "s"}], "rate_limit": "nope"},
            "slot-decay",
        ),
    ],
)
def test_missing_files_and_variables_refuse_the_batch_with_zero_requests(
    emulator: Any,
    credentials: CometAPICredentials,
    s3_options: S3Options,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "image": SMALL,
        "credentials_block": credentials,
        **kwargs,
    }
    if "items_file" in params:
        params["items_file"] = params["items_file"].format(bucket=s3_options.bucket)
    state = batch_generate(**params, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ValidationError), error
    assert message in str(error)
    assert emulator.requests == []


def test_a_global_concurrency_limit_caps_requests_in_flight(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options
) -> None:
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "image": SMALL,
        "concurrency": 4,
        "credentials_block": credentials,
    }
    # Without a limit, these four requests overlap (the control: the test can see a breach).
    emulator.configure(latency_s=0.4)
    assert batch_generate(**params, items=make_items(4, tag())).delivered == 4
    assert emulator.peak_in_flight > 2

    name = f"cometapi-test-{tag()}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=2))
    try:
        emulator.reset()
        emulator.configure(latency_s=0.4)
        summary = batch_generate(**params, items=make_items(4, tag()), concurrency_limit=name)
        assert summary.delivered == 4 and len(emulator.requests) == 4
        assert emulator.peak_in_flight == 2
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 0

        # The same limit has no slot decay: as a rate limit it is refused before any request.
        emulator.reset()
        with pytest.raises(ValidationError, match="no slot decay"):
            batch_generate(**params, items=make_items(2, tag()), rate_limit=name)
        assert emulator.requests == []
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


def test_an_upload_failure_keeps_the_paid_image_and_the_rerun_pays_nothing(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    """S3 refuses every upload: the images were paid, so the cache must keep them."""
    items = make_items(6, tag())
    params: dict[str, Any] = {
        "template": TEMPLATE,
        "items": items,
        "image": SMALL,
        "concurrency": 3,
        "credentials_block": credentials,
    }
    missing = s3_options.model_copy(update={"bucket": f"{s3_options.bucket}-missing"})
    before = len(emulator.requests)
    summary = batch_generate(**params, s3=missing)
    assert (summary.delivered, summary.failed) == (0, 6)
    assert all("NoSuchBucket" in error for error in summary.failures.values())
    first = emulator.requests[before:]
    assert len(first) == 6 and all(r.billed_images == 1 for r in first)

    # S3 fixed: the same batch delivers every item from the cache without a request.
    second = batch_generate(**params, s3=s3_options)
    assert len(emulator.requests) == before + 6, "the re-run paid again for generated images"
    assert (second.delivered, second.cached, second.total_cost_usd) == (6, 6, 0)
    assert set(objects(s3_client, s3_options.bucket)) == set(second.uris)
    assert len(second.uris) == 6


def test_a_rerun_skips_the_upscale_and_the_upload_of_items_already_in_s3(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options, s3_client: Any
) -> None:
    from prefect_cometapi.flows import UpscaleOptions
    from prefect_cometapi.s3.client import shared_s3_client

    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "items": make_items(3, tag()),
        "image": SMALL,
        "upscale": UpscaleOptions(custom_size="2048x1280", mode="stretch"),
        "concurrency": 3,
        "credentials_block": credentials,
    }
    first = batch_generate(**params)
    assert (first.delivered, first.already_delivered) == (3, 0)
    assert all(o.images[0].size == "2048x1280" for o in first.outcomes)
    # One object goes missing: only that item is upscaled and uploaded again (from the cache).
    gone = first.outcomes[1].images[0]
    s3_client.delete_object(Bucket=gone.bucket, Key=gone.key)

    sent: list[str] = []
    flow_client = shared_s3_client(s3_options.endpoint_url, s3_options.aws_credentials_block)

    def count(**kwargs: Any) -> None:
        sent.append(kwargs["event_name"].rsplit(".", 1)[-1])

    flow_client.meta.events.register("before-send.s3", count)
    try:
        requests_before = len(emulator.requests)
        state = batch_generate(**params, return_state=True)
    finally:
        flow_client.meta.events.unregister("before-send.s3", count)
    second = state.result()
    assert len(emulator.requests) == requests_before
    assert [o.already_delivered for o in second.outcomes] == [True, False, True]
    assert all(o.cached for o in second.outcomes) and second.total_cost_usd == 0
    assert second.already_delivered == 2 and second.uris == first.uris
    assert [o.images[0].sha256 for o in second.outcomes] == [
        o.images[0].sha256 for o in first.outcomes
    ]
    assert all(
        o.images[0].existed and o.images[0].url for o in second.outcomes if o.already_delivered
    )
    # Two HEADs that found the objects, one that did not; then the missing item's HEAD and PUT.
    assert sorted(sent) == ["HeadObject"] * 4 + ["PutObject"]
    _, dims, _ = s3_image(s3_client, gone.uri)
    assert dims == (2048, 1280)


def test_a_spend_limit_paces_the_batch_and_must_exist(
    emulator: Any, credentials: CometAPICredentials, s3_options: S3Options
) -> None:
    params: dict[str, Any] = {
        "s3": s3_options,
        "template": TEMPLATE,
        "image": SMALL,
        "concurrency": 4,
        "credentials_block": credentials,
    }
    with pytest.raises(ValidationError, match="spend_limit"):
        batch_generate(**params, items=make_items(2, tag()), spend_limit=f"missing-{tag()}")
    assert emulator.requests == []

    name = f"cometapi-spend-{tag()}"
    one = estimate_cost("gpt-image-2", "x" * 60, SMALL.request_size, SMALL.quality) or 0.0
    # A burst of about two requests, then one more every second: 4 items take over a second.
    settings = create_spend_limit(name, dollars=one * 60, window_s=60, burst_usd=one * 2.5)
    started = time.monotonic()
    summary = batch_generate(**params, items=make_items(4, tag()), spend_limit=name)
    assert summary.delivered == 4 and emulator.billed_requests == 4
    starts = sorted(r.started_at for r in emulator.requests)
    assert starts[-1] - starts[0] >= 1.0, starts
    assert time.monotonic() - started >= 1.0
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).limit == settings.limit
