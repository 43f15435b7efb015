"""Helpers shared by the flow tests: fresh prompt words, artifacts, asset events, S3 images, cost.

Plain functions (no fixtures): they read what a run left behind through the Prefect client,
boto3 and the emulator's request log.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from typing import Any
from uuid import UUID

from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from prefect_cometapi.billing.prices import (
    cost_usd,
    estimate_input_image_tokens,
    estimate_output_tokens,
    estimate_text_tokens,
)
from prefect_cometapi.models import Usage

MATERIALIZATION = "prefect.asset.materialization."
EVENTS_PAGE = 50
"""The events API's maximum page size (the client's default of 100 is refused)."""


def tag() -> str:
    """A fresh word for prompts, so no test hits another test's cache.

    Returns:
        Ten hex characters.
    """
    return uuid.uuid4().hex[:10]


def billed_cost(emulator: Any) -> float:
    """What the emulator billed, priced with pricing.cost_usd (its usage is the token formula).

    Args:
        emulator: The session's emulator.

    Returns:
        The cost in USD of every billed request in its log.
    """
    total = 0.0
    for record in emulator.requests:
        if not record.billed_images:
            continue
        params = record.params
        model = params.get("model", "gpt-image-2")
        text = estimate_text_tokens(params["prompt"])
        images_in = sum(len(v) for k, v in record.files.items() if k.startswith("image"))
        image_in = estimate_input_image_tokens(model, images_in)
        out = estimate_output_tokens(model, params["size"], params.get("quality"))
        usage = Usage(
            input_tokens=text + image_in,
            text_input_tokens=text,
            image_input_tokens=image_in,
            output_tokens=out * record.billed_images,
        )
        total += cost_usd(usage, model) or 0.0
    return round(total, 6)


def read_artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """The run's artifacts by key.

    Args:
        flow_run_id: The flow run.

    Returns:
        ``key -> artifact`` (the latest one of a key published more than once).
    """
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in sorted(found, key=lambda a: a.created or 0)}


_IMAGE_MD = re.compile(r"!\[([^\]]*)\]\(([^)\s]*)\)")


def assert_gallery_shape(markdown: str, previews: int) -> list[tuple[int, int]]:
    """Check that a gallery artifact renders in the Prefect UI without the network.

    Every image is a plain ``![label](data:image/jpeg;base64,...)`` paragraph (a linked image,
    ``[![x](u)](u)``, shows as raw text in the UI), no HTML, and each data URI decodes to a small
    JPEG.

    Args:
        markdown: The artifact's text.
        previews: How many images it must show.

    Returns:
        The previews' pixel sizes, in order.
    """
    from prefect_cometapi.reports.previews import PREVIEW_LONG_EDGE

    assert "[![" not in markdown and "<img" not in markdown.lower()
    images = _IMAGE_MD.findall(markdown)
    assert len(images) == previews, [label for label, _ in images]
    lines = markdown.split("\n")
    sizes = []
    for label, src in images:
        line = f"![{label}]({src})"
        assert line in lines, f"the image of {label!r} is not a paragraph of its own"
        at = lines.index(line)
        assert lines[at - 1] == "" and lines[at + 1] == ""
        prefix = "data:image/jpeg;base64,"
        assert src.startswith(prefix), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True))) as img:
            assert img.format == "JPEG"
            assert max(img.size) <= PREVIEW_LONG_EDGE
            sizes.append(img.size)
    return sizes


def table_rows(artifact: Any) -> list[dict[str, Any]]:
    """The rows of a table artifact (stored as JSON text or as a list).

    Args:
        artifact: A table artifact.

    Returns:
        Its rows.
    """
    return artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)


def _read_events(resource: EventResourceFilter) -> list[Any]:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(event=EventNameFilter(prefix=[MATERIALIZATION]), resource=resource),
            limit=EVENTS_PAGE,
        )
    return list(page.events)


def asset_events(uri: str, timeout: float = 20.0) -> list[Any]:
    """Materialization events of an S3 object, waiting for them to arrive.

    Args:
        uri: ``s3://bucket/key``.
        timeout: Seconds to wait for at least one event.

    Returns:
        The events (empty if none arrived in time).
    """
    deadline = time.monotonic() + timeout
    while True:
        events = _read_events(EventResourceFilter(id=[uri]))
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def asset_events_under(prefix: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Materialization events of every object under ``prefix``, waiting for ``expected`` of them.

    Args:
        prefix: E.g. ``s3://bucket/out/``.
        expected: How many to wait for (at most :data:`EVENTS_PAGE`).
        timeout: Seconds to wait.

    Returns:
        The events found (fewer than ``expected`` if the time ran out).
    """
    deadline = time.monotonic() + timeout
    while True:
        events = _read_events(EventResourceFilter(id_prefix=[prefix]))
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def s3_image(s3_client: Any, uri: str) -> tuple[bytes, tuple[int, int], str]:
    """Bytes, size and format of an object.

    Args:
        s3_client: A boto3 S3 client.
        uri: ``s3://bucket/key``.

    Returns:
        ``(bytes, (width, height), format)``.
    """
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    data = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with Image.open(io.BytesIO(data)) as img:
        return data, img.size, (img.format or "").lower()
