"""The serializer of persisted image results: pickle, then one-line base64.

Prefect's default ``pickle`` serializer wraps the pickle in MIME base64
(``base64.encodebytes``: a newline every 76 characters, written chunk by chunk), which the
result record's JSON then escapes once more. For a result that holds megabytes of image bytes
that is the largest single CPU cost of a paid item after the API's own response parsing. This
serializer writes the same pickle as one base64 line (``base64.b64encode``, a single C pass)
and reads it back with ``base64.b64decode``.

Records written with Prefect's default serializer stay readable: each record names the
serializer it was written with.

A record is not trusted on read: an image whose bytes do not match its recorded sha256, or a
record that does not hold an image result, raises here, which Prefect's result store treats as
"no cached result" when it checks for one, so the task runs again and replaces the entry.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import pickle
from typing import Any

from prefect.serializers import Serializer
from pydantic import Field

__all__ = ["IMAGE_RESULT_SERIALIZER", "CompactPickleSerializer"]


class CompactPickleSerializer(Serializer):  # type: ignore[type-arg]
    """Pickle (highest protocol) wrapped in single-line base64.

    Attributes:
        type: ``cometapi-pickle``, the key Prefect stores in each record to find this class.
    """

    type: str = Field(default="cometapi-pickle", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        """Encode an object.

        Args:
            obj: Anything the standard ``pickle`` module can pickle.

        Returns:
            ASCII base64 of the pickle, without line breaks.
        """
        return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def loads(self, blob: bytes) -> Any:
        """Decode what :meth:`dumps` wrote.

        Args:
            blob: The stored bytes.

        Returns:
            The object.
        """
        value = pickle.loads(base64.b64decode(blob))  # noqa: S301 - our own result records
        _check_integrity(value)
        return value


def _check_integrity(value: Any) -> None:
    """Refuse a cached image result whose images do not match their sha256, or of another type.

    Raises:
        ValueError: The record was tampered with or damaged (a warning is logged).
    """
    from prefect_cometapi.models import ImageResult

    problem = None
    if isinstance(value, BaseException):
        return  # a failed run's persisted error, never a cache hit
    if not isinstance(value, ImageResult):
        problem = f"it holds a {type(value).__name__}, not an ImageResult"
    else:
        for image in value.images:
            if hashlib.sha256(image.data).hexdigest() != image.sha256:
                problem = f"image {image.index} does not match its recorded sha256"
                break
    if problem is not None:
        logging.getLogger("prefect_cometapi.caching").warning(
            "Ignoring a cached image result (%s); the request runs again and replaces it", problem
        )
        raise ValueError(f"untrusted cached image result: {problem}")


IMAGE_RESULT_SERIALIZER = CompactPickleSerializer()
"""The instance the image tasks persist their results with."""
