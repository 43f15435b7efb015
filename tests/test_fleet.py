"""Many workers, one cache, one API budget: the fleet deployment on a real Prefect server.

Two process workers of the ``cometapi-fleet`` pool, each with its own PREFECT_HOME, share what
``deployments/prefect.yaml`` and docs/fleet.md say they share: the results (image cache and chunk
summaries) in an S3Bucket block on moto, the cache's lock directory, and a global concurrency
limit created with ``prefect gcl create``. A batch of 60 items fans out into chunk flow runs
that both workers take; the CometAPI emulator (with latency, so requests overlap) records what
it receives and its peak of requests in flight.

Select or skip with ``-m slow`` / ``-m "not slow"``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

pytest.register_assert_rewrite("fixtures_deploy")
from fixtures_deploy import (  # noqa: E402 - after the rewrite hook
    FLEET_WORKER_LIMIT,
    RESULTS_BLOCK,
    SECOND_WORKER_QUEUE,
    DeployedProject,
    FleetWorkers,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FLEET = "batch-generate/fleet"
CHUNK_DEPLOYMENT = "batch-generate-chunk/fleet-chunk"
ITEMS = 60
CHUNK_SIZE = 15
SLOTS = 4
LATENCY_S = 1.0
"""Per request: with 4 slots for 60 items a chunk lasts seconds, longer than a worker's poll
interval (1 s), so the runs are alive together and a worker at its limit leaves some to the
other (at 0.4 s one busy worker could finish its chunks and take the rest first)."""
REQUEST_LIMIT = "fleet-test-requests"
TEMPLATE = "A minimalist poster titled {{ name }}"


@dataclass
class FleetBatch:
    """The first run of the 60-item batch and what the servers saw meanwhile.

    Attributes:
        parameters: The run's parameters.
        run: The parent flow run (completed).
        chunks: Its chunk flow runs.
        prompts: The prompts the emulator received (generations).
        statuses: Their HTTP statuses.
        peak_in_flight: The emulator's peak of concurrent requests.
        objects: S3 key -> object size after the run.
        bucket: The delivery bucket.
        diagnostics: The server's and workers' log tails after the run, for failure messages.
    """

    parameters: dict[str, Any]
    run: Any
    chunks: list[Any]
    prompts: list[str]
    statuses: list[int | None]
    peak_in_flight: int
    objects: dict[str, int]
    bucket: str
    diagnostics: str


def _objects(s3_client: Any, bucket: str, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj["Size"]
    return found


def _child_runs(project: DeployedProject, parent_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with project.client() as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )


def _artifacts(project: DeployedProject, flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with project.client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    # Only keyed artifacts are ours (every artifact the flows publish has a key).
    return {artifact.key.rsplit("-", 1)[-1]: artifact for artifact in found if artifact.key}


def _start(project: DeployedProject, parameters: dict[str, Any], **options: Any) -> Any:
    with project.client() as client:
        deployment = client.read_deployment_by_name(FLEET)
        return client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, **options
        )


def _wait_final(project: DeployedProject, flow_run_id: Any, timeout: float = 180.0) -> Any:
    with project.client() as client:
        deadline = time.monotonic() + timeout
        run = client.read_flow_run(flow_run_id)
        while not (run.state and run.state.is_final()) and time.monotonic() < deadline:
            time.sleep(1.0)
            run = client.read_flow_run(flow_run_id)
    assert run.state is not None and run.state.is_final(), project.prefect.diagnostics()
    return run


def _worker_of(run: Any) -> str | None:
    return run.labels.get("prefect.worker.name")


@pytest.fixture(scope="module")
def fleet_batch(
    deployed_project: DeployedProject,
    second_fleet_worker: FleetWorkers,
    emulator_server: Any,
    s3_server: Any,
) -> FleetBatch:
    """The 60-item batch on the fleet: 4 chunk runs of 15, within a 4-slot global limit."""
    prefect = deployed_project.prefect
    prefect.cli("gcl", "create", REQUEST_LIMIT, "--limit", str(SLOTS))
    s3 = s3_server.client()
    bucket = f"fleet-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    token = uuid.uuid4().hex[:8]  # prompts no earlier run can have cached
    parameters = {
        "template": TEMPLATE,
        "items": [{"id": f"poster-{i:02d}", "name": f"Poster {i} ({token})"} for i in range(ITEMS)],
        "image": {"size": "1024x1024", "quality": "low"},
        "s3": {"bucket": bucket, "prefix": "fleet/"},
        "concurrency": 4,
        "concurrency_limit": REQUEST_LIMIT,
        "chunk_size": CHUNK_SIZE,
        "all_or_nothing": True,
    }
    emulator_server.wait_idle(timeout=10)
    emulator_server.reset()
    emulator_server.configure(latency_s=LATENCY_S)
    try:
        created = _start(deployed_project, parameters)
        run = deployed_project.wait_for_flow_run(created.id, timeout=300)
        requests = [r for r in emulator_server.requests if r.endpoint == "generations"]
        peak = emulator_server.peak_in_flight
    finally:
        emulator_server.configure(latency_s=0.0)
    return FleetBatch(
        parameters=parameters,
        run=run,
        chunks=_child_runs(deployed_project, run.id),
        prompts=[str(r.params.get("prompt")) for r in requests],
        statuses=[r.status for r in requests],
        peak_in_flight=peak,
        objects=_objects(s3, bucket, "fleet/"),
        bucket=bucket,
        diagnostics=prefect.diagnostics(),
    )


def test_every_item_is_delivered_once_and_requested_once(fleet_batch: FleetBatch) -> None:
    keys = list(fleet_batch.objects)
    assert len(keys) == ITEMS, keys
    for item in fleet_batch.parameters["items"]:
        assert sum(f"/{item['id']}-" in key for key in keys) == 1, item["id"]
    # The emulator saw each distinct request exactly once, all answered.
    assert len(fleet_batch.prompts) == ITEMS
    assert len(set(fleet_batch.prompts)) == ITEMS
    expected = {
        f"A minimalist poster titled {item['name']}" for item in fleet_batch.parameters["items"]
    }
    assert set(fleet_batch.prompts) == expected
    assert set(fleet_batch.statuses) == {200}


def test_the_batch_fans_out_into_chunk_runs_on_both_workers(
    fleet_batch: FleetBatch, second_fleet_worker: FleetWorkers
) -> None:
    chunks = fleet_batch.chunks
    assert len(chunks) == ITEMS // CHUNK_SIZE, [c.name for c in chunks]
    assert all(c.state is not None and c.state.is_completed() for c in chunks)
    assert all(c.parent_task_run_id is not None for c in chunks)  # linked as subflow runs
    assert sorted(len(c.parameters["items"]) for c in chunks) == [CHUNK_SIZE] * len(chunks)
    # Every item went to exactly one chunk, with the prompt the parent rendered and checked.
    indexes = sorted(i["index"] for c in chunks for i in c.parameters["items"])
    assert indexes == list(range(ITEMS))
    for chunk in chunks:
        assert chunk.work_pool_name == "cometapi-fleet"
        assert chunk.parameters["concurrency_limit"] == REQUEST_LIMIT
        assert chunk.parameters["credentials_block"] == "cometapi"  # a name, never the key
        assert "sk-" not in json.dumps(chunk.parameters)
    # Each worker runs at most FLEET_WORKER_LIMIT flow runs, and the parent and its chunks are
    # more than that: both workers took work.
    assert 1 + len(chunks) > FLEET_WORKER_LIMIT
    workers = {_worker_of(run) for run in [fleet_batch.run, *chunks]}
    assert workers == {second_fleet_worker.first_name, second_fleet_worker.second_name}, (
        f"{workers}\n{fleet_batch.diagnostics}"
    )


def test_the_global_limit_caps_requests_in_flight(fleet_batch: FleetBatch) -> None:
    # 4 chunks x concurrency 4 would put 16 requests in flight; the 4-slot limit allows 4.
    assert 2 <= fleet_batch.peak_in_flight <= SLOTS, fleet_batch.peak_in_flight


def test_the_parent_adds_up_the_chunks(
    fleet_batch: FleetBatch, deployed_project: DeployedProject
) -> None:
    run = fleet_batch.run
    assert run.state.message.startswith(f"{ITEMS}/{ITEMS} items delivered, 0 failed")
    artifacts = _artifacts(deployed_project, run.id)
    assert artifacts["progress"].data == 100.0
    table = artifacts["results"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) == ITEMS
    details = artifacts["details"].data
    details = json.loads(details) if isinstance(details, str) else details
    assert len(details) == ITEMS and not any(row["cached"] for row in details)
    objects = artifacts["objects"].data
    objects = json.loads(objects) if isinstance(objects, str) else objects
    assert sorted(row["s3_uri"] for row in objects) == sorted(
        f"s3://{fleet_batch.bucket}/{key}" for key in fleet_batch.objects
    )
    total = sum(float(row["cost"].lstrip("$")) for row in rows)  # "$0.0047": 4 decimals each
    assert total > 0
    headline = re.search(r"\$(\d+\.\d{4})", run.state.message)
    assert headline and float(headline.group(1)) == pytest.approx(total, abs=ITEMS * 5e-5)
    chunk_headlines = [c.state.message for c in fleet_batch.chunks]
    assert all(m.startswith(f"{CHUNK_SIZE}/{CHUNK_SIZE} items delivered") for m in chunk_headlines)


def test_a_rerun_on_the_other_worker_is_all_cache_hits(
    fleet_batch: FleetBatch,
    deployed_project: DeployedProject,
    second_fleet_worker: FleetWorkers,
    emulator_server: Any,
    s3_client: Any,
) -> None:
    """The whole batch again, in one run on the second worker (its own PREFECT_HOME): every
    image, including those the first worker made, comes from the shared S3 result storage."""
    made_by_first = [
        c for c in fleet_batch.chunks if _worker_of(c) == second_fleet_worker.first_name
    ]
    assert made_by_first, f"the first worker made none of the images\n{fleet_batch.diagnostics}"
    emulator_server.wait_idle(timeout=10)
    emulator_server.reset()
    created = _start(
        deployed_project,
        {**fleet_batch.parameters, "chunk_deployment": ""},  # empty: no fan-out
        work_queue_name=SECOND_WORKER_QUEUE,
    )
    run = deployed_project.wait_for_flow_run(created.id, timeout=300)
    assert _worker_of(run) == second_fleet_worker.second_name
    assert _child_runs(deployed_project, run.id) == []
    assert emulator_server.requests == []
    assert run.state.message == (
        f"{ITEMS}/{ITEMS} items delivered, 0 failed, {ITEMS} images, $0.0000 ({ITEMS} from cache)"
    )
    assert _objects(s3_client, fleet_batch.bucket, "fleet/") == fleet_batch.objects


def test_the_budget_guard_refuses_before_any_chunk_starts(
    fleet_batch: FleetBatch, deployed_project: DeployedProject, emulator_server: Any
) -> None:
    emulator_server.wait_idle(timeout=10)
    emulator_server.reset()
    token = uuid.uuid4().hex[:8]
    created = _start(
        deployed_project,
        {
            **fleet_batch.parameters,
            "items": [{"id": f"new-{i}", "name": f"New {i} ({token})"} for i in range(ITEMS)],
            "max_cost_usd": 0.001,
        },
    )
    run = _wait_final(deployed_project, created.id)
    assert run.state.is_failed(), run.state
    assert "max_cost_usd" in (run.state.message or ""), run.state.message
    assert _child_runs(deployed_project, run.id) == []
    assert emulator_server.requests == []


def test_the_results_block_is_what_the_fleet_uses(deployed_project: DeployedProject) -> None:
    with deployed_project.client() as client:
        for name in (FLEET, CHUNK_DEPLOYMENT):
            deployment = client.read_deployment_by_name(name)
            env = deployment.job_variables["env"]
            assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == f"s3-bucket/{RESULTS_BLOCK}"
        fleet = client.read_deployment_by_name(FLEET)
    assert fleet.parameters["chunk_deployment"] == CHUNK_DEPLOYMENT
