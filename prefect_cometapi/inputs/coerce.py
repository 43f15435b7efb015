"""One image input in any form the tasks accept (:data:`ImageLike`), coerced to bytes or to a
``GeneratedImage``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from prefect_cometapi.client.images import ImageLike, given_image
from prefect_cometapi.client.rules import check_edit_count, check_edit_size, inspect_image
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.inputs.fetch import load_image_bytes, local_size
from prefect_cometapi.models import GeneratedImage

__all__ = ["ImageLike", "as_generated_image", "resolve_inputs"]


def as_image_bytes(
    value: ImageLike, param: str = "image", *, endpoint_url: str | None = None
) -> bytes:
    """The encoded bytes of one image, from any :data:`ImageLike` form.

    Args:
        value: The image.
        param: The parameter name to blame.
        endpoint_url: S3-compatible endpoint for ``s3://`` URIs.

    Returns:
        The bytes (not decoded).

    Raises:
        ValidationError: A result holding several images; see :func:`load_image_bytes`.
        InputFetchError: See :func:`load_image_bytes`.
    """
    given = given_image(value, param)
    if given is not None:
        return given.data
    return load_image_bytes(value, endpoint_url=endpoint_url, param=param)


def as_generated_image(
    value: ImageLike, param: str = "image", *, endpoint_url: str | None = None
) -> GeneratedImage:
    """One image as a ``GeneratedImage`` (bytes and files are inspected for format and size).

    Args:
        value: The image (as for :func:`as_image_bytes`, whose ``param`` and ``endpoint_url``
            mean the same here).
        param: The parameter name to blame.
        endpoint_url: For ``s3://`` URIs.

    Returns:
        The image; for bytes, paths and URIs ``model`` and ``prompt`` are empty.

    Raises:
        ValidationError: Not an image, an ``ImageResult`` with several images, unreadable.
        InputFetchError: See :func:`load_image_bytes`.
    """
    given = given_image(value, param)
    if given is not None:
        return given
    if not isinstance(value, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise ValidationError(
            param,
            "expected an ImageResult, a GeneratedImage, bytes, a path or a URI, "
            f"not {type(value).__name__}",
        )
    data = bytes(as_image_bytes(value, param, endpoint_url=endpoint_url))
    info = inspect_image(data, param)
    return GeneratedImage(
        data=data,
        format=info.format,
        width=info.width,
        height=info.height,
        sha256=hashlib.sha256(data).hexdigest(),
        model="",
        prompt="",
    )


def resolve_inputs(
    images: ImageLike | Sequence[ImageLike],
    mask: ImageLike | None = None,
    s3_endpoint_url: str | None = None,
) -> tuple[list[bytes], bytes | None]:
    """Load edit inputs into bytes (what ``edit_image`` sends and its cache key hashes).

    Args:
        images: One source or a list of sources (each any :data:`ImageLike`).
        mask: The mask source, if any.
        s3_endpoint_url: Endpoint for ``s3://`` sources on S3-compatible stores.

    Every count and size rule is applied before anything is read: more than 16 images, or a
    local file over its limit (found with ``stat``), is refused with nothing read.

    Returns:
        The image bytes and the mask bytes.

    Raises:
        ValidationError: See :func:`as_image_bytes`; too many images, a file too large.
        InputFetchError: See :func:`load_image_bytes`.
    """
    many = list(images) if isinstance(images, (list, tuple)) else [images]
    # Count, then read: every count and size rule before the first byte is read.
    check_edit_count(len(many))
    params = [f"images[{i}]" if len(many) > 1 else "images" for i in range(len(many))]
    for source, param in [*zip(many, params, strict=True), (mask, "mask")]:
        size = local_size(source, param)
        if size is not None:
            check_edit_size(param, size, os.fsdecode(source))
    loaded = [
        as_image_bytes(s, param, endpoint_url=s3_endpoint_url)
        for s, param in zip(many, params, strict=True)
    ]
    if mask is None:
        return loaded, None
    return loaded, as_image_bytes(mask, "mask", endpoint_url=s3_endpoint_url)
