"""The image cache is not trusted on read: a tampered record is a cache miss, not a failure.

Cache records may be read from storage other workers (or an attacker) write: no record is ever
unpickled, whatever serializer it names, and a record that is not a sound image result is
replaced by a fresh request.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prefect import flow

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.caching.serializer import IMAGE_RESULT_SERIALIZER, StoredError
from prefect_cometapi.models import GeneratedImage, ImageResult
from prefect_cometapi.tasks import generate_image


def _result() -> ImageResult:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    data = buf.getvalue()
    image = GeneratedImage(
        data=data, format="png", width=8, height=8, sha256=hashlib.sha256(data).hexdigest(),
        model="gpt-image-2", prompt="p \u00e9", params={"size": "8x8"},
    )  # fmt: skip
    return ImageResult(images=[image, dataclasses.replace(image, index=1)], model="gpt-image-2",
                       params={"size": "8x8"}, usage=None, cost_usd=0.01)  # fmt: skip


class _Marker:
    """Unpickling this creates a file: the proof that a record was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_image_results_round_trip_without_pickle() -> None:
    result = _result()
    blob = IMAGE_RESULT_SERIALIZER.dumps(result)
    assert blob.isascii() and b"\n" not in blob
    assert IMAGE_RESULT_SERIALIZER.loads(blob) == result
    error = IMAGE_RESULT_SERIALIZER.loads(IMAGE_RESULT_SERIALIZER.dumps(KeyError("gone")))
    assert isinstance(error, StoredError) and error.error_type == "KeyError"


def test_a_record_whose_bytes_do_not_match_their_sha256_is_refused(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    result = _result()
    image = result.images[0]
    swapped = dataclasses.replace(result, images=[dataclasses.replace(image, data=b"x")])
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        IMAGE_RESULT_SERIALIZER.loads(IMAGE_RESULT_SERIALIZER.dumps(swapped))
    marker = tmp_path / "executed"
    for foreign in (
        base64.b64encode(pickle.dumps({"images": []})),  # an earlier version's pickled entry
        base64.b64encode(pickle.dumps(_Marker(marker))),
        pickle.dumps(_Marker(marker)),
        b"image1:" + base64.b64encode(pickle.dumps(_Marker(marker))),
        b"image1:" + base64.b64encode(b"\x00\x00\x00\x02{}"),
    ):
        with pytest.raises(ValueError, match="untrusted cached image result"):
            IMAGE_RESULT_SERIALIZER.loads(foreign)
    assert not marker.exists()
    assert "Ignoring a cached image result" in caplog.text


def _image_records(storage: Path) -> set[Path]:
    return {
        path
        for path in storage.iterdir()
        if path.is_file() and '"cometapi-image"' in path.read_text(errors="replace")
    }


def _cached_once(emulator: Any, api_key: str, label: str) -> tuple[Any, Path]:
    """A flow that generates one image, run once; its cache record's path."""
    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    prompt = f"{label} {uuid.uuid4().hex[:8]}"

    @flow
    def once() -> Any:
        return generate_image(prompt, credentials, size="1024x1024", quality="low")

    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    storage.mkdir(parents=True, exist_ok=True)
    before = _image_records(storage)
    once()
    assert len(emulator.requests) == 1
    records = sorted(_image_records(storage) - before)
    assert len(records) == 1, records
    return once, records[0]


def _stored_result(record: Path) -> ImageResult:
    return IMAGE_RESULT_SERIALIZER.loads(json.loads(record.read_text())["result"].encode())


def test_a_tampered_cache_entry_is_a_miss_and_is_replaced(emulator: Any, api_key: str) -> None:
    once, path = _cached_once(emulator, api_key, "a tampered cache entry")
    record = json.loads(path.read_text())
    cached = _stored_result(path)
    image = cached.images[0]
    tampered = dataclasses.replace(cached, images=[dataclasses.replace(image, data=b"not it")])
    record["result"] = IMAGE_RESULT_SERIALIZER.dumps(tampered).decode()
    path.write_text(json.dumps(record))

    again = once()
    assert len(emulator.requests) == 2, "a tampered entry was served (or failed the run)"
    assert hashlib.sha256(again.images[0].data).hexdigest() == again.images[0].sha256
    assert _stored_result(path).images[0].data == again.images[0].data


@pytest.mark.parametrize("slot", ["our serializer's slot", "a record naming pickle"])
def test_a_crafted_pickle_in_the_cache_is_never_executed(
    emulator: Any, api_key: str, tmp_path: Path, slot: str, caplog: pytest.LogCaptureFixture
) -> None:
    once, path = _cached_once(emulator, api_key, f"a crafted pickle in {slot}")
    marker = tmp_path / "executed"
    record = json.loads(path.read_text())
    payload = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
    if slot == "a record naming pickle":
        record["metadata"]["serializer"] = {"type": "pickle", "picklelib": "pickle"}
    record["result"] = payload
    path.write_text(json.dumps(record))

    again = once()
    assert not marker.exists(), "a pickle in the cache was executed"
    assert len(emulator.requests) == 2, "the run did not regenerate the image"
    assert isinstance(again, ImageResult)
    replaced = json.loads(path.read_text())
    assert replaced["metadata"]["serializer"] == {"type": "cometapi-image"}
    assert _stored_result(path).images[0].data == again.images[0].data
    assert "Ignoring a" in caplog.text


def test_a_crafted_record_in_the_delivery_ledger_is_not_executed_nor_delivered(
    tmp_path: Path,
) -> None:
    from prefect_cometapi.batching.ledger import find_delivered, ledger_store, record_delivery
    from prefect_cometapi.forms.options import S3Options
    from prefect_cometapi.reports.outcomes import DeliveredImage

    marker = tmp_path / "executed"
    key = f"cometapi-delivery-{uuid.uuid4().hex}"
    sha = hashlib.sha256(b"png").hexdigest()
    image = DeliveredImage(uri="s3://b/k", bucket="b", key="k", sha256=sha, size="1x1",
                           format="png", bytes=3)  # fmt: skip

    class _S3:
        def head_object(self, **kwargs: Any) -> dict[str, Any]:
            return {"ContentLength": 3, "Metadata": {"sha256": sha}}

    @flow
    def ledger() -> tuple[Any, Any, Any, Any]:
        s3 = S3Options(bucket="ledger-bucket", presign_expires=None)
        store = ledger_store()
        record_delivery(key, [image], store)
        found = find_delivered(key, s3, _S3(), store)
        path = Path(store.result_storage._resolve_path(key))
        written = json.loads(path.read_text())
        crafted = dict(written)
        crafted["metadata"] = {**written["metadata"], "serializer": {"type": "pickle"}}
        crafted["result"] = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
        path.write_text(json.dumps(crafted))
        refused = find_delivered(key, s3, _S3(), store)
        crafted["metadata"]["serializer"] = {"type": "json"}
        crafted["result"] = json.dumps({"__class__": "os.system", "data": "true"})
        path.write_text(json.dumps(crafted))
        as_json = find_delivered(key, s3, _S3(), store)
        return written["metadata"]["serializer"], found, refused, as_json

    serializer, found, refused, as_json = ledger()
    assert serializer == {"type": "cometapi-delivery"}
    assert [d.key for d in found] == ["k"]
    assert refused is None and as_json is None
    assert not marker.exists()


def test_separate_key_storage_naming_pickle_is_a_miss(
    emulator: Any, api_key: str, tmp_path: Path
) -> None:
    from prefect_cometapi.caching import image_cache_policy

    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    keys = tmp_path / "keys"
    step = generate_image.with_options(cache_policy=image_cache_policy(key_storage=keys))
    prompt = f"separate key storage {uuid.uuid4().hex[:8]}"

    @flow
    def once() -> Any:
        return step(prompt, credentials, size="1024x1024", quality="low")

    once()
    once()
    assert len(emulator.requests) == 1, "the key storage does not cache"
    (meta_path,) = [p for p in keys.iterdir() if p.is_file()]
    metadata = json.loads(meta_path.read_text())
    payload = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"]) / metadata["storage_key"]
    assert payload.read_bytes().startswith(b"image1:")
    marker = tmp_path / "executed"
    metadata["serializer"] = {"type": "pickle", "picklelib": "pickle"}
    meta_path.write_text(json.dumps(metadata))
    payload.write_bytes(base64.b64encode(pickle.dumps(_Marker(marker))))

    again = once()
    assert not marker.exists(), "a pickle in the cache was executed"
    assert len(emulator.requests) == 2 and isinstance(again, ImageResult)
    assert json.loads(meta_path.read_text())["serializer"] == {"type": "cometapi-image"}


def test_separate_key_storage_with_a_tampered_payload_is_a_miss(
    emulator: Any, api_key: str, tmp_path: Path
) -> None:
    from prefect_cometapi.caching import image_cache_policy

    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    keys = tmp_path / "keys"
    step = generate_image.with_options(cache_policy=image_cache_policy(key_storage=keys))
    prompt = f"separate key storage, tampered payload {uuid.uuid4().hex[:8]}"

    @flow
    def once() -> Any:
        return step(prompt, credentials, size="1024x1024", quality="low")

    once()
    (meta_path,) = [p for p in keys.iterdir() if p.is_file()]
    metadata = json.loads(meta_path.read_text())
    payload = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"]) / metadata["storage_key"]
    cached = IMAGE_RESULT_SERIALIZER.loads(payload.read_bytes())
    image = cached.images[0]
    tampered = dataclasses.replace(cached, images=[dataclasses.replace(image, data=b"not it")])
    payload.write_bytes(IMAGE_RESULT_SERIALIZER.dumps(tampered))

    again = once()
    assert len(emulator.requests) == 2, "a tampered payload was served (or failed the run)"
    replaced = IMAGE_RESULT_SERIALIZER.loads(payload.read_bytes())
    assert replaced.images[0].data == again.images[0].data


def test_a_crafted_pickle_in_an_s3_results_bucket_is_never_executed(
    emulator: Any, api_key: str, s3_server: Any, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """Shared storage as the fleet uses it: an S3Bucket block (on moto) holds the cache."""
    from prefect_aws import AwsCredentials, S3Bucket

    aws = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3_server.endpoint_url},
    )
    name = f"results-{uuid.uuid4().hex[:8]}"
    S3Bucket(bucket_name=s3_bucket, bucket_folder="results", credentials=aws).save(name)
    step = generate_image.with_options(result_storage=S3Bucket.load(name))
    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url)
    prompt = f"an S3 results bucket {uuid.uuid4().hex[:8]}"

    @flow
    def once() -> Any:
        return step(prompt, credentials, size="1024x1024", quality="low")

    def stored() -> tuple[str, dict[str, Any]]:
        listing = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="results/")["Contents"]
        (key,) = [o["Key"] for o in listing if "cometapi-generations" in o["Key"]]
        return key, json.loads(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())

    once()
    once()
    assert len(emulator.requests) == 1, "the S3 results bucket does not cache"
    key, record = stored()
    marker = tmp_path / "executed"
    record["metadata"]["serializer"] = {"type": "pickle", "picklelib": "pickle"}
    record["result"] = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(record).encode())

    once()
    assert not marker.exists(), "a pickle in the S3 results bucket was executed"
    assert len(emulator.requests) == 2
    assert stored()[1]["metadata"]["serializer"] == {"type": "cometapi-image"}
    once()
    assert len(emulator.requests) == 2, "the replaced entry is not a cache hit"
