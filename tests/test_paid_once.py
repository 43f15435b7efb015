"""Never paying twice by default: the serializer check and nested tasks, counted on the emulator."""

import asyncio
import uuid

import pytest
from prefect import flow, task
from prefect.serializers import CompressedSerializer, JSONSerializer

from prefect_cometapi import CometAPICredentials, ValidationError
from prefect_cometapi.tasks import agenerate_image, generate_image


def _creds(emulator, api_key: str) -> CometAPICredentials:
    return CometAPICredentials(api_key=api_key, base_url=emulator.base_url)


def _prompt(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def test_a_serializer_that_loses_the_image_is_refused_before_any_request(emulator, api_key) -> None:
    credentials = _creds(emulator, api_key)
    # JSON without Prefect's object encoder cannot write an ImageResult at all.
    lossy = JSONSerializer(object_encoder=None)
    as_json = generate_image.with_options(result_serializer=lossy, retries=0)

    @flow
    def json_flow():
        return as_json(_prompt("json"), credentials, size="1024x1024")

    with pytest.raises(ValidationError, match="result_serializer") as raised:
        json_flow()
    assert "cache would be off" in str(raised.value)
    assert emulator.requests == []


@pytest.mark.parametrize("serializer", [CompressedSerializer(serializer="pickle"), "json"])
def test_a_serializer_that_keeps_the_image_caches(emulator, api_key, serializer) -> None:
    credentials = _creds(emulator, api_key)
    compressed = generate_image.with_options(result_serializer=serializer)
    prompt = _prompt("compressed")

    @flow
    def compressed_flow():
        return compressed(prompt, credentials, size="1024x1024")

    first = compressed_flow()
    again = compressed_flow()
    assert emulator.billed_requests == 1
    assert again.images[0].sha256 == first.images[0].sha256
    assert again.images[0].data == first.images[0].data and again.cached


def test_a_failing_async_task_keeps_the_image_it_paid_for(emulator, api_key) -> None:
    credentials = _creds(emulator, api_key)
    prompt = _prompt("async nested")

    @task(retries=0)
    async def make_then_fail(fail: bool) -> str:
        result = await agenerate_image(prompt, credentials, size="1024x640", quality="low")
        if fail:
            raise RuntimeError("the upload failed")
        return result.images[0].sha256

    @flow
    async def user_flow(fail: bool) -> str | None:
        state = await make_then_fail(fail, return_state=True)
        return await state.result() if state.is_completed() else None

    assert asyncio.run(user_flow(True)) is None
    assert emulator.billed_requests == 1
    assert asyncio.run(user_flow(False))
    assert emulator.billed_requests == 1
