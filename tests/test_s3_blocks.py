"""prefect-aws blocks as upload targets, and the one S3 client per process and credentials.

An ``S3Bucket`` block as ``upload_to_s3``'s ``bucket`` (its bucket, credentials, endpoint and
folder), a saved one's name in ``S3Options`` (a run parameter holds names), errors that name
what they got, the client cache's identity rules, and ``aupload_to_s3`` running a gather's
uploads at once. Against moto's S3 server on 127.0.0.1 and the Prefect test server.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from typing import Any

import pydantic
import pytest
from prefect import flow
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters
from pydantic import SecretStr

from prefect_cometapi.errors import ValidationError
from prefect_cometapi.flows import S3Options
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.s3.client import shared_s3_client
from prefect_cometapi.tasks import aupload_to_s3, upload_to_s3


def make_image(seed: str) -> GeneratedImage:
    data = b"\x89PNG\r\n\x1a\n" + seed.encode() * 64
    return GeneratedImage(
        data=data,
        format="png",
        width=64,
        height=48,
        sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2",
        prompt=f"a test image {seed}",
        params={"quality": "low"},
    )


def aws(endpoint_url: str, key_id: str | None = None) -> AwsCredentials:
    return AwsCredentials(
        aws_access_key_id=key_id or f"BLK{uuid.uuid4().hex[:17].upper()}",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )


def test_an_s3bucket_block_as_bucket_uses_its_credentials_endpoint_and_folder(
    s3_server: Any, s3_client: Any, s3_bucket: str
) -> None:
    block = S3Bucket(
        bucket_name=s3_bucket, credentials=aws(s3_server.endpoint_url), bucket_folder="team"
    )
    image = make_image(uuid.uuid4().hex)

    @flow
    def store() -> Any:
        return upload_to_s3(image, bucket=block, prefix="banners/", key_template="{prefix}x.png")

    stored = store()
    # No endpoint_url given: the block's credentials carry it (moto); its folder comes first.
    assert stored.key == "team/banners/x.png" and stored.endpoint_url == s3_server.endpoint_url
    assert s3_client.get_object(Bucket=s3_bucket, Key=stored.key)["Body"].read() == image.data
    assert upload_to_s3.fn(image, block, prefix="banners/", key_template="{prefix}x.png").existed


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (AwsCredentials(aws_access_key_id="x", aws_secret_access_key="y"), "AwsCredentials"),
        (42, "int"),
        (None, "None"),
        ({"bucket_name": "b"}, "dict"),
    ],
)
def test_a_wrong_kind_of_bucket_is_refused_naming_what_it_got(value: Any, named: str) -> None:
    with pytest.raises(ValidationError) as info:
        upload_to_s3.fn(make_image("w"), bucket=value)
    assert info.value.param == "bucket" and named in str(info.value)
    assert "S3Bucket" in str(info.value)


def test_an_s3bucket_block_and_credentials_together_are_refused(s3_server: Any) -> None:
    block = S3Bucket(bucket_name="some-bucket", credentials=aws(s3_server.endpoint_url))
    with pytest.raises(ValidationError) as info:
        upload_to_s3.fn(make_image("c"), bucket=block, aws_credentials=aws("http://127.0.0.1:9"))
    assert info.value.param == "aws_credentials"


def test_s3options_take_a_saved_s3bucket_block_by_name(s3_server: Any) -> None:
    name = f"bucket-{uuid.uuid4().hex[:8]}"
    block = S3Bucket(bucket_name="some-bucket", credentials=aws(s3_server.endpoint_url))
    with pytest.raises(pydantic.ValidationError, match="not saved"):
        S3Options(bucket=block)
    block.save(name)
    options = S3Options(bucket=block)
    assert (options.bucket, options.bucket_block) == (None, name)
    assert S3Options(bucket_block=name) == options
    # What the run stores and another process reads back: names only, no credentials.
    assert S3Options.model_validate_json(options.model_dump_json()) == options
    assert "testing" not in options.model_dump_json()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "one of them"),
        ({"bucket": "b-1", "bucket_block": "x"}, "not both"),
        ({"bucket_block": "x", "aws_credentials_block": "y"}, "own credentials"),
        ({"bucket": AwsCredentials()}, "AwsCredentials"),
        # A run parameter cannot point a trusted block's credentials at another endpoint.
        ({"bucket_block": "x", "endpoint_url": "https://attacker.example"}, "s3.endpoint_url"),
    ],
)
def test_s3options_refuse_unclear_or_unsafe_targets(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        S3Options(**kwargs)


def test_one_client_per_endpoint_and_credentials(s3_server: Any) -> None:
    endpoint = s3_server.endpoint_url
    creds = aws(endpoint)
    name = f"creds-{uuid.uuid4().hex[:8]}"
    creds.save(name)
    client = shared_s3_client(endpoint, creds)
    # The same saved block loaded again (a new object, equal fields) is the same credentials.
    assert shared_s3_client(endpoint, AwsCredentials.load(name)) is client
    assert shared_s3_client(None, creds) is client  # the block's own endpoint
    assert shared_s3_client("http://127.0.0.1:9", creds) is not client  # another endpoint
    other = creds.model_copy(update={"aws_secret_access_key": SecretStr("changed")})
    assert shared_s3_client(endpoint, other) is not client  # an edited secret
    assert shared_s3_client(endpoint) is shared_s3_client(endpoint)  # boto3's chain


def test_a_gather_of_async_uploads_sends_them_at_once(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More uploads at once than the event loop's default executor has threads (cpu + 4)."""
    uploads = 24
    creds = aws(s3_server.endpoint_url)
    client = shared_s3_client(None, creds)
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow_put(**_: Any) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(1.5)
        with lock:
            state["now"] -= 1

    client.meta.events.register("before-send.s3.PutObject", slow_put)
    images = [make_image(f"{uuid.uuid4().hex}-{i}") for i in range(uploads)]

    @flow
    async def many() -> list[Any]:
        return list(
            await asyncio.gather(
                *(aupload_to_s3(i, bucket=s3_bucket, aws_credentials=creds) for i in images)
            )
        )

    try:
        stored = asyncio.run(many())
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", slow_put)
    assert len(stored) == uploads and not any(s.existed for s in stored)
    # The loop's default executor would allow 6 at once on 2 cores (the old twin's limit).
    assert state["peak"] >= 16, state
