"""Result stores that read only records written with the expected serializer.

Prefect picks the serializer of a stored result record from the record itself
(``ResultRecord.deserialize`` reads ``metadata.serializer``): a record placed in a shared
results bucket that claims ``{"type": "pickle"}`` would be unpickled when a task merely checks
its cache, before any serializer of ours is consulted. :func:`vetted_store` wraps a result
store's storage so that every record is checked as plain JSON first; a record that names another
serializer (or, for the image serializer, holds anything but an image result) is refused with a
warning. Prefect treats a record that cannot be read as "no cached result": the task runs again
and its new record replaces the refused one. With a separate key storage (a cache policy's
``key_storage``) Prefect decides from the metadata alone; the result it points to is then loaded
as part of the check, so a damaged result is a miss there too, not a failed run.

The image tasks' cache policy applies it to each task run's store
(:class:`~prefect_cometapi.caching.policy.ImageRequestCachePolicy`); the delivery ledger applies
it to its own (:func:`~prefect_cometapi.batching.ledger.ledger_store`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from prefect._internal.compatibility.blocks import (
    call_explicitly_async_block_method,
    call_explicitly_sync_block_method,
)
from prefect.filesystems import WritableFileSystem
from prefect.serializers import Serializer

__all__ = ["vetted_store"]

_LOGGER = logging.getLogger("prefect_cometapi.caching")
Part = Literal["record", "metadata", "payload"]


class VettedStorage(WritableFileSystem):
    """A storage block that checks each result record before handing it to Prefect.

    Writes go to ``inner`` unchanged. Reads are checked as JSON, never deserialized here.

    Attributes:
        inner: The storage block that holds the records.
        serializer: The serializer a record must name (its JSON form).
        part: What this storage holds: whole ``record``\\ s, ``metadata`` only (a cache
            policy's key storage), or ``payload``\\ s (the results beside that metadata).
        payload_prefix: What a serialized result must start with (empty: anything).
        payloads: With ``part="metadata"``: the storage of the results the metadata points
            to. Each is then read and loaded with ``loader`` as part of the check, so a record
            whose result is damaged is missing (Prefect reads only the metadata to decide
            that a cached result exists, and would fail the run when loading it).
        loader: The serializer that loads those results.
    """

    _block_type_name = "CometAPI Vetted Result Storage"

    inner: Any
    serializer: dict[str, Any]
    part: Part = "record"
    payload_prefix: str = ""
    payloads: Any = None
    loader: Any = None

    def _resolve_path(self, path: str) -> Path | None:
        resolve = getattr(self.inner, "_resolve_path", None)
        return resolve(path) if resolve is not None else None

    def read_path(self, path: str, _sync: bool | None = None) -> Any:  # type: ignore[override]
        """Read a record from ``inner`` and check it.

        Args:
            path: The record's key.
            _sync: ``False`` to get an awaitable (Prefect's calling convention).

        Returns:
            The record's bytes.

        Raises:
            ValueError: The record names another serializer or holds another kind of value.
        """
        if _sync is False:
            return self.aread_path(path)
        return self._check(call_explicitly_sync_block_method(self.inner, "read_path", (path,), {}))

    async def aread_path(self, path: str) -> bytes:
        """Async :meth:`read_path`."""
        return self._check(
            await call_explicitly_async_block_method(self.inner, "read_path", (path,), {})
        )

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> Any:  # type: ignore[override]
        """Write to ``inner`` unchanged.

        Args:
            path: The key.
            content: The bytes.
            _sync: ``False`` to get an awaitable (Prefect's calling convention).

        Returns:
            What ``inner`` returns.
        """
        if _sync is False:
            return self.awrite_path(path, content)
        return call_explicitly_sync_block_method(self.inner, "write_path", (path, content), {})

    async def awrite_path(self, path: str, content: bytes) -> Any:
        """Async :meth:`write_path`."""
        return await call_explicitly_async_block_method(
            self.inner, "write_path", (path, content), {}
        )

    def _check(self, content: Any) -> Any:
        if content is None:
            return content
        if self.part == "payload":
            self._check_payload(content)
            return content
        try:
            document = json.loads(content)
            metadata = document["metadata"] if self.part == "record" else document
            named = metadata["serializer"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _refused("it is not a result record") from None
        if named != self.serializer:
            kind = named.get("type") if isinstance(named, dict) else None
            raise _refused(
                f"it names the serializer {str(kind)[:40]!r}, not {self.serializer['type']!r}"
            )
        if self.part == "record":
            result = document.get("result")
            self._check_payload(result.encode() if isinstance(result, str) else result)
        elif self.payloads is not None and self.loader is not None:
            self._check_result(metadata.get("storage_key"))
        return content

    def _check_result(self, storage_key: Any) -> None:
        """Read and load the result a metadata record points to (``ValueError`` if unsound)."""
        try:
            payload = call_explicitly_sync_block_method(
                self.payloads, "read_path", (str(storage_key),), {}
            )
        except Exception:  # noqa: BLE001 - a result that cannot be read is missing
            raise _refused("the result it points to cannot be read") from None
        self._check_payload(payload)
        self.loader.loads(payload)  # raises ValueError (logged) for an unsound result

    def _check_payload(self, payload: Any) -> None:
        if self.payload_prefix and not (
            isinstance(payload, bytes) and payload.startswith(self.payload_prefix.encode())
        ):
            raise _refused("it holds no image result")


def _refused(problem: str) -> ValueError:
    _LOGGER.warning(
        "Ignoring a stored result record (%s); it is treated as missing and replaced", problem
    )
    return ValueError(f"untrusted result record: {problem}")


def _vetted(storage: Any, serializer: dict[str, Any], part: Part, prefix: str, **more: Any) -> Any:
    if storage is None or isinstance(storage, VettedStorage):
        return storage
    vetted = VettedStorage(
        inner=storage, serializer=serializer, part=part, payload_prefix=prefix, **more
    )
    vetted._block_document_id = getattr(storage, "_block_document_id", None)
    return vetted


def vetted_store(store: Any, payload_prefix: bytes = b"") -> Any:
    """A copy of a Prefect ``ResultStore`` that reads only records of its own serializer.

    Args:
        store: The ``ResultStore`` (its ``serializer`` is the one records must name).
        payload_prefix: What each serialized result must start with (e.g. only image results).

    Returns:
        The copy (``store`` itself if it is already vetted).
    """
    serializer: Serializer = store.serializer  # type: ignore[type-arg]
    expected = json.loads(serializer.model_dump_json(serialize_as_any=True))
    prefix = payload_prefix.decode()
    if store.metadata_storage is not None:
        update = {
            "metadata_storage": _vetted(
                store.metadata_storage,
                expected,
                "metadata",
                prefix,
                payloads=store.result_storage,
                loader=serializer,
            ),
            "result_storage": _vetted(store.result_storage, expected, "payload", prefix),
        }
    else:
        update = {"result_storage": _vetted(store.result_storage, expected, "record", prefix)}
    return store.model_copy(update=update)
