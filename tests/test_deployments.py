"""Deployments for real (SLOW: a minute or two): ``deployments/prefect.yaml`` on a real server.

A real ``prefect server start`` on 127.0.0.1 (own PREFECT_HOME), the work pools and block made
with the CLI, ``prefect deploy --all`` applied from the repository root, and a process worker
running in another directory (so the deployments' pull step must bring each run back to the
repository). Runs are started the way the UI and the CLI start them and must end COMPLETED with
real images in moto's S3 and real requests at the CometAPI emulator. Also checked: the weekly
schedule, the typed parameter forms, the fleet pool's concurrency, and that
``deployments/serve.py`` builds the same deployments.

Select or skip them with ``-m slow`` / ``-m "not slow"``.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from PIL import Image

pytest.register_assert_rewrite("fixtures_deploy")
from fixtures_deploy import (  # noqa: E402 - after the rewrite hook
    FLEET_POOL,
    FLEET_POOL_CONCURRENCY,
    GLOBAL_LIMITS,
    PREFECT_FILE,
    PROCESS_POOL,
    REPO_ROOT,
    DeployedProject,
    as_param,
    flow_run_id_from_cli,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ON_DEMAND = "generate-and-upload/on-demand"
EDIT = "edit-and-upload/on-demand"
WEEKLY = "batch-generate/weekly-banners"
FLEET = "batch-generate/fleet"
ALL_DEPLOYMENTS = (WEEKLY, ON_DEMAND, EDIT, FLEET)
EXAMPLE_PRODUCTS = REPO_ROOT / "flows" / "examples" / "products.jsonl"


def _deployment(project: DeployedProject, name: str) -> Any:
    with project.client() as client:
        return client.read_deployment_by_name(name)


def _objects(s3_client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {
        obj["Key"]: s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for obj in listing.get("Contents", [])
    }


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def _load_serve_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cometapi_serve", REPO_ROOT / "deployments" / "serve.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_deployment_is_applied_to_its_pool(deployed_project: DeployedProject) -> None:
    for name in ALL_DEPLOYMENTS:
        deployment = _deployment(deployed_project, name)
        expected_pool = FLEET_POOL if name == FLEET else PROCESS_POOL
        assert deployment.work_pool_name == expected_pool, name
        assert deployment.entrypoint.startswith("flows/"), deployment.entrypoint
        assert (REPO_ROOT / deployment.entrypoint.split(":")[0]).is_file()
        # The pull step brings the run to the directory `prefect deploy` ran in (the repo).
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ], deployment.pull_steps
        assert deployment.parameters["credentials_block"] == "cometapi"
        assert deployment.parameters["s3"]["bucket"] == deployed_project.bucket


def test_weekly_deployment_has_its_cron_schedule(deployed_project: DeployedProject) -> None:
    deployment = _deployment(deployed_project, WEEKLY)
    assert len(deployment.schedules) == 1
    schedule = deployment.schedules[0]
    assert schedule.active
    assert schedule.schedule.cron == "0 6 * * 1"
    assert schedule.schedule.timezone == "UTC"
    assert deployment.parameters["template"] == "flows/examples/product_banner.j2"
    assert deployment.parameters["items_file"] == "flows/examples/products.jsonl"
    assert deployment.parameters["upscale"]["target"] == "3840x2160"
    for name in (ON_DEMAND, EDIT, FLEET):
        assert _deployment(deployed_project, name).schedules == [], name


def test_fleet_pool_and_deployment_limit_concurrency(deployed_project: DeployedProject) -> None:
    with deployed_project.client() as client:
        pool = client.read_work_pool(FLEET_POOL)
    assert pool.type == "process"
    assert pool.concurrency_limit == FLEET_POOL_CONCURRENCY
    deployment = _deployment(deployed_project, FLEET)
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 4
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert deployment.parameters["concurrency_limit"] == "cometapi-requests"
    assert deployment.parameters["rate_limit"] == "cometapi-rpm"


@pytest.mark.parametrize("name", ALL_DEPLOYMENTS)
def test_parameter_form_is_typed(deployed_project: DeployedProject, name: str) -> None:
    schema = _deployment(deployed_project, name).parameter_openapi_schema
    properties = schema["properties"]
    undocumented = [key for key, value in properties.items() if not value.get("description")]
    assert not undocumented, f"{name}: parameters without a description: {undocumented}"
    assert properties["image"]["$ref"] == "#/definitions/ImageOptions"
    assert properties["s3"]["$ref"] == "#/definitions/S3Options"
    image = schema["definitions"]["ImageOptions"]["properties"]
    assert image["quality"]["enum"] == ["low", "medium", "high", "auto"]
    assert image["output_format"]["enum"] == ["png", "jpeg", "webp"]
    assert image["background"]["enum"] == ["transparent", "opaque", "auto"]
    assert "1536x1024" in image["size"]["enum"] and "auto" in image["size"]["enum"]
    assert image["n"]["minimum"] == 1 and image["n"]["maximum"] == 10
    assert all(field.get("description") for field in image.values()), image
    upscale = schema["definitions"]["UpscaleOptions"]["properties"]
    assert "3840x2160" in upscale["target"]["enum"] and "none" in upscale["target"]["enum"]
    s3_form = schema["definitions"]["S3Options"]
    # A bucket name or a saved S3Bucket block's name: one of the two, checked when the run starts.
    assert {"bucket", "bucket_block"} <= set(s3_form["properties"]) and not s3_form.get("required")


def test_on_demand_run_from_the_cli(
    deployed_project: DeployedProject,
    emulator: Any,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    """`prefect deployment run ... --param` as the README shows; the bucket is overridden."""
    prompt = "A lighthouse at dawn, watercolour"
    started = deployed_project.prefect.cli(
        "deployment",
        "run",
        ON_DEMAND,
        "--param",
        f"prompt={prompt}",
        "--param",
        "s3=" + as_param({"bucket": s3_bucket, "prefix": "ui/"}),
        "--param",
        "image=" + as_param({"size": "1536x1024", "quality": "low", "n": 2}),
        "--param",
        "upscale=" + as_param({"long_edge": 2048}),
    )
    run = deployed_project.wait_for_flow_run(flow_run_id_from_cli(started.stdout))
    assert run.parameters["s3"]["bucket"] == s3_bucket
    assert run.parameters["credentials_block"] == "cometapi"  # from the deployment

    objects = _objects(s3_client, s3_bucket, "ui/")
    assert len(objects) == 2, list(objects)
    assert all(key.endswith(".png") for key in objects)
    assert {_size(data) for data in objects.values()} == {(2048, 1365)}
    requests = [r for r in emulator.requests if r.endpoint == "generations"]
    assert len(requests) == 1
    assert requests[0].status == 200
    assert requests[0].params["prompt"] == prompt
    assert requests[0].params["size"] == "1536x1024" and requests[0].params["n"] == 2
    assert emulator.billed_images == 2


def test_weekly_banners_run_like_the_ui_does(
    deployed_project: DeployedProject, emulator: Any, s3_client: Any
) -> None:
    """A flow run from the deployment (the UI's "Run"), with the deployment's own parameters.

    The template and products file are relative paths: they only resolve because the pull step
    put the run in the repository, although the worker runs elsewhere.
    """
    deployment = _deployment(deployed_project, WEEKLY)
    with deployed_project.client() as client:
        created = client.create_flow_run_from_deployment(
            deployment.id, parameters={"image": {"size": "1536x864", "quality": "low"}}
        )
    run = deployed_project.wait_for_flow_run(created.id)
    assert run.parameters["items_file"] == "flows/examples/products.jsonl"

    products = [json.loads(line) for line in EXAMPLE_PRODUCTS.read_text().splitlines() if line]
    objects = _objects(s3_client, deployed_project.bucket, "banners/")
    assert len(objects) == len(products), list(objects)
    for product in products:
        assert any(f"/{product['id']}-" in key for key in objects), (product["id"], list(objects))
    assert {_size(data) for data in objects.values()} == {(3840, 2160)}

    requests = [r for r in emulator.requests if r.endpoint == "generations"]
    assert len(requests) == len(products)
    prompts = sorted(r.params["prompt"] for r in requests)
    for product in products:
        assert sum(f'"{product["name"]}"' in p for p in prompts) == 1, product["name"]
    assert all(r.params["size"] == "1536x864" and r.status == 200 for r in requests)


def test_edit_run_from_an_s3_source(
    deployed_project: DeployedProject, emulator: Any, s3_client: Any, s3_bucket: str
) -> None:
    source = io.BytesIO()
    Image.new("RGB", (1024, 1024), (40, 90, 160)).save(source, format="PNG")
    s3_client.put_object(Bucket=s3_bucket, Key="in/source.png", Body=source.getvalue())
    deployment = _deployment(deployed_project, EDIT)
    with deployed_project.client() as client:
        created = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "prompt": "Add a red scarf",
                "images": [f"s3://{s3_bucket}/in/source.png"],
                "s3": {"bucket": s3_bucket, "prefix": "edited/"},
                "image": {"size": "auto", "quality": "low", "output_format": "webp"},
            },
        )
    deployed_project.wait_for_flow_run(created.id)

    objects = _objects(s3_client, s3_bucket, "edited/")
    assert len(objects) == 1 and next(iter(objects)).endswith(".webp"), list(objects)
    assert _size(next(iter(objects.values()))) == (1024, 1024)
    requests = [r for r in emulator.requests if r.endpoint == "edits"]
    assert len(requests) == 1 and requests[0].status == 200
    assert requests[0].params["prompt"] == "Add a red scarf"
    assert sum(len(parts) for parts in requests[0].files.values()) == 1


def test_fleet_run_shares_the_global_limits(
    deployed_project: DeployedProject, emulator: Any, s3_client: Any, s3_bucket: str
) -> None:
    """The fleet deployment runs on its own pool and acquires both global limits (strictly:
    a missing limit would fail every item)."""
    items = [{"id": f"poster-{i}", "name": f"Poster {i}"} for i in range(3)]
    deployment = _deployment(deployed_project, FLEET)
    with deployed_project.client() as client:
        created = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "template": "A minimalist poster titled {{ name }}",
                "items": items,
                "image": {"size": "1024x1024", "quality": "low"},
                "s3": {"bucket": s3_bucket, "prefix": "fleet/"},
                "all_or_nothing": True,
            },
        )
    run = deployed_project.wait_for_flow_run(created.id)
    assert run.work_pool_name == FLEET_POOL
    with deployed_project.client() as client:
        limits = {
            name: client.read_global_concurrency_limit_by_name(name) for name in GLOBAL_LIMITS
        }
    assert limits["cometapi-rpm"].slot_decay_per_second == 1
    objects = _objects(s3_client, s3_bucket, "fleet/")
    assert len(objects) == len(items), list(objects)
    for item in items:
        assert any(f"/{item['id']}-" in key for key in objects), (item["id"], list(objects))
    assert len([r for r in emulator.requests if r.endpoint == "generations"]) == len(items)


def test_serve_builds_the_same_deployments(deployed_project: DeployedProject) -> None:
    """deployments/serve.py: same names, schedules and parameters as the applied prefect.yaml."""
    serve = _load_serve_module()
    environ = {"COMETAPI_S3_BUCKET": deployed_project.bucket}
    served = serve.build_deployments(environ=environ)
    assert sorted(f"{d.flow_name}/{d.name}" for d in served) == sorted(
        [WEEKLY, ON_DEMAND, EDIT]
    )  # the fleet needs a pool: only served when named
    for deployment in served:
        applied = _deployment(deployed_project, f"{deployment.flow_name}/{deployment.name}")
        assert deployment.parameters == applied.parameters
        assert deployment.description == applied.description
        assert sorted(deployment.tags) == sorted(applied.tags)
        crons = [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules]
        assert crons == [(s.schedule.cron, s.schedule.timezone) for s in applied.schedules]
        assert deployment._parameter_openapi_schema.model_dump() == (
            applied.parameter_openapi_schema
        )
    fleet = serve.build_deployments([FLEET], environ=environ)
    assert fleet[0].concurrency_limit == 4
    with pytest.raises(ValueError, match="no such deployment"):
        serve.build_deployments(["batch-generate/nope"], environ=environ)


def test_prefect_yaml_is_the_one_applied() -> None:
    """Guard against testing a stale copy: the file names exactly the deployments checked above."""
    document = yaml.safe_load(Path(PREFECT_FILE).read_text())
    names = sorted(f"{d['entrypoint']}|{d['name']}" for d in document["deployments"])
    assert names == sorted(
        [
            "flows/batch.py:batch_generate|weekly-banners",
            "flows/pipeline.py:generate_and_upload|on-demand",
            "flows/pipeline.py:edit_and_upload|on-demand",
            "flows/batch.py:batch_generate|fleet",
            "flows/fanout.py:batch_generate_chunk|fleet-chunk",
        ]
    )
