"""The typed values the client returns and the tasks pass along: usage, one image, one response.

``ImageResult``, ``GeneratedImage`` (:mod:`.images`), ``Usage`` (:mod:`.usage`) and ``S3Object``
(:mod:`prefect_cometapi.s3.upload`) are frozen dataclasses (cheap to build and copy on the hot
path). The :class:`~.json_form.JSONForm` mixin gives them the method names Pydantic users know,
with a small JSON form by default (sizes, sha256, usage, cost, request id, S3 URI: what a log,
an artifact, an API answer or a downstream task needs) and the image bytes only on request
(``include_data=True``, base64 in JSON). The full form round-trips::

    text = result.model_dump_json(include_data=True)
    assert ImageResult.model_validate_json(text) == result

The small form validates back too, into a result that knows it has no bytes (``has_data`` is
``False``; reading ``data`` raises :class:`~prefect_cometapi.errors.ImageDataMissingError`,
which says where the bytes are: the image's S3 URI when known, and the cache record).

Every result says whether this run paid for it: ``cost_usd`` is the image's price, ``cached``
says it was served from the cache and ``billed_usd`` is what this run paid (0 on a cache hit).
Sum ``billed_usd`` for a run's spend.

The types also work as Pydantic field types and with Prefect's serializers: Prefect's ``json``
serializer encodes them (bytes as base64) through the Pydantic core schema of :mod:`.json_form`
and reads them back as equal values.
"""

from prefect_cometapi.errors import ImageDataMissingError
from prefect_cometapi.models.images import CONTENT_TYPES, GeneratedImage, ImageResult
from prefect_cometapi.models.json_form import DumpMode, JSONForm
from prefect_cometapi.models.usage import Usage

__all__ = [
    "CONTENT_TYPES",
    "DumpMode",
    "GeneratedImage",
    "ImageDataMissingError",
    "ImageResult",
    "JSONForm",
    "Usage",
]
