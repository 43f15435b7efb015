"""Prefect tasks of prefect-cometapi: generate, edit, template, upscale, upload."""

from prefect_cometapi.tasks.caching import (
    image_cache_key,
    image_cache_policy,
    persist_when_paid,
)
from prefect_cometapi.tasks.images import edit_image, generate_image, retry_on_transient
from prefect_cometapi.tasks.inputs import load_image_bytes, load_text
from prefect_cometapi.tasks.prompts import render_prompt, render_template
from prefect_cometapi.tasks.s3 import S3Object, make_s3_client, upload_image, upload_to_s3
from prefect_cometapi.tasks.upscale import MAX_UPSCALE_PIXELS, upscale, upscale_image

__all__ = [
    "MAX_UPSCALE_PIXELS",
    "S3Object",
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
    "upscale",
    "upscale_image",
]
