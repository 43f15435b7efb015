"""Prefect tasks of prefect-cometapi: generate, edit, template, upscale, upload.

The tasks and their async twins live in :mod:`.images`, :mod:`.prompts`, :mod:`.upscale` and
:mod:`.s3`; the machinery under them in :mod:`prefect_cometapi.orchestration.call` (what the image
tasks share), :mod:`prefect_cometapi.orchestration.twins`, :mod:`prefect_cometapi.caching`,
:mod:`prefect_cometapi.inputs`, :mod:`prefect_cometapi.s3` and :mod:`prefect_cometapi.upscaling`.
The names below are re-exported here for flows that import everything from one place.
"""

from prefect_cometapi.blocks.credentials import CredentialsLike
from prefect_cometapi.caching import image_cache_key, image_cache_policy, persist_when_paid
from prefect_cometapi.errors import retry_on_transient
from prefect_cometapi.inputs.coerce import ImageLike
from prefect_cometapi.inputs.fetch import load_image_bytes, load_text
from prefect_cometapi.s3 import S3Object, make_s3_client, upload_image
from prefect_cometapi.tasks.images import aedit_image, agenerate_image, edit_image, generate_image
from prefect_cometapi.tasks.prompts import arender_prompt, render_prompt
from prefect_cometapi.tasks.s3 import aupload_to_s3, upload_to_s3
from prefect_cometapi.tasks.upscale import MAX_UPSCALE_PIXELS, aupscale_image, upscale_image
from prefect_cometapi.templates import render_template

__all__ = [
    "MAX_UPSCALE_PIXELS",
    "CredentialsLike",
    "ImageLike",
    "S3Object",
    "aedit_image",
    "agenerate_image",
    "arender_prompt",
    "aupload_to_s3",
    "aupscale_image",
    "edit_image",
    "generate_image",
    "image_cache_key",
    "image_cache_policy",
    "load_image_bytes",
    "load_text",
    "make_s3_client",
    "persist_when_paid",
    "render_prompt",
    "render_template",
    "retry_on_transient",
    "upload_image",
    "upload_to_s3",
    "upscale_image",
]
