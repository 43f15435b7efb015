"""The offline demo's bucket kept between runs: what one moto server held, the next one gets."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect_cometapi.demo.bucket import keep_bucket, kept_dir, restore_bucket


def _put(client: Any, bucket: str, key: str, body: bytes) -> None:
    client.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType="image/png",
        Metadata={"sha256": hashlib.sha256(body).hexdigest(), "item": key.split("/")[-1]},
    )


def test_kept_objects_come_back_unchanged_into_an_empty_bucket(
    s3_client: Any, make_s3_bucket: Any, tmp_path: Path
) -> None:
    first, second = make_s3_bucket(), make_s3_bucket()
    folder = kept_dir(tmp_path, "demo")
    objects = {"demo/2026-01-01/a-1.png": b"a" * 1000, "demo/2026-01-01/b-2.png": b"b" * 2000}
    for key, body in objects.items():
        _put(s3_client, first, key, body)

    assert keep_bucket(s3_client, first, folder) == 2
    assert restore_bucket(s3_client, second, folder) == 2

    for key, body in objects.items():
        got = s3_client.get_object(Bucket=second, Key=key)
        assert got["Body"].read() == body
        assert got["ContentType"] == "image/png"
        assert got["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert got["Metadata"]["item"] == key.split("/")[-1]


def test_keeping_again_mirrors_the_bucket_and_a_damaged_copy_is_not_put_back(
    s3_client: Any, make_s3_bucket: Any, tmp_path: Path
) -> None:
    bucket, fresh = make_s3_bucket(), make_s3_bucket()
    folder = kept_dir(tmp_path, "demo")
    _put(s3_client, bucket, "gone.png", b"x" * 10)
    _put(s3_client, bucket, "stays.png", b"y" * 10)
    keep_bucket(s3_client, bucket, folder)
    s3_client.delete_object(Bucket=bucket, Key="gone.png")
    _put(s3_client, bucket, "new.png", b"z" * 10)

    assert keep_bucket(s3_client, bucket, folder) == 2
    assert len(list(folder.glob("*.object"))) == 2
    # Someone changes a kept file: its object is not put back (the item is delivered again).
    damaged = next(p for p in folder.glob("*.object") if p.read_bytes() == b"z" * 10)
    damaged.write_bytes(b"not the uploaded image")

    assert restore_bucket(s3_client, fresh, folder) == 1
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=fresh).get("Contents", [])]
    assert keys == ["stays.png"]
