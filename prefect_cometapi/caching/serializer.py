"""The serializer of persisted image results: JSON metadata and the image bytes, never a pickle.

Cache records may be read from storage that many workers write (an S3 results bucket), so
reading one must not be able to run code. An :class:`~prefect_cometapi.models.ImageResult` is
stored as its JSON form (:mod:`prefect_cometapi.models`, without the bytes) followed by the
images' bytes, length-prefixed, in one line of base64 (a single C pass over megabytes of image)::

    image1:<base64( 4-byte big-endian header length | header JSON | image bytes... )>

A failed run's error is stored as its type name and message (``error1:<base64(JSON)>``) and read
back as a :class:`StoredError`; no class is ever looked up by a name found in a record.

A record is not trusted on read: an image whose bytes do not match its recorded sha256, or a
record that does not hold an image result in this form (an old pickled entry included), raises
here, which Prefect's result store treats as "no cached result" when it checks for one, so the
task runs again and replaces the entry. Records that claim another serializer (a crafted record
naming ``pickle``) never reach Prefect's deserializer: see :mod:`prefect_cometapi.caching.store`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import struct
from typing import Any

from prefect.serializers import Serializer
from pydantic import Field

__all__ = [
    "IMAGE_PREFIX",
    "IMAGE_RESULT_SERIALIZER",
    "ImageResultSerializer",
    "StoredError",
    "untrusted",
]

IMAGE_PREFIX = b"image1:"
"""How an image result's serialized form starts."""
ERROR_PREFIX = b"error1:"
"""How a failed run's stored error starts."""
_HEADER = struct.Struct(">I")
_LOGGER = logging.getLogger("prefect_cometapi.caching")


class StoredError(Exception):
    """A failed image task's error, read back from a result record (type name and message).

    Attributes:
        error_type: The original exception's class name.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


def untrusted(problem: str) -> ValueError:
    """Log that a cache record is ignored and return the error that makes it a cache miss.

    Args:
        problem: What is wrong with the record (no record contents).

    Returns:
        The ``ValueError`` to raise.
    """
    _LOGGER.warning(
        "Ignoring a cached image result (%s); the request runs again and replaces it", problem
    )
    return ValueError(f"untrusted cached image result: {problem}")


class ImageResultSerializer(Serializer):  # type: ignore[type-arg]
    """Image results as JSON metadata plus their bytes; errors as type name and message.

    Attributes:
        type: ``cometapi-image``, the key Prefect stores in each record to find this class.
    """

    type: str = Field(default="cometapi-image", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        """Encode an image result (or a failed run's error).

        Args:
            obj: An :class:`~prefect_cometapi.models.ImageResult` or an exception.

        Returns:
            ASCII bytes, without line breaks.

        Raises:
            TypeError: ``obj`` is neither.
        """
        from prefect_cometapi.models import ImageResult

        if isinstance(obj, BaseException):
            text = json.dumps({"type": type(obj).__name__, "message": str(obj)})
            return ERROR_PREFIX + base64.b64encode(text.encode())
        if not isinstance(obj, ImageResult):
            raise TypeError(f"{type(self).__name__} stores ImageResults, not {type(obj).__name__}")
        header = json.dumps(obj.model_dump(mode="json"), separators=(",", ":")).encode()
        blob = b"".join([_HEADER.pack(len(header)), header, *(i.data for i in obj.images)])
        return IMAGE_PREFIX + base64.b64encode(blob)

    def loads(self, blob: bytes) -> Any:
        """Decode what :meth:`dumps` wrote, checking every image against its sha256.

        Args:
            blob: The stored bytes.

        Returns:
            The :class:`~prefect_cometapi.models.ImageResult`, or a :class:`StoredError`.

        Raises:
            ValueError: Not this serializer's form, or an image that does not match its
                sha256 (a warning is logged).
        """
        if blob.startswith(ERROR_PREFIX):
            try:
                error = json.loads(base64.b64decode(blob[len(ERROR_PREFIX) :], validate=True))
                return StoredError(str(error["type"]), str(error["message"]))
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise untrusted("a stored error that cannot be read") from None
        if not blob.startswith(IMAGE_PREFIX):
            raise untrusted("it holds no image result in this package's format")
        try:
            return _load_image_result(base64.b64decode(blob[len(IMAGE_PREFIX) :], validate=True))
        except ValueError as exc:
            raise untrusted(str(exc)) from None


def _load_image_result(raw: bytes) -> Any:
    """An ``ImageResult`` from the length-prefixed layout; its images checked by sha256."""
    from prefect_cometapi.models import ImageResult

    try:
        (length,) = _HEADER.unpack_from(raw)
        header = json.loads(raw[_HEADER.size : _HEADER.size + length])
        images = header["images"]
        offset = _HEADER.size + length
        for image in images:
            size = int(image["bytes"])
            if size < 0 or offset + size > len(raw):
                raise ValueError("its image bytes are cut short")
            image["data"] = raw[offset : offset + size]
            offset += size
        if offset != len(raw):
            raise ValueError("it holds bytes no image claims")
        value = ImageResult.model_validate(header)
    except (struct.error, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        raise ValueError("its layout is not an image result's") from None
    for image in value.images:
        if hashlib.sha256(image.data).hexdigest() != image.sha256:
            raise ValueError(f"image {image.index} does not match its recorded sha256")
    return value


IMAGE_RESULT_SERIALIZER = ImageResultSerializer()
"""The instance the image tasks persist their results with."""
