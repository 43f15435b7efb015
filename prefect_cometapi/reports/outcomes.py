"""Small result records the flows return and publish: never image bytes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from prefect_cometapi.errors import APIStatusError, redact
from prefect_cometapi.text import usd

__all__ = ["DeliveredImage", "ItemOutcome", "ReviewEntry", "RunSummary", "describe_error"]


def describe_error(exc: BaseException) -> tuple[str, str]:
    """A short code and the readable reason of a failure (the API's own message when it sent one).

    Args:
        exc: The exception.

    Returns:
        ``(code, message)``, e.g. ``("moderation_blocked", "Your request was rejected ...")``.
    """
    if isinstance(exc, APIStatusError):
        return exc.code or f"http_{exc.status_code}", redact(exc.message)
    return type(exc).__name__, redact(str(exc))


class DeliveredImage(BaseModel):
    """One image stored in S3.

    Attributes:
        uri: ``s3://bucket/key``.
        bucket: The bucket.
        key: The key.
        url: A presigned GET URL, if asked for.
        sha256: SHA-256 of the stored bytes.
        size: ``WxH`` of the stored image.
        format: ``png``, ``jpeg`` or ``webp``.
        bytes: Object size.
        existed: ``True`` when the identical object was already there.
        preview: A small JPEG of the image as a ``data:`` URI, for the gallery (see
            :mod:`prefect_cometapi.reports.previews`), or ``None``.
    """

    uri: str
    bucket: str
    key: str
    url: str | None = None
    sha256: str
    size: str
    format: str
    bytes: int
    existed: bool = False
    preview: str | None = None


class ReviewEntry(BaseModel):
    """One verdict of the review gate (who decided what, in which round).

    Attributes:
        item_id: The item.
        round: The round (1-based).
        decision: ``approved`` or ``rejected``.
        by: ``reviewer`` (a per-item verdict), ``approve_all``, ``reject_all``, ``timeout``
            (nobody answered in time) or ``earlier_run`` (kept from an earlier run's review).
        reviewer: The name the reviewer gave, if any.
        note: The reviewer's note.
        new_prompt: The start of a rejected item's new prompt.
        cost_usd: What the reviewed image cost this run (0 when it came from the cache).
    """

    item_id: str
    round: int
    decision: Literal["approved", "rejected"]
    by: str = "reviewer"
    reviewer: str | None = None
    note: str | None = None
    new_prompt: str | None = None
    cost_usd: float = 0.0


class ItemOutcome(BaseModel):
    """What happened to one item.

    Attributes:
        item_id: The item's id.
        index: Its position in the run.
        status: ``delivered``, ``failed``, or ``rejected`` (the review gate kept it from S3).
        prompt_excerpt: The start of the prompt.
        size: The requested size.
        quality: The requested quality.
        images: The images stored.
        input_tokens: Input tokens of the request (0 when cached or failed).
        output_tokens: Output tokens of the request.
        cost_usd: What this run paid for the item (0 when the image came from the cache).
        cached: The generation came from the cache (nothing was paid again).
        already_delivered: Its objects were already in S3 with the recorded SHA-256 from an
            earlier run, so nothing was generated, upscaled or uploaded (``cached`` is true too).
        error_code: Why it failed, as a code (``moderation_blocked``...).
        error: Why it failed, in the API's words.
        seconds: Wall time of the item.
    """

    item_id: str
    index: int
    status: Literal["delivered", "failed", "rejected"]
    prompt_excerpt: str
    size: str
    quality: str
    images: list[DeliveredImage] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    already_delivered: bool = False
    error_code: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def uris(self) -> list[str]:
        """The S3 URIs of the item's images."""
        return [image.uri for image in self.images]


class RunSummary(BaseModel):
    """The return value of every flow.

    Attributes:
        flow: The flow's name.
        items: Items processed.
        delivered: Items whose images are all in S3.
        failed: Items that failed.
        rejected: Items the review gate rejected (not delivered, not failed).
        images: Images stored.
        total_cost_usd: What this run paid (cached generations cost nothing).
        estimated_cost_usd: The pre-flight estimate, when one was made.
        input_tokens: Input tokens billed in this run.
        output_tokens: Output tokens billed in this run.
        cached: Items served from the cache.
        already_delivered: Items whose objects were already in S3 (a subset of ``cached``).
        uris: Every stored object.
        failures: ``item id -> reason`` of each failed item.
        outcomes: Every item's record.
        review: Every verdict of the review gate, in order (empty without review).
        seconds: Wall time of the run.
    """

    flow: str
    items: int
    delivered: int
    failed: int
    rejected: int = 0
    images: int
    total_cost_usd: float
    estimated_cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    already_delivered: int = 0
    uris: list[str] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict)
    outcomes: list[ItemOutcome] = Field(default_factory=list)
    review: list[ReviewEntry] = Field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def from_outcomes(
        cls,
        flow: str,
        outcomes: list[ItemOutcome],
        seconds: float = 0.0,
        estimated_cost_usd: float | None = None,
        review: list[ReviewEntry] | None = None,
    ) -> RunSummary:
        """Add up item outcomes.

        Args:
            flow: The flow's name.
            outcomes: The items' records (any order; sorted by index here).
            seconds: Wall time.
            estimated_cost_usd: The pre-flight estimate.
            review: The review gate's verdicts.

        Returns:
            The summary.
        """
        ordered = sorted(outcomes, key=lambda o: o.index)
        delivered = [o for o in ordered if o.status == "delivered"]
        rejected = sum(1 for o in ordered if o.status == "rejected")
        return cls(
            flow=flow,
            items=len(ordered),
            delivered=len(delivered),
            failed=len(ordered) - len(delivered) - rejected,
            rejected=rejected,
            images=sum(len(o.images) for o in ordered),
            total_cost_usd=round(sum(o.cost_usd for o in ordered), 6),
            estimated_cost_usd=estimated_cost_usd,
            input_tokens=sum(o.input_tokens for o in ordered),
            output_tokens=sum(o.output_tokens for o in ordered),
            cached=sum(1 for o in ordered if o.cached),
            already_delivered=sum(1 for o in ordered if o.already_delivered),
            uris=[uri for o in ordered for uri in o.uris],
            failures={o.item_id: f"{o.error_code}: {o.error}" for o in ordered if o.error},
            outcomes=ordered,
            review=list(review or []),
            seconds=round(seconds, 3),
        )

    def headline(self) -> str:
        """One line for logs and state messages.

        Returns:
            E.g. ``"28/30 items delivered, 2 failed, 28 images, $0.1234"``.
        """
        return (
            f"{self.delivered}/{self.items} items delivered, {self.failed} failed, "
            f"{self.images} images, {usd(self.total_cost_usd)}"
            + (f" ({self.cached} from cache)" if self.cached else "")
            + (f", {self.rejected} rejected in review" if self.rejected else "")
        )
