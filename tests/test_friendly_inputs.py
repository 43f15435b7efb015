"""What the tasks accept: credentials by block name, one image in any form."""

import asyncio
import uuid

import pytest
from prefect import flow

from prefect_cometapi import CometAPICredentials, ValidationError
from prefect_cometapi.blocks import aresolve_credentials, resolve_credentials
from prefect_cometapi.tasks import (
    agenerate_image,
    edit_image,
    generate_image,
    upload_to_s3,
    upscale_image,
)


@pytest.fixture
def block_name(emulator, api_key) -> str:
    name = f"friendly-{uuid.uuid4().hex[:8]}"
    CometAPICredentials(api_key=api_key, base_url=emulator.base_url).save(name)
    return name


def test_one_image_in_every_form(emulator, block_name, tmp_path, s3_bucket, s3_server) -> None:
    word = uuid.uuid4().hex[:8]

    @flow
    def friendly():
        result = generate_image(f"friendly {word}", block_name, size="1024x1024", quality="low")
        path = tmp_path / "one.png"
        path.write_bytes(result.images[0].data)
        outputs = [
            upscale_image(result, size="1536x1536"),
            upscale_image(result.images[0], size="1536x1536"),
            upscale_image(result.images[0].data, size="1536x1536"),
            upscale_image(str(path), size="1536x1536"),
        ]
        stored = upload_to_s3(result, bucket=s3_bucket, endpoint_url=s3_server.endpoint_url)
        again = upload_to_s3(
            stored.uri, bucket=s3_bucket, prefix="copy/", endpoint_url=s3_server.endpoint_url
        )
        edited = edit_image(f"night {word}", result, credentials=block_name, size="1024x1024")
        return result, outputs, stored, again, edited

    result, outputs, stored, again, edited = friendly()
    assert len({o.sha256 for o in outputs}) == 1 and outputs[0].size == "1536x1536"
    assert stored.sha256 == again.sha256 == result.images[0].sha256
    assert edited.images and emulator.billed_requests == 2


def test_several_images_where_one_is_expected_names_images_i(emulator, block_name) -> None:
    @flow
    def two():
        result = generate_image(f"two {uuid.uuid4().hex[:8]}", block_name, n=2, size="1024x1024")
        return upscale_image.with_options(retries=0)(result, size="2048x2048")

    with pytest.raises(ValidationError, match=r"result\.images\[0\] \.\.\. result\.images\[1\]"):
        two()


def test_a_block_name_keys_the_cache_on_its_base_url_in_async_tasks_too(
    emulator, block_name
) -> None:
    from prefect_cometapi.caching import image_cache_key

    async def key_in_event_loop() -> str:
        return image_cache_key("generations", {"prompt": "p", "credentials": block_name})

    named = asyncio.run(key_in_event_loop())
    block = CometAPICredentials.load(block_name)
    assert named == image_cache_key("generations", {"prompt": "p", "credentials": block})
    assert named != image_cache_key("generations", {"prompt": "p", "credentials": None})


def test_an_async_task_given_a_block_name_shares_the_cache_with_the_block(
    emulator, block_name
) -> None:
    # The name is resolved inside an async task run: the key must still hold the block's base URL.
    prompt = f"named async {uuid.uuid4().hex[:8]}"

    @flow
    async def by_name():
        return await agenerate_image(prompt, block_name, size="1024x1024")

    @flow
    def by_block():
        return generate_image(prompt, CometAPICredentials.load(block_name), size="1024x1024")

    made = asyncio.run(by_name())
    again = by_block()
    assert emulator.billed_requests == 1
    assert again.images[0].sha256 == made.images[0].sha256


def test_a_block_name_is_loaded_once_per_flow_run(emulator, api_key, block_name) -> None:
    seen: list[CometAPICredentials] = []

    @flow
    async def load_it():
        seen.append(await aresolve_credentials(block_name))
        seen.append(resolve_credentials(block_name))

    asyncio.run(load_it())
    assert seen[0] is seen[1]
    CometAPICredentials(api_key=api_key, base_url=emulator.base_url, read_timeout=7).save(
        block_name, overwrite=True
    )
    asyncio.run(load_it())
    assert seen[2] is seen[3] and seen[2] is not seen[0]
    assert seen[2].read_timeout == 7  # the next flow run sees the edited block
