"""Prefect flows of prefect-cometapi: single, edit and batch pipelines with their artifacts.

Deployment entrypoints (paths relative to the repository root):

* ``flows/pipeline.py:generate_and_upload``
* ``flows/pipeline.py:edit_and_upload``
* ``flows/batch.py:batch_generate``
* ``flows/fanout.py:batch_generate_chunk`` (the chunks of a fanned-out ``batch_generate``)
"""

from prefect_cometapi.batching.chunks import ChunkItem
from prefect_cometapi.batching.item import process_item
from prefect_cometapi.batching.sources import EXAMPLE_ITEMS, EXAMPLE_TEMPLATE
from prefect_cometapi.errors import BatchFailedError, BudgetExceededError
from prefect_cometapi.flows.batch import batch_generate
from prefect_cometapi.flows.costs import cost_summary
from prefect_cometapi.flows.fanout import batch_generate_chunk
from prefect_cometapi.flows.pipeline import edit_and_upload, generate_and_upload
from prefect_cometapi.forms.options import ImageOptions, S3Options, UpscaleOptions
from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome, RunSummary

__all__ = [
    "EXAMPLE_ITEMS",
    "EXAMPLE_TEMPLATE",
    "BatchFailedError",
    "BudgetExceededError",
    "ChunkItem",
    "DeliveredImage",
    "ImageOptions",
    "ItemOutcome",
    "RunSummary",
    "S3Options",
    "UpscaleOptions",
    "batch_generate",
    "batch_generate_chunk",
    "cost_summary",
    "edit_and_upload",
    "generate_and_upload",
    "process_item",
]
