"""User-supplied inputs: images to edit, masks and text files, from bytes, a path, a URL or S3.

:mod:`.fetch` reads a source with its caps and allow-lists; :mod:`.coerce` turns one image in
any accepted form (:data:`ImageLike`) into bytes or a ``GeneratedImage``.
"""

from prefect_cometapi.inputs.coerce import ImageLike
from prefect_cometapi.inputs.fetch import load_image_bytes, load_text

__all__ = ["ImageLike", "load_image_bytes", "load_text"]
