"""The offline demo's S3 bucket, kept between demo runs like a real bucket.

moto's S3 server keeps its objects in memory, so every demo run would start with an empty bucket
and a re-run would upscale and upload every image again although the delivery ledger knows them.
The demo therefore keeps the bucket's objects on disk, under ``PREFECT_HOME``, when it ends
(:func:`keep_bucket`) and puts them back, bytes, content type and metadata unchanged, when its
S3 server starts (:func:`restore_bucket`). A re-run then finds each item's objects in S3 with
their recorded SHA-256, as a re-run against a real bucket would, and does nothing for them.

A kept object whose bytes no longer match its recorded SHA-256 is not put back (the item is
then delivered again), so what the bucket holds is always what was uploaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["keep_bucket", "kept_dir", "restore_bucket", "sha256_of_file"]

KEPT_DIR_NAME = "cometapi-demo-s3"
"""The folder under ``PREFECT_HOME`` holding the demo bucket's objects between runs."""


def kept_dir(prefect_home: Path, bucket: str) -> Path:
    """Where a demo bucket's objects are kept.

    Args:
        prefect_home: Prefect's home folder.
        bucket: The bucket.

    Returns:
        ``<home>/cometapi-demo-s3/<bucket>``.
    """
    return prefect_home / KEPT_DIR_NAME / bucket


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def sha256_of_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MB chunks.

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def restore_bucket(client: Any, bucket: str, folder: Path) -> int:
    """Put the kept objects back into a new, empty demo bucket.

    Args:
        client: A boto3 S3 client of the demo's S3 server.
        bucket: The bucket (it exists).
        folder: From :func:`kept_dir`.

    Returns:
        How many objects were put back.
    """
    restored = 0
    for meta_path in sorted(folder.glob("*.json")):
        data_path = meta_path.with_suffix(".object")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not data_path.is_file() or sha256_of_file(data_path) != meta["sha256"]:
                continue
            with data_path.open("rb") as body:
                client.put_object(
                    Bucket=bucket,
                    Key=meta["key"],
                    Body=body,
                    ContentType=meta["content_type"],
                    Metadata=meta["metadata"],
                )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged entry: that item is delivered again
        restored += 1
    return restored


def keep_bucket(client: Any, bucket: str, folder: Path) -> int:
    """Keep every object of the demo bucket on disk (only new or changed ones are copied).

    Args:
        client: A boto3 S3 client of the demo's S3 server.
        bucket: The bucket.
        folder: From :func:`kept_dir`.

    Returns:
        How many objects the folder holds now.
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            name = _name(key)
            wanted.add(name)
            head = client.head_object(Bucket=bucket, Key=key)
            metadata = dict(head.get("Metadata") or {})
            sha256 = metadata.get("sha256")
            meta_path = folder / f"{name}.json"
            if sha256 and meta_path.is_file():
                try:
                    if json.loads(meta_path.read_text(encoding="utf-8")).get("sha256") == sha256:
                        continue  # kept already
                except ValueError:
                    pass
            data_path = folder / f"{name}.object"
            digest = hashlib.sha256()
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            with body, data_path.open("wb") as handle:
                for chunk in body.iter_chunks(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
            meta = {
                "key": key,
                "sha256": digest.hexdigest(),
                "content_type": head.get("ContentType") or "application/octet-stream",
                "metadata": metadata,
            }
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
    for path in folder.iterdir():
        if path.stem not in wanted:
            path.unlink(missing_ok=True)
    return len(wanted)
