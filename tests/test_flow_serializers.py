"""A user's flow returning the result types with any serializer Prefect ships (issue 20.2): the
result is persisted, and another process reads it back from local or S3Bucket (moto) storage."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
from flow_checks import tag
from prefect import flow
from prefect.serializers import (
    CompressedJSONSerializer,
    CompressedPickleSerializer,
    JSONSerializer,
    PickleSerializer,
)
from prefect.settings import PREFECT_API_URL

from prefect_cometapi import CometAPICredentials, ImageResult
from prefect_cometapi.flows import RunSummary
from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome
from prefect_cometapi.tasks import S3Object, generate_image, upload_image

SERIALIZERS = ["json", "pickle", "compressed/json", "compressed/pickle"]

_READER = """
import json, sys
from prefect.client.orchestration import get_client
out = {}
with get_client(sync_client=True) as client:
    for run_id in sys.argv[1:]:
        value = client.read_flow_run(run_id).state.result()
        result, stored, summary = value["result"], value["stored"], value["summary"]
        out[run_id] = {
            "type": type(result).__name__,
            "cached": result.cached,
            "billed": result.billed_usd,
            "full": result.model_dump_json(include_data=True),
            "stored": stored.model_dump_json(),
            "summary": summary.model_dump_json(),
        }
print("RESULTS " + json.dumps(out))
"""


def _read_in_another_process(run_ids: list[str]) -> dict[str, Any]:
    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_SERVER_ANALYTICS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _READER, *run_ids],
        capture_output=True,
        text=True,
        timeout=180,
        env={**__import__("os").environ, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


def _summary() -> RunSummary:
    image = DeliveredImage(
        uri="s3://b/k.png",
        bucket="b",
        key="k.png",
        sha256="0" * 64,
        size="1x1",
        format="png",
        bytes=3,
    )
    outcome = ItemOutcome(
        item_id="a",
        index=0,
        status="delivered",
        prompt_excerpt="p",
        size="1x1",
        quality="low",
        images=[image],
        cost_usd=0.01,
    )
    return RunSummary.from_outcomes("f", [outcome])


@pytest.fixture
def s3_result_storage(s3_server, s3_bucket) -> Any:
    from prefect_aws import AwsCredentials, S3Bucket

    aws = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3_server.endpoint_url},
    )
    name = f"flow-results-{uuid.uuid4().hex[:8]}"
    S3Bucket(bucket_name=s3_bucket, bucket_folder="flow-results", credentials=aws).save(name)
    return S3Bucket.load(name)


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_flow_results_persist_with_every_serializer(
    storage: str,
    credentials: CometAPICredentials,
    emulator,
    s3_client,
    s3_bucket,
    request,
) -> None:
    result_storage = request.getfixturevalue("s3_result_storage") if storage == "s3" else None
    prompt = f"serializable lamp {tag()}"
    runs: dict[str, tuple[str, ImageResult, S3Object]] = {}
    for serializer in SERIALIZERS:
        options: dict[str, Any] = {"result_serializer": serializer, "persist_result": True}
        if result_storage is not None:
            options["result_storage"] = result_storage

        @flow(name=f"serializer-{serializer.replace('/', '-')}", **options)
        def banner() -> dict[str, Any]:
            result = generate_image(prompt, credentials, quality="low")
            key = f"serialized/{uuid.uuid4().hex}.png"
            stored = upload_image(result.images[0], s3_bucket, key, s3_client=s3_client)
            return {"result": result, "stored": stored, "summary": _summary()}

        state = banner(return_state=True)
        assert state.is_completed(), state.message
        assert state.data.metadata.storage_key  # persisted, not only in memory
        value = state.result()
        runs[str(state.state_details.flow_run_id)] = (serializer, value["result"], value["stored"])
    assert emulator.billed_requests == 1  # the first run paid, the other three were cached

    read = _read_in_another_process(list(runs))
    for run_id, (serializer, result, stored) in runs.items():
        got = read[run_id]
        assert got["type"] == "ImageResult", serializer
        again = ImageResult.model_validate_json(got["full"])
        assert again == result, serializer  # bytes, cached and billed_usd included
        assert again.images[0].data == result.images[0].data
        assert (got["cached"], got["billed"]) == (result.cached, result.billed_usd)
        assert S3Object.model_validate_json(got["stored"]) == stored
        assert RunSummary.model_validate_json(got["summary"]) == _summary()
    cached = [result.cached for _, result, _ in runs.values()]
    assert cached == [False, True, True, True]


def test_serializers_round_trip_the_types_exactly(credentials: CometAPICredentials) -> None:
    @flow
    def one() -> ImageResult:
        return generate_image(f"round trip {tag()}", credentials, quality="low", n=2)

    result = one()
    values = [result, result.as_cached(), ImageResult.model_validate(result.model_dump())]
    values += [result.images[0], result.usage, _summary()]
    for serializer in (
        JSONSerializer(),
        PickleSerializer(),
        CompressedJSONSerializer(),
        CompressedPickleSerializer(),
    ):
        blob = serializer.dumps(values)
        assert serializer.loads(blob) == values, serializer.type
