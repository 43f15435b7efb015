"""What an image input may be, in one name: :data:`ImageLike`, and the one image of a result.

The clients, the tasks and the flows all take an image in any of these forms
(:mod:`prefect_cometapi.inputs.coerce` reads paths, URLs and ``s3://`` URIs for the tasks; the
clients read bytes, local paths and binary file objects).
"""

from __future__ import annotations

import os

from prefect_cometapi.errors import ValidationError
from prefect_cometapi.models import GeneratedImage, ImageResult

__all__ = ["ImageLike", "given_image"]

ImageLike = ImageResult | GeneratedImage | bytes | str | os.PathLike
"""One image in any form the tasks accept: an ``ImageResult`` holding exactly one image, a
``GeneratedImage``, bytes, a local path, an ``https://`` URL or an ``s3://`` URI."""


def single_image(result: ImageResult, param: str = "image") -> GeneratedImage:
    """The one image of a result; a clear error when it holds several.

    Args:
        result: A generations or edits result.
        param: The parameter name to blame.

    Returns:
        ``result.images[0]``.

    Raises:
        ValidationError: The result holds no image or more than one.
    """
    count = len(result.images)
    if count != 1:
        raise ValidationError(
            param,
            f"an ImageResult with {count} images was passed where one image is expected; "
            f"pass one of them, e.g. result.images[0] ... result.images[{max(count - 1, 0)}]",
        )
    return result.images[0]


def given_image(value: object, param: str) -> GeneratedImage | None:
    """The image itself when ``value`` already is one (or a result holding one), else ``None``.

    Args:
        value: Any image input.
        param: The parameter name to blame.

    Returns:
        The image, or ``None`` for bytes, paths, URLs and file objects.

    Raises:
        ValidationError: A result that holds several images.
    """
    if isinstance(value, ImageResult):
        return single_image(value, param)
    if isinstance(value, GeneratedImage):
        return value
    return None
