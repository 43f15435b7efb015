"""The delivery ledger: which items a batch already put in S3, checked before any work.

After ``process_item`` delivers an item it writes a small record (the S3 keys, checksums and
sizes of its images, no bytes) next to the image cache, under a key made of everything that
decides what lands where: the image request (its cache key, so the service that makes the image
included), the upscale options, the bucket,
endpoint, prefix and key template, the item id and the run date when the template uses it.

A re-run of the same batch checks every item first (:func:`check_deliveries`, a few at a time
ahead of the batch's window): it reads the record and asks S3 (``HEAD`` with
``ChecksumMode=ENABLED``) whether each object is still there with the recorded SHA-256. If so
the item is done without a task run: no cached image read or decoded, no upscale, no upload.
Anything else (no record, an object gone or changed, S3 unreachable) falls back to the full
path, where the image cache still keeps the request from being paid again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from prefect.serializers import Serializer
from pydantic import BaseModel, Field

from prefect_cometapi.batching.delivery import s3_target_of
from prefect_cometapi.batching.requesting import image_result_store
from prefect_cometapi.caching.keys import image_cache_key
from prefect_cometapi.caching.store import vetted_store
from prefect_cometapi.forms.options import ImageOptions, S3Options, UpscaleOptions
from prefect_cometapi.reports.outcomes import DeliveredImage
from prefect_cometapi.s3.upload import presign

__all__ = [
    "check_deliveries",
    "delivery_key",
    "find_delivered",
    "json_record_store",
    "ledger_store",
    "record_delivery",
]

DELIVERY_EXPIRATION = timedelta(days=30)
"""How long a delivery record is trusted (as long as the image cache keeps the image)."""
LEDGER_VERSION = "v1"
_DATE_FIELDS = frozenset({"date", "year", "month", "day"})


class DeliveryRecord(BaseModel):
    """What one item's delivery stored (no bytes, no presigned links).

    Attributes:
        images: The stored objects, in the order of the result's images.
    """

    images: list[DeliveredImage]


class DeliveryRecordSerializer(Serializer):  # type: ignore[type-arg]
    """Delivery records as plain JSON, read back only as a :class:`DeliveryRecord`.

    Prefect's ``json`` serializer rebuilds any class a record names (``"__class__"``), importing
    its module: records in shared storage must not choose what is imported or built.

    Attributes:
        type: ``cometapi-delivery``, the key Prefect stores in each record.
    """

    type: str = Field(default="cometapi-delivery", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        """Encode a delivery record.

        Args:
            obj: A :class:`DeliveryRecord`.

        Returns:
            Its JSON.
        """
        return DeliveryRecord.model_validate(obj).model_dump_json().encode()

    def loads(self, blob: bytes) -> DeliveryRecord:
        """Decode what :meth:`dumps` wrote.

        Args:
            blob: The stored bytes.

        Returns:
            The record.

        Raises:
            ValueError: Not a delivery record.
        """
        return DeliveryRecord.model_validate_json(blob)


def delivery_key(
    prompt: str,
    image: ImageOptions,
    upscale: UpscaleOptions,
    s3: S3Options,
    item_id: str,
    run_time: datetime | None,
    *,
    credentials: Any,
) -> str:
    """The ledger key of one item's delivery.

    Args:
        prompt: The rendered prompt.
        image: The request options.
        upscale: The upscale options.
        s3: Where the images go.
        item_id: The item id (the ``{item}`` placeholder).
        run_time: The run's time (only its date counts, and only when the key template uses it).
        credentials: The API credentials (a block, a saved block's name or ``None``): the
            service that makes the image is part of the key, as in the image cache's, so an
            item delivered from an emulator's or a test server's image never counts as
            delivered for a run against another service.

    Returns:
        A key for the result store (``cometapi-delivery-<sha256>``).
    """
    fields = {f for _, f, _, _ in string.Formatter().parse(s3.key_template) if f}
    day = run_time.strftime("%Y-%m-%d") if run_time and fields & _DATE_FIELDS else None
    material = {
        "v": LEDGER_VERSION,
        "request": image_cache_key(
            "generations",
            {"prompt": prompt, **image.request_kwargs(), "credentials": credentials},
        ),
        "upscale": upscale.model_dump(mode="json") if upscale.enabled else None,
        "bucket": s3.bucket,
        **({"bucket_block": s3.bucket_block} if s3.bucket_block else {}),
        "endpoint": s3.endpoint_url or None,
        "prefix": s3.prefix,
        "key_template": s3.key_template,
        "item": item_id,
        "day": day,
    }
    blob = json.dumps(material, sort_keys=True).encode()
    return f"cometapi-delivery-{hashlib.sha256(blob).hexdigest()}"


def json_record_store(serializer: Serializer) -> Any:  # type: ignore[type-arg]
    """The image task's result store (so with the image cache, shared storage included),
    without its locks or in-memory cache, reading and writing only ``serializer``'s records:
    a stored record that names any other serializer is refused unread
    (:func:`~prefect_cometapi.caching.store.vetted_store`).

    Call it inside a flow or task run (it follows the run's result settings).

    Args:
        serializer: A JSON serializer of one record type.

    Returns:
        A Prefect ``ResultStore``.
    """
    store = image_result_store()
    return vetted_store(
        store.model_copy(
            update={
                "lock_manager": None,
                "cache_result_in_memory": False,
                "serializer": serializer,
            }
        )
    )


def ledger_store() -> Any:
    """Where delivery records live: :func:`json_record_store` of
    :class:`DeliveryRecordSerializer` (a record of any other kind is not delivered).

    Returns:
        A Prefect ``ResultStore``.
    """
    return json_record_store(DeliveryRecordSerializer())


def record_delivery(key: str, delivered: list[DeliveredImage], store: Any = None) -> None:
    """Write an item's delivery record (best effort: a failure only costs a re-check later).

    Args:
        key: From :func:`delivery_key`.
        delivered: What was stored.
        store: The store (default :func:`ledger_store`).
    """
    from prefect.types._datetime import now

    record = DeliveryRecord(images=[d.model_copy(update={"url": None}) for d in delivered])
    try:
        (store or ledger_store()).write(
            record, key=key, expiration=now("UTC") + DELIVERY_EXPIRATION
        )
    except Exception as exc:  # noqa: BLE001 - the delivery itself succeeded
        _debug(f"could not write delivery record {key}: {type(exc).__name__}: {exc}")


def _read_record(key: str, store: Any) -> DeliveryRecord | None:
    from prefect.types._datetime import now

    try:
        stored = store.read(key)
    except Exception:  # noqa: BLE001 - no record (or unreadable): not delivered as far as we know
        return None
    expiration = stored.metadata.expiration
    if expiration is not None and expiration <= now("UTC"):
        return None
    record = stored.result
    return record if isinstance(record, DeliveryRecord) and record.images else None


def _holds(head: dict[str, Any], image: DeliveredImage) -> bool:
    """Whether a HEAD answer is the recorded object (same SHA-256, same length)."""
    if int(head.get("ContentLength") or -1) != image.bytes:
        return False
    meta = {str(k).lower(): v for k, v in (head.get("Metadata") or {}).items()}
    if meta.get("sha256") == image.sha256:
        return True
    checksum = head.get("ChecksumSHA256")
    expected = base64.b64encode(bytes.fromhex(image.sha256)).decode()
    return bool(checksum) and checksum == expected


def find_delivered(
    key: str, s3: S3Options, s3_client: Any, store: Any = None
) -> list[DeliveredImage] | None:
    """The item's images if its last delivery is still in S3, checked by SHA-256.

    Args:
        key: From :func:`delivery_key`.
        s3: Where the images go (for the presigned links' lifetime).
        s3_client: A boto3 S3 client.
        store: The store (default :func:`ledger_store`).

    Returns:
        The images (``existed=True``, fresh presigned links when asked for), or ``None`` when
        there is no record or any object is missing, different or cannot be checked.
    """
    record = _read_record(key, store or ledger_store())
    if record is None:
        return None
    found: list[DeliveredImage] = []
    for image in record.images:
        try:
            head = s3_client.head_object(Bucket=image.bucket, Key=image.key, ChecksumMode="ENABLED")
        except Exception:  # noqa: BLE001 - missing, forbidden or unreachable: do the full path
            return None
        if not _holds(head, image):
            return None
        url = None
        if s3.presign_expires is not None:
            url = presign(s3_client, image.bucket, image.key, s3.presign_expires)
        found.append(image.model_copy(update={"url": url, "existed": True}))
    return found


@contextmanager
def check_deliveries(
    keys: list[str], s3: S3Options, workers: int
) -> Iterator[list[Future[list[DeliveredImage] | None]]]:
    """Check many items' deliveries at once, in a small thread pool, in order.

    Call it inside a flow run. The checks start at once and run ahead of whoever consumes
    them (a record read and a ``HEAD`` each); futures still pending on exit are cancelled.

    Args:
        keys: Each item's :func:`delivery_key`.
        s3: Where the images go.
        workers: Threads (the ``HEAD`` requests in flight at once).

    Yields:
        One future per key: :func:`find_delivered`'s answer.
    """
    store = ledger_store()
    client = s3_target_of(s3).client
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cometapi-ledger")
    futures = [pool.submit(find_delivered, key, s3, client, store) for key in keys]
    try:
        yield futures
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)


def _debug(message: str) -> None:
    import logging

    logging.getLogger(__name__).debug(message)
