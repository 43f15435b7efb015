"""The artifacts every run publishes: progress, a markdown gallery with the cost, three tables.

Keys are lowercase-dash (Prefect's rule) and stable per flow, so the Artifacts page shows the
latest run of each flow with its history. Each table is narrow enough for the Prefect UI's
artifact page at 1400 px (about 700 px of table in the default UI, which wraps no cell and cuts a
wider table off), so what a row holds is split by what it is for: the results
(:func:`results_table`), the request and its answer (:func:`details_table`) and where each image
is (:func:`objects_table`); prompts and errors, long text, are in the gallery. Every cost is
written one way, :func:`prefect_cometapi.text.usd` (``$0.0047``).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome, RunSummary
from prefect_cometapi.text import markdown_text, slugify, usd

__all__ = [
    "Progress",
    "artifact_key",
    "details_table",
    "gallery_markdown",
    "objects_table",
    "publish",
    "results_description",
    "rendered_table",
    "results_table",
]

PROGRESS_MIN_INTERVAL_S = 1.0
PRESIGNED_LINKS_ENV = "PREFECT_COMETAPI_ARTIFACT_PRESIGNED_LINKS"
"""Worker setting: ``1`` puts the presigned full-size links in the gallery (off by default: an
artifact is stored in the Prefect database and readable by everyone with access to the
workspace, and a presigned URL carries the access key id, an STS session token when there is
one, and works until it expires, up to 7 days)."""
_PREVIEW_RE = re.compile(r"^data:image/(?:jpeg|png|webp);base64,[A-Za-z0-9+/]+={0,2}$")
_PRESIGNED_RE = re.compile(r"^https?://[A-Za-z0-9.\-]+(?::[0-9]+)?/[A-Za-z0-9%/._~?&=\-]*$")
_log = logging.getLogger(__name__)


def artifact_key(flow_name: str, kind: str) -> str:
    """A valid artifact key: lowercase letters, digits and dashes.

    Args:
        flow_name: The flow's name, e.g. ``batch_generate``.
        kind: ``progress``, ``gallery``, ``results``, ``details`` or ``objects``.

    Returns:
        E.g. ``cometapi-batch-generate-gallery``.
    """
    return slugify(f"cometapi-{flow_name}-{kind}", empty="cometapi")


class Progress:
    """A progress artifact updated as items finish (at most once a second, and at the end).

    Intermediate updates are sent from a background thread, so the loop that starts the next
    items never waits for the Prefect API; the final update (all items done) is sent in the
    caller's thread after any pending one, so the artifact ends at 100 % with exact counts.

    Args:
        flow_name: The flow's name (for the key).
        total: Number of items.
    """

    def __init__(self, flow_name: str, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.failed = 0
        self._last = 0.0
        self._sender: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self.artifact_id: UUID = create_progress_artifact(
            progress=0.0,
            key=artifact_key(flow_name, "progress"),
            description=f"0 of {total} items done",
        )

    def advance(self, failed: bool = False) -> None:
        """Count one finished item and update the artifact when due.

        Args:
            failed: Whether the item failed.
        """
        self.done += 1
        self.failed += int(failed)
        if self.done >= self.total:
            self._finish()
            return
        now = time.monotonic()
        if self._pending is not None:
            if not self._pending.done():
                return  # the previous update is still on its way
            if (error := self._pending.exception()) is not None:
                _log.warning("Progress artifact update failed: %s", error)
            self._pending = None
        if now - self._last < PROGRESS_MIN_INTERVAL_S:
            return
        self._last = now
        if self._sender is None:
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="cometapi-progress")
        # The copied context carries the Prefect settings and client of this run.
        self._pending = self._sender.submit(
            contextvars.copy_context().run, self._send, self.done, self.failed
        )

    def _finish(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        self._send(self.done, self.failed)

    def _send(self, done: int, failed: int) -> None:
        update_progress_artifact(
            self.artifact_id,
            progress=round(100.0 * done / self.total, 2),
            description=f"{done} of {self.total} items done, {failed} failed",
        )


def presigned_links_enabled() -> bool:
    """Whether the worker allows presigned links in artifacts (:data:`PRESIGNED_LINKS_ENV`).

    Returns:
        ``True`` when the variable is ``1``, ``true`` or ``yes``.
    """
    return os.environ.get(PRESIGNED_LINKS_ENV, "").strip().lower() in ("1", "true", "yes")


def _preview(image: DeliveredImage) -> str | None:
    """Our own preview's data URI, or ``None`` for anything else (never a URL to fetch)."""
    return image.preview if image.preview and _PREVIEW_RE.match(image.preview) else None


def _full_size_link(image: DeliveredImage) -> str | None:
    """The presigned link, when the worker allows them and it is a plain URL our S3 client made."""
    if image.url and presigned_links_enabled() and _PRESIGNED_RE.match(image.url):
        return image.url
    return None


def _image_line(outcome: ItemOutcome, image: DeliveredImage, local_paths: Mapping[str, str]) -> str:
    parts = [
        f"{markdown_text(image.size)} {markdown_text(image.format)}, {usd(outcome.cost_usd)}"
        + (" (cached)" if outcome.cached else ""),
        markdown_text(image.uri),
    ]
    if link := _full_size_link(image):
        parts.append(f"[full size]({link})")
    if image.uri in local_paths:
        parts.append(f"local copy {markdown_text(local_paths[image.uri])}")
    return " · ".join(parts)


def _prompt(outcome: ItemOutcome) -> str:
    return f" · prompt: {markdown_text(outcome.prompt_excerpt)}" if outcome.prompt_excerpt else ""


def gallery_markdown(
    summary: RunSummary, title: str, local_paths: Mapping[str, str] | None = None
) -> str:
    """The gallery: cost and counts first, then each item's images, then the failures.

    Each image of the first :data:`~.previews.PREVIEWED_ITEMS` items is shown as a plain
    ``![item](data:image/jpeg;base64,...)`` preview embedded in the artifact (no link around
    it, which the UI would not render), with its size, cost, S3 URI, a presigned full-size link
    when there is one, its local copy when ``local_paths`` names one and the prompt's excerpt;
    later items are one line each. Failed items follow with the API's code and message.

    Args:
        summary: The run's summary.
        title: A heading.
        local_paths: ``s3 URI -> local file`` for images also saved on this machine.

    Returns:
        Markdown.
    """
    local_paths = local_paths or {}
    lines = [
        f"# {markdown_text(title)}",
        "",
        f"**{summary.delivered} of {summary.items} items delivered**, {summary.failed} failed, "
        f"{summary.images} images in S3.",
        "",
        f"**Total cost: {usd(summary.total_cost_usd)}** "
        f"({summary.input_tokens:,} input + {summary.output_tokens:,} output tokens"
        + (f"; {summary.cached} items from the cache, not paid again" if summary.cached else "")
        + ")"
        + (
            f"; estimated before the run: {usd(summary.estimated_cost_usd)}"
            if summary.estimated_cost_usd is not None
            else ""
        )
        + ".",
        "",
    ]
    delivered = [o for o in summary.outcomes if o.status == "delivered"]
    if delivered:
        lines += ["## Images", ""]
    for outcome in delivered:
        for number, image in enumerate(outcome.images, start=1):
            label = outcome.item_id + (f" ({number})" if len(outcome.images) > 1 else "")
            line = _image_line(outcome, image, local_paths) + _prompt(outcome)
            if preview := _preview(image):
                lines += [
                    f"### {markdown_text(label)}",
                    "",
                    f"![{markdown_text(label)}]({preview})",
                    "",
                ]
                lines += [line, ""]
            else:
                lines.append(f"- **{markdown_text(label)}**: {line}")
    if lines[-1]:
        lines.append("")
    failed = [o for o in summary.outcomes if o.status == "failed"]
    if failed:
        lines += ["## Failed items", ""]
        for outcome in failed:
            item, code = (
                markdown_text(outcome.item_id),
                markdown_text(outcome.error_code or "error"),
            )
            error = markdown_text(outcome.error or "")
            lines.append(f"- **{item}** ({code}): {error}{_prompt(outcome)}")
        lines.append("")
    notes = []
    if any(_preview(image) for o in delivered for image in o.images):
        notes.append("Previews are small copies kept in this artifact.")
    if any(_full_size_link(image) for o in delivered for image in o.images):
        notes.append("Full-size links are presigned and expire; the S3 URIs stay.")
    if notes:
        lines.append("_" + " ".join(notes) + "_")
    return "\n".join(lines)


def results_table(summary: RunSummary) -> list[dict[str, object]]:
    """What a person reads first, narrow enough for the Prefect UI: one row per image (or per
    failed item) with the object's name; its full S3 URI is in :func:`objects_table`, and the
    folder the objects are in is in the table's description (:func:`results_description`).

    Args:
        summary: The run's summary.

    Returns:
        Rows with ``item``, ``status``, ``cost`` (:func:`~prefect_cometapi.text.usd`, what this
        run paid for the item) and ``object`` (the key's last segment).
    """
    return [
        {
            "item": outcome.item_id,
            "status": outcome.status,
            "cost": usd(outcome.cost_usd),
            "object": image.key.rsplit("/", 1)[-1] if image else "",
        }
        for outcome in summary.outcomes
        for image in outcome.images or [None]
    ]


def results_description(summary: RunSummary) -> str:
    """The results table's description: where the objects are, and the run's headline.

    Args:
        summary: The run's summary.

    Returns:
        E.g. ``Objects in s3://bucket/banners/2026-01-01/. 5/5 items delivered, ...``.
    """
    folders = sorted(
        {image.uri.rsplit("/", 1)[0] + "/" for o in summary.outcomes for image in o.images}
    )
    if len(folders) == 1:
        where = f"Objects in {folders[0]} (full S3 URIs in the objects table)."
    elif folders:
        where = "Full S3 URIs in the objects table."
    else:
        where = "No object stored."
    return f"{where} {summary.headline()}"


def details_table(summary: RunSummary) -> list[dict[str, object]]:
    """Each image's request and answer: requested size and quality, output, tokens, cache, time.

    Args:
        summary: The run's summary.

    Returns:
        Rows (one per image, or per failed item) with ``item``, ``size``, ``quality``,
        ``output_size``, ``input_tokens``, ``output_tokens``, ``cached`` and ``seconds``.
    """
    return [
        {
            "item": outcome.item_id,
            "size": outcome.size,
            "quality": outcome.quality,
            "output_size": image.size if image else "",
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "cached": outcome.cached,
            "seconds": round(outcome.seconds, 2),
        }
        for outcome in summary.outcomes
        for image in outcome.images or [None]
    ]


def objects_table(summary: RunSummary) -> list[dict[str, object]]:
    """Where each image is: its full S3 URI and its size in bytes.

    Args:
        summary: The run's summary.

    Returns:
        Rows (one per stored image) with ``item``, ``s3_uri`` and ``bytes``.
    """
    return [
        {"item": outcome.item_id, "s3_uri": image.uri, "bytes": image.bytes}
        for outcome in summary.outcomes
        for image in outcome.images
    ]


def rendered_table(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Table rows as the UI may show them: every string cell through :func:`markdown_text`.

    The Prefect UI renders each string cell of a table artifact as markdown, and run parameters
    reach the cells (item ids, prompts, S3 keys, errors), so every table goes through this.

    Args:
        rows: Rows of plain values.

    Returns:
        The same rows, string values escaped (numbers and booleans unchanged).
    """
    return [
        {
            name: markdown_text(value) if isinstance(value, str) else value
            for name, value in row.items()
        }
        for row in rows
    ]


def publish(summary: RunSummary, flow_name: str, title: str) -> None:
    """Publish the gallery and the three tables of a finished run (text escaped for the UI).

    Args:
        summary: The run's summary.
        flow_name: The flow's name (for the keys).
        title: The gallery's heading.
    """
    create_markdown_artifact(
        markdown=gallery_markdown(summary, title),
        key=artifact_key(flow_name, "gallery"),
        description=markdown_text(summary.headline()),
    )
    create_table_artifact(
        table=rendered_table(results_table(summary)),
        key=artifact_key(flow_name, "results"),
        description=markdown_text(results_description(summary)),
    )
    create_table_artifact(
        table=rendered_table(details_table(summary)),
        key=artifact_key(flow_name, "details"),
        description="Per image: requested size and quality, output size, tokens, cache, seconds "
        "(prompts and errors are in the gallery).",
    )
    create_table_artifact(
        table=rendered_table(objects_table(summary)),
        key=artifact_key(flow_name, "objects"),
        description="Where each image is: its S3 URI and size in bytes.",
    )
