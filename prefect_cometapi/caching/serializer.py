"""The serializer of persisted image results: pickle, then one-line base64.

Prefect's default ``pickle`` serializer wraps the pickle in MIME base64
(``base64.encodebytes``: a newline every 76 characters, written chunk by chunk), which the
result record's JSON then escapes once more. For a result that holds megabytes of image bytes
that is the largest single CPU cost of a paid item after the API's own response parsing. This
serializer writes the same pickle as one base64 line (``base64.b64encode``, a single C pass)
and reads it back with ``base64.b64decode``.

Records written with Prefect's default serializer stay readable: each record names the
serializer it was written with.
"""

from __future__ import annotations

import base64
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
        return pickle.loads(base64.b64decode(blob))  # noqa: S301 - our own result records


IMAGE_RESULT_SERIALIZER = CompactPickleSerializer()
"""The instance the image tasks persist their results with."""
