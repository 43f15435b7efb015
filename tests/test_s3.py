"""upload_to_s3 and the functions under it, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import pickle
from datetime import datetime, timezone
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from PIL import Image
from prefect import flow
from prefect.states import Failed

from prefect_cometapi.errors import (
    S3AccessDeniedError,
    S3BucketNotFoundError,
    S3UploadError,
    ValidationError,
    is_retryable,
    retry_on_transient,
)
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.s3 import (
    DEFAULT_KEY_TEMPLATE,
    make_s3_client,
    render_key,
    s3_config,
    upload_image,
    validate_bucket_name,
)
from prefect_cometapi.s3 import client as s3_client_mod
from prefect_cometapi.tasks import s3 as s3mod
from prefect_cometapi.tasks.s3 import upload_to_s3

MiB = 1024 * 1024


def png_bytes(width: int = 64, height: int = 48, *, noise: bool = False, seed: int = 0) -> bytes:
    """A real PNG; ``noise`` makes it incompressible (about width*height*3 bytes)."""
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), (200, 30 + seed % 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def make_image(
    data: bytes | None = None,
    *,
    prompt: str = "a red fox in the snow",
    width: int = 64,
    height: int = 48,
    seed: int = 0,
) -> GeneratedImage:
    data = data if data is not None else png_bytes(width, height, seed=seed)
    return GeneratedImage(
        data=data,
        format="png",
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2",
        prompt=prompt,
        params={"quality": "low", "size": f"{width}x{height}"},
    )


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class RequestCounter:
    """Counts every HTTP request a boto3 client is about to send (by operation)."""

    def __init__(self, client: Any) -> None:
        self.ops: list[str] = []
        client.meta.events.register("before-send.s3", self._count)

    def _count(self, request: Any, **kwargs: Any) -> None:
        self.ops.append(kwargs["event_name"].rsplit(".", 1)[-1])


def use_client_factory(monkeypatch: pytest.MonkeyPatch, factory: Any) -> None:
    """Make the process's client cache empty for this test and build its clients with
    ``factory`` (the one cache every upload gets its client from)."""
    from collections import OrderedDict

    monkeypatch.setattr(s3_client_mod, "_clients", OrderedDict())
    monkeypatch.setattr(s3_client_mod, "make_s3_client", factory)


@pytest.fixture
def our_client(s3_server: Any) -> Any:
    """A client built by make_s3_client, pointed at moto."""
    return make_s3_client(endpoint_url=s3_server.endpoint_url)


# ---------------------------------------------------------------- upload basics


def test_upload_stores_bytes_content_type_checksum_and_metadata(
    our_client: Any, s3_client: Any, s3_bucket: str
) -> None:
    image = make_image(prompt="a lighthouse at dusk, oil painting")
    result = upload_image(image, s3_bucket, "banners/one.png", s3_client=our_client)

    assert result.uri == f"s3://{s3_bucket}/banners/one.png"
    assert (result.size, result.sha256, result.existed) == (len(image.data), image.sha256, False)
    assert result.content_type == "image/png" and result.etag and not result.multipart

    got = s3_client.get_object(Bucket=s3_bucket, Key="banners/one.png")
    assert got["Body"].read() == image.data
    assert got["ContentType"] == "image/png"
    head = s3_client.head_object(Bucket=s3_bucket, Key="banners/one.png", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64_sha256(image.data)
    attrs = s3_client.get_object_attributes(
        Bucket=s3_bucket, Key="banners/one.png", ObjectAttributes=["Checksum", "ObjectSize"]
    )
    assert attrs["Checksum"]["ChecksumSHA256"] == b64_sha256(image.data)
    assert attrs["ObjectSize"] == len(image.data)
    assert head["Metadata"] == {
        "model": "gpt-image-2",
        "size": "64x48",
        "quality": "low",
        "sha256": image.sha256,
        "prompt": "a lighthouse at dusk, oil painting",
    }


def test_metadata_is_ascii_and_short_for_non_ascii_prompt(
    our_client: Any, s3_client: Any, s3_bucket: str
) -> None:
    prompt = "Café crème brûlée — 東京の桜 🌸, Ærø\nnext line\t" * 20
    image = make_image(prompt=prompt)
    upload_image(image, s3_bucket, "x.png", s3_client=our_client)
    head = s3_client.head_object(Bucket=s3_bucket, Key="x.png")
    raw = head["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-prompt"]
    meta_prompt = head["Metadata"]["prompt"]
    assert raw == meta_prompt
    assert meta_prompt.isascii() and meta_prompt.isprintable()
    assert len(meta_prompt) <= 200
    assert meta_prompt.startswith("Cafe creme brulee")
    assert meta_prompt.endswith("...")
    for value in head["Metadata"].values():
        assert value.isascii()


def test_metadata_never_carries_secrets(our_client: Any, s3_client: Any, s3_bucket: str) -> None:
    image = make_image(prompt="poster, Authorization: Bearer sk-abcdef1234567890 oops")
    upload_image(
        image,
        s3_bucket,
        "s.png",
        s3_client=our_client,
        metadata_extra={"item-id": "sku-42", "note": "sk-zzzzzzzzzzzzzzzz"},
    )
    meta = s3_client.head_object(Bucket=s3_bucket, Key="s.png")["Metadata"]
    assert set(meta) == {"model", "size", "quality", "sha256", "prompt", "item-id", "note"}
    assert meta["item-id"] == "sku-42"
    assert "abcdef1234567890" not in "".join(meta.values())
    assert "zzzzzzzzzzzzzzzz" not in "".join(meta.values())


def test_same_image_twice_is_one_key_and_one_object(
    s3_server: Any, s3_client: Any, s3_bucket: str
) -> None:
    image = make_image()
    first = upload_to_s3.fn(image, s3_bucket, endpoint_url=s3_server.endpoint_url)
    second = upload_to_s3.fn(image, s3_bucket, endpoint_url=s3_server.endpoint_url)

    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert first.key == second.key == f"{today}/{image.sha256}.png"
    assert (first.existed, second.existed) == (False, True)
    assert second.etag == first.etag and second.size == first.size
    listing = s3_client.list_objects_v2(Bucket=s3_bucket)
    assert [obj["Key"] for obj in listing["Contents"]] == [first.key]


def test_existing_identical_object_is_not_uploaded_again(our_client: Any, s3_bucket: str) -> None:
    image = make_image()
    upload_image(image, s3_bucket, "k.png", s3_client=our_client)
    counter = RequestCounter(our_client)
    again = upload_image(image, s3_bucket, "k.png", s3_client=our_client)
    assert again.existed
    assert counter.ops == ["HeadObject"]


def test_different_image_at_same_key_is_overwritten(
    our_client: Any, s3_client: Any, s3_bucket: str
) -> None:
    old, new = make_image(seed=1), make_image(seed=2)
    assert old.sha256 != new.sha256
    upload_image(old, s3_bucket, "latest.png", s3_client=our_client)
    result = upload_image(new, s3_bucket, "latest.png", s3_client=our_client)
    assert not result.existed
    body = s3_client.get_object(Bucket=s3_bucket, Key="latest.png")["Body"].read()
    assert body == new.data


def test_presigned_url_downloads_the_same_bytes(s3_server: Any, s3_bucket: str) -> None:
    image = make_image()
    result = upload_to_s3.fn(
        image, s3_bucket, endpoint_url=s3_server.endpoint_url, presign_expires=300
    )
    assert result.presigned_url and result.presigned_url.startswith(s3_server.endpoint_url)
    assert "X-Amz-Signature=" in result.presigned_url  # SigV4
    response = httpx.get(result.presigned_url)
    assert response.status_code == 200
    assert response.content == image.data


def test_presign_expiry_is_validated(our_client: Any, s3_bucket: str) -> None:
    for bad in (0, -5, 8 * 24 * 3600, True, "300"):
        with pytest.raises(ValidationError) as info:
            upload_image(
                make_image(), s3_bucket, "p.png", s3_client=our_client, presign_expires=bad
            )
        assert info.value.param == "presign_expires"


# ---------------------------------------------------------------- errors


def test_missing_bucket_names_the_bucket_and_is_not_retryable(our_client: Any) -> None:
    with pytest.raises(S3BucketNotFoundError) as info:
        upload_image(make_image(), "no-such-bucket-here-42", "a.png", s3_client=our_client)
    message = str(info.value)
    assert "'no-such-bucket-here-42'" in message and "Create it" in message
    assert info.value.bucket == "no-such-bucket-here-42"
    assert not is_retryable(info.value)
    assert not retry_on_transient(None, None, Failed(data=info.value))


def test_access_denied_names_bucket_and_credentials() -> None:
    client = boto3.client("s3", region_name="us-east-1", config=s3_config())
    stubber = Stubber(client)
    stubber.add_client_error("head_object", "403", http_status_code=403)
    stubber.add_client_error("put_object", "AccessDenied", "Access Denied", http_status_code=403)
    with stubber, pytest.raises(S3AccessDeniedError) as info:
        upload_image(make_image(), "locked-bucket", "a.png", s3_client=client)
    message = str(info.value)
    assert "locked-bucket" in message and "credentials" in message and "s3:PutObject" in message
    assert not is_retryable(info.value)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("InvalidRequest", 400, False),
        ("EntityTooLarge", 400, False),
    ],
)
def test_s3_error_classification(code: str, status: int, retryable: bool) -> None:
    client = boto3.client("s3", region_name="us-east-1", config=s3_config())
    stubber = Stubber(client)
    stubber.add_client_error("head_object", "404", http_status_code=404)
    stubber.add_client_error("put_object", code, "boom", http_status_code=status)
    with stubber, pytest.raises(S3UploadError) as info:
        upload_image(make_image(), "some-bucket", "a.png", s3_client=client)
    assert is_retryable(info.value) is retryable
    assert retry_on_transient(None, None, Failed(data=info.value)) is retryable
    assert code in str(info.value) and "some-bucket" in str(info.value)


def test_errors_survive_pickling() -> None:
    for err in (
        S3BucketNotFoundError("b-1", key="k"),
        S3AccessDeniedError("b-2", key="k"),
        S3UploadError("x", bucket="b-3", code="SlowDown", retryable=True),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert (back.bucket, back.code, back.retryable, str(back)) == (
            err.bucket,
            err.code,
            err.retryable,
            str(err),
        )


# ---------------------------------------------------------------- validation before network


BAD_BUCKETS = [
    "ab",
    "a" * 64,
    "My-Bucket",
    "my_bucket",
    "-bucket",
    "bucket-",
    "my..bucket",
    "192.168.1.10",
    "s3://bucket",
    "bucket/folder",
    "xn--bucket",
    "bucket-s3alias",
    "",
]


@pytest.mark.parametrize("bucket", BAD_BUCKETS)
def test_bad_bucket_names_are_refused_before_any_request(
    bucket: str, our_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = RequestCounter(our_client)
    with pytest.raises(ValidationError) as info:
        upload_image(make_image(), bucket, "a.png", s3_client=our_client)
    assert info.value.param == "bucket"
    use_client_factory(monkeypatch, lambda **kw: our_client)
    with pytest.raises(ValidationError):
        upload_to_s3.fn(make_image(), bucket)
    assert counter.ops == []


@pytest.mark.parametrize("bucket", ["abc", "my-bucket.images", "a" * 63, "b-1.c-2"])
def test_good_bucket_names_pass(bucket: str) -> None:
    assert validate_bucket_name(bucket) == bucket


ESCAPING = [
    ({"key_template": "../{sha256}.png"}, "key_template"),
    ({"key_template": "{prefix}../../etc/{sha256}"}, "key_template"),
    ({"key_template": "/abs/{sha256}.{ext}"}, "key_template"),
    ({"key_template": "a\\b/{sha256}.{ext}"}, "key_template"),
    ({"key_template": "a//{sha256}.{ext}"}, "key_template"),
    ({"key_template": "{date}/./{sha256}"}, "key_template"),
    ({"key_template": "{date}/{sha256}/"}, "key_template"),
    ({"key_template": "{date}/{sha256}\n.png"}, "key_template"),
    ({"key_template": "{unknown}.png"}, "key_template"),
    ({"key_template": "{sha256.__class__}"}, "key_template"),
    ({"key_template": "{0}.png"}, "key_template"),
    ({"key_template": "{sha256"}, "key_template"),
    ({"key_template": "{sha256:{width}}"}, "key_template"),
    ({"key_template": "x" * 1100 + "{sha256}"}, "key_template"),
    ({"key_template": ""}, "key_template"),
    ({"prefix": "../up"}, "prefix"),
    ({"prefix": "/root"}, "prefix"),
    ({"prefix": "a//b"}, "prefix"),
    ({"prefix": "a\\b"}, "prefix"),
    ({"prefix": "ok/\x00"}, "prefix"),
    ({"key_vars": {"item": "../../../etc/passwd"}, "key_template": "{item}"}, "key_template"),
    ({"key_vars": {"item": "a/../../b"}, "key_template": "{prefix}{item}.png"}, "key_template"),
    ({"key_vars": {"prefix": "evil/"}}, "key_vars"),
]


@pytest.mark.parametrize(("kwargs", "param"), ESCAPING)
def test_escaping_templates_are_refused_before_any_request(
    kwargs: dict[str, Any], param: str, our_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = RequestCounter(our_client)
    use_client_factory(monkeypatch, lambda **kw: our_client)
    kwargs = {"prefix": "safe/", **kwargs}
    with pytest.raises(ValidationError) as info:
        upload_to_s3.fn(make_image(), "some-bucket", **kwargs)
    assert info.value.param == param
    assert counter.ops == []


@pytest.mark.parametrize(
    "template", ["{item:.1}/{sha8}.{ext}", "{index:03d}-{sha8}.{ext}", "{slug!r}-{sha8}.{ext}",
                 "{sha8:>4}.{ext}", "{sha256!s:.2}.{ext}"],
)  # fmt: skip
def test_key_templates_refuse_format_specs_and_conversions(template: str) -> None:
    with pytest.raises(ValidationError) as info:
        render_key(template, make_image(), item="a")
    assert info.value.param == "key_template"
    assert "format specs and conversions are not allowed" in info.value.rule


def test_render_key_placeholders_and_prefix() -> None:
    image = make_image(width=64, height=48)
    when = datetime(2026, 3, 4, 23, 30, tzinfo=timezone.utc)
    assert (
        render_key(DEFAULT_KEY_TEMPLATE, image, prefix="banners", now=when)
        == f"banners/2026-03-04/{image.sha256}.png"
    )
    key = render_key(
        "{prefix}{year}/{month}/{day}/{model}_{size}_{quality}_{index}_{sha8}_{item_id}.{ext}",
        image,
        prefix="out/",
        now=when,
        item_id="sku-42",
    )
    assert key == f"out/2026/03/04/gpt-image-2_64x48_low_0_{image.sha256[:8]}_sku-42.png"
    # A template without {prefix} still lands inside the prefix.
    assert render_key("{slug}.{ext}", image, prefix="p", now=when) == "p/a-red-fox-in-the-snow.png"
    # A fixed date (e.g. the scheduled time) keeps keys stable across days.
    assert render_key(DEFAULT_KEY_TEMPLATE, image, date="2025-01-01").startswith("2025-01-01/")
    jpeg = GeneratedImage(
        data=b"x", format="jpeg", width=1, height=1, sha256="ab" * 32, model="m", prompt="p"
    )
    assert render_key("{sha8}.{ext}", jpeg) == "abababab.jpg"


def test_default_key_uses_utc_date_and_sha256() -> None:
    image = make_image()
    # 23:30 in UTC-5 is already the next day in UTC.
    from datetime import timedelta

    local = datetime(2026, 3, 4, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert render_key(DEFAULT_KEY_TEMPLATE, image, now=local) == f"2026-03-05/{image.sha256}.png"


# ---------------------------------------------------------------- multipart


def test_multipart_upload_gives_a_correct_object(
    our_client: Any, s3_client: Any, s3_bucket: str
) -> None:
    data = png_bytes(1400, 1400, noise=True)  # ~5.9 MB: two parts of 5 MiB + rest
    assert len(data) > 5 * MiB
    image = make_image(data, width=1400, height=1400)
    counter = RequestCounter(our_client)
    result = upload_image(
        image,
        s3_bucket,
        "big.png",
        s3_client=our_client,
        multipart_threshold=MiB,
        part_size=5 * MiB,
    )
    assert result.multipart and not result.existed
    assert counter.ops.count("UploadPart") == 2 and "PutObject" not in counter.ops

    got = s3_client.get_object(Bucket=s3_bucket, Key="big.png")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/png"
    assert got["Metadata"]["sha256"] == image.sha256
    attrs = s3_client.get_object_attributes(
        Bucket=s3_bucket, Key="big.png", ObjectAttributes=["Checksum", "ObjectSize"]
    )
    assert attrs["ObjectSize"] == len(data)
    assert got["ETag"].strip('"').endswith("-2")  # a multipart object of two parts
    # S3's multipart checksum: SHA-256 of the parts' SHA-256 digests ("composite").
    digests = b"".join(
        hashlib.sha256(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)
    )
    composite = base64.b64encode(hashlib.sha256(digests).digest()).decode()
    assert attrs["Checksum"]["ChecksumSHA256"].split("-")[0] == composite
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")

    # Re-running recognises the object by its sha256 metadata and sends no part again.
    counter.ops.clear()
    again = upload_image(
        image,
        s3_bucket,
        "big.png",
        s3_client=our_client,
        multipart_threshold=MiB,
        part_size=5 * MiB,
    )
    assert again.existed and counter.ops == ["HeadObject"]


@pytest.mark.parametrize("failure", ["unexpected", "connection"])
def test_failed_multipart_upload_leaves_nothing_behind(
    failure: str, s3_server: Any, s3_client: Any, s3_bucket: str
) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        config=s3_config(retries={"mode": "standard", "total_max_attempts": 1}),  # fail fast
    )
    calls: list[str] = []

    def fail_second_part(request: Any, **kwargs: Any) -> None:
        calls.append(request.url)
        if "partNumber=2" in request.url:
            if failure == "connection":
                raise EndpointConnectionError(endpoint_url=request.url)
            raise RuntimeError("network cable unplugged")

    client.meta.events.register("before-send.s3.UploadPart", fail_second_part)
    data = png_bytes(1400, 1400, noise=True)
    image = make_image(data, width=1400, height=1400)
    expected = S3UploadError if failure == "connection" else RuntimeError
    with pytest.raises(expected) as info:
        upload_image(
            image,
            s3_bucket,
            "big.png",
            s3_client=client,
            multipart_threshold=MiB,
            part_size=5 * MiB,
        )
    assert len(calls) == 2  # part 1 went up, part 2 failed
    if failure == "connection":
        assert is_retryable(info.value)

    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


# ---------------------------------------------------------------- retries


def test_client_retries_a_short_outage_by_itself(
    our_client: Any, s3_client: Any, s3_bucket: str
) -> None:
    sent: list[int] = []

    def drop_first(request: Any, **kwargs: Any) -> None:
        sent.append(1)
        if len(sent) == 1:
            raise EndpointConnectionError(endpoint_url=request.url)

    our_client.meta.events.register("before-send.s3.PutObject", drop_first)
    image = make_image()
    result = upload_image(image, s3_bucket, "r.png", s3_client=our_client)
    assert len(sent) == 2 and not result.existed
    assert s3_client.get_object(Bucket=s3_bucket, Key="r.png")["Body"].read() == image.data


def _flaky_client_factory(
    monkeypatch: pytest.MonkeyPatch, failures: int
) -> tuple[list[str], list[str]]:
    """Make upload_to_s3 build clients whose first ``failures`` PutObject sends fail."""
    real = s3_client_mod.make_s3_client
    sent: list[str] = []
    built: list[str] = []

    def factory(**kwargs: Any) -> Any:
        client = real(**kwargs)
        built.append(kwargs.get("endpoint_url") or "")

        def flaky(request: Any, **_: Any) -> None:
            sent.append(request.url)
            if len(sent) <= failures:
                raise EndpointConnectionError(endpoint_url=request.url)

        client.meta.events.register("before-send.s3.PutObject", flaky)
        return client

    use_client_factory(monkeypatch, factory)
    monkeypatch.setattr(s3_client_mod, "S3_MAX_ATTEMPTS", 1)  # one botocore attempt a try
    return sent, built


def test_task_retries_a_transient_failure_inside_a_flow(
    s3_server: Any, s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, built = _flaky_client_factory(monkeypatch, failures=1)
    image = make_image()

    @flow
    def store(img: GeneratedImage) -> Any:
        return upload_to_s3.with_options(retry_delay_seconds=0)(
            img, s3_bucket, prefix="runs", endpoint_url=s3_server.endpoint_url
        )

    result = store(image)
    # Two task attempts, one PutObject each, one client for both (built once per process).
    assert len(sent) == 2 and len(built) == 1
    assert not result.existed and result.key.startswith("runs/")
    assert s3_client.get_object(Bucket=s3_bucket, Key=result.key)["Body"].read() == image.data


def test_task_gives_up_after_its_retries(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, _ = _flaky_client_factory(monkeypatch, failures=100)
    state = upload_to_s3.with_options(retry_delay_seconds=0)(
        make_image(), s3_bucket, endpoint_url=s3_server.endpoint_url, return_state=True
    )
    assert state.is_failed()
    assert len(sent) == s3mod.UPLOAD_TASK_RETRIES + 1
    with pytest.raises(S3UploadError):
        state.result()


def test_task_does_not_retry_a_missing_bucket(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, built = _flaky_client_factory(monkeypatch, failures=0)
    state = upload_to_s3.with_options(retry_delay_seconds=0)(
        make_image(),
        "bucket-that-is-not-there",
        endpoint_url=s3_server.endpoint_url,
        return_state=True,
    )
    assert state.is_failed()
    assert len(built) == 1  # one attempt only
    with pytest.raises(S3BucketNotFoundError):
        state.result()


# ---------------------------------------------------------------- clients


class FakeClientParameters:
    def __init__(self, **params: Any) -> None:
        self.params = params

    def get_params_override(self) -> dict[str, Any]:
        return dict(self.params)


class FakeAwsCredentials:
    """Duck-typed like prefect_aws.AwsCredentials (get_boto3_session + aws_client_parameters)."""

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.aws_client_parameters = FakeClientParameters(endpoint_url=endpoint_url)
        self.sessions = 0

    def get_boto3_session(self) -> boto3.session.Session:
        self.sessions += 1
        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )


def test_credentials_block_is_used_with_its_endpoint(s3_server: Any, s3_bucket: str) -> None:
    creds = FakeAwsCredentials(endpoint_url=s3_server.endpoint_url)
    result = upload_to_s3.fn(make_image(), s3_bucket, aws_credentials=creds)
    assert creds.sessions == 1 and result.endpoint_url == s3_server.endpoint_url
    client = make_s3_client(aws_credentials=creds)
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert client.meta.config.retries["total_max_attempts"] == s3_client_mod.S3_MAX_ATTEMPTS
    # An explicit endpoint_url wins over the block's.
    other = make_s3_client(endpoint_url="http://127.0.0.1:9", aws_credentials=creds)
    assert other.meta.endpoint_url == "http://127.0.0.1:9"


def test_make_s3_client_honours_env_endpoint_and_refuses_junk(
    s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    client = make_s3_client()
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert s3_bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    config = client.meta.config
    assert config.connect_timeout == s3_client_mod.S3_CONNECT_TIMEOUT
    assert config.retries["mode"] == "standard"
    with pytest.raises(TypeError):
        make_s3_client(aws_credentials="my-block-name")


@pytest.mark.parametrize(
    "char", ["\u202e", "\u0085", "\u200b", "\ufeff", "\u2028", "\u00a0", "\uff0e", "\u2024",
             "\uff0f", "\u2215", "\ue000", "\u009b"],
)  # fmt: skip
def test_keys_and_prefixes_refuse_hidden_and_look_alike_characters(char: str) -> None:
    from prefect_cometapi.s3.keys import normalize_prefix, validate_key

    with pytest.raises(ValidationError, match=f"U\\+{ord(char):04X}") as info:
        validate_key(f"banners/item{char}gnp.exe.png")
    assert info.value.param == "key"
    with pytest.raises(ValidationError, match="look-alike") as info:
        normalize_prefix(f"team{char}a/")
    assert info.value.param == "prefix"


def test_keys_keep_letters_of_every_script_and_plain_spaces() -> None:
    from prefect_cometapi.s3.keys import validate_key

    for key in ["banners/café façade.png", "画像/日本.png", "ﬁle/Ａ.png", "x/🙂.png"]:
        assert validate_key(key) == key
