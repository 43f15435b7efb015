"""The packaged flows' cost artifacts for any flow: ``with cost_summary(): ...``.

::

    from prefect import flow
    from prefect_cometapi.flows import cost_summary
    from prefect_cometapi.tasks import generate_image, upload_to_s3

    @flow
    def my_flow():
        with cost_summary("My banners"):
            result = generate_image("a lighthouse at dawn", "cometapi")
            upload_to_s3(result, bucket="my-banners")

When the block ends (also when it raises) the run gets the same markdown gallery (total cost,
tokens, what the cache saved, failures) and results table the packaged flows publish, keyed
``cometapi-<flow name>-gallery`` / ``-results``: one item per image request made inside the
block, with the S3 objects whose image came from that request (directly or upscaled).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.runtime import flow_run

from prefect_cometapi.billing.ledger import CostLedger, RequestRecord, cost_ledger
from prefect_cometapi.reports.artifacts import publish
from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome, RunSummary
from prefect_cometapi.text import prompt_excerpt

__all__ = ["cost_summary"]


def _outcome(index: int, record: RequestRecord, ledger: CostLedger) -> ItemOutcome:
    shas = set(record.image_sha256)
    images = [
        DeliveredImage(
            uri=u.uri,
            bucket=u.bucket,
            key=u.key,
            url=u.url,
            sha256=u.sha256,
            size=u.size,
            format=u.format,
            bytes=u.bytes,
            existed=u.existed,
        )
        for u in ledger.uploads
        if u.sha256 in shas or (u.source_sha256 in shas)
    ]
    return ItemOutcome(
        item_id=record.name,
        index=index,
        status="failed" if record.error else "delivered",
        prompt_excerpt=prompt_excerpt(record.prompt),
        size=record.size,
        quality=record.quality,
        images=images,
        input_tokens=0 if record.cached else record.input_tokens,
        output_tokens=0 if record.cached else record.output_tokens,
        cost_usd=record.cost_usd,
        cached=record.cached,
        error_code=record.error_code,
        error=record.error,
    )


def summary_from_ledger(ledger: CostLedger, flow_name: str, seconds: float = 0.0) -> RunSummary:
    """The run summary of what a ledger recorded (one item per image request).

    Args:
        ledger: The ledger.
        flow_name: The flow's name.
        seconds: Wall time.

    Returns:
        The summary.
    """
    records = list(ledger.requests.values())
    outcomes = [_outcome(i, r, ledger) for i, r in enumerate(records)]
    return RunSummary.from_outcomes(flow_name, outcomes, seconds)


@contextmanager
def cost_summary(title: str | None = None) -> Iterator[CostLedger]:
    """Publish the packaged flows' cost gallery and results table for the image tasks run here.

    Args:
        title: The gallery's heading; default ``"<flow name>: images and cost"``.

    Yields:
        The ledger being filled (``ledger.total_cost_usd``, ``ledger.cost_avoided_usd``).
    """
    started = time.monotonic()
    name = flow_run.flow_name or "flow"
    with cost_ledger() as ledger:
        try:
            yield ledger
        finally:
            summary = summary_from_ledger(ledger, name, time.monotonic() - started)
            publish(summary, name, title or f"{name}: images and cost")
