"""The result types' JSON form: small by default, bytes on request, a full round trip."""

import json
import pickle

import pytest

from prefect_cometapi import CometAPIClient, GeneratedImage, ImageResult
from prefect_cometapi.tasks import S3Object, upload_image


@pytest.fixture
def result(emulator, api_key) -> ImageResult:
    with CometAPIClient(api_key=api_key, base_url=emulator.base_url) as client:
        return client.generate("a json kite", n=2, size="1024x1024", quality="low")


def test_small_json_form_describes_the_request(result: ImageResult) -> None:
    text = result.model_dump_json()
    data = json.loads(text)
    assert len(text) < 2000 and "data" not in data["images"][0]
    assert data["request_id"] == result.request_id and data["request_id"]
    assert data["cost_usd"] == pytest.approx(result.cost_usd)
    assert data["usage"]["output_tokens"] == result.usage.output_tokens > 0
    first = data["images"][0]
    assert first["sha256"] == result.images[0].sha256
    assert (first["width"], first["height"], first["size"]) == (1024, 1024, "1024x1024")
    assert first["bytes"] == len(result.images[0].data)
    assert "usage" not in first  # the request's usage is written once
    assert (data["cached"], data["billed_usd"]) == (False, data["cost_usd"])
    assert not ImageResult.model_validate(data).has_data  # a value that knows it has no bytes


def test_full_form_round_trips(result: ImageResult) -> None:
    again = ImageResult.model_validate_json(result.model_dump_json(include_data=True))
    assert again == result
    assert again.images[1].data == result.images[1].data
    assert again.images[0].usage == result.usage
    python_form = result.model_dump(include_data=True)
    assert isinstance(python_form["images"][0]["data"], bytes)
    assert ImageResult.model_validate(python_form) == result
    assert pickle.loads(pickle.dumps(result)) == result

    image = result.images[0]
    assert GeneratedImage.model_validate_json(image.model_dump_json(include_data=True)) == image
    assert json.loads(image.model_dump_json())["usage"]["total_tokens"] > 0


def test_s3_object_json(result: ImageResult, s3_bucket, s3_client) -> None:
    obj = upload_image(result.images[0], s3_bucket, "json/a.png", s3_client=s3_client)
    data = json.loads(obj.model_dump_json())
    assert data["uri"] == f"s3://{s3_bucket}/json/a.png"
    assert data["sha256"] == result.images[0].sha256
    assert S3Object.model_validate(data) == obj
