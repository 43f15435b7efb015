"""The review gate's logic: what a reviewer's answer decides, and what is remembered.

A round shows the images of the items still under review; the answer
(:class:`~prefect_cometapi.forms.review.ReviewDecision`) is read by :func:`interpret`, which
approves or rejects items and lists what it could not accept (an unknown id, an item already
approved, an empty form, a new prompt the rules or the template sandbox refuse). Refused parts
decide nothing and cost nothing: their items stay under review and the run asks again.

Every verdict a person gives is written to the image task's result store
(:func:`record_verdict`, keyed by the reviewed image: its request, its destination and the
item), so a later run of the same batch finds it (:func:`stored_verdict`) and neither asks again
nor regenerates what was decided. A verdict is an event once, when first written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prefect.serializers import Serializer
from pydantic import BaseModel, Field

from prefect_cometapi.batching.ledger import json_record_store
from prefect_cometapi.client.rules import validate_prompt
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.forms.review import ReviewDecision
from prefect_cometapi.reports.outcomes import ReviewEntry
from prefect_cometapi.text import prompt_excerpt

__all__ = [
    "MAX_ATTEMPTS",
    "interpret",
    "pause_key",
    "record_verdict",
    "render_new_prompt",
    "stored_verdict",
    "timeout_verdicts",
    "verdict_key",
]

MAX_ATTEMPTS = 10
"""Answers a round accepts that decide nothing (empty, refused) before the run gives up."""
Verdict = Literal["approved", "rejected"]


@dataclass
class Interpretation:
    """What one answer decided.

    Attributes:
        entries: The verdicts, per item id (in the order the items are under review).
        new_prompts: Rejected items' rendered new prompts.
        problems: What was not accepted, one readable sentence each.
    """

    entries: dict[str, ReviewEntry] = field(default_factory=dict)
    new_prompts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def render_new_prompt(text: str, variables: Mapping[str, Any]) -> str:
    """A reviewer's new prompt as the batch renders its own: a template with the item's variables.

    It is always template text (never read as a file name), rendered in the template sandbox
    and checked like every prompt.

    Args:
        text: What the reviewer typed.
        variables: The item's variables.

    Returns:
        The rendered prompt.

    Raises:
        ValidationError: The sandbox or the prompt rules refuse it.
    """
    from prefect_cometapi.templates import render_template

    # A trailing newline makes it template text, never a path ("logo.txt" is a prompt here).
    return validate_prompt(render_template(text + "\n", variables))


def interpret(
    answer: ReviewDecision,
    round_number: int,
    pending: Sequence[str],
    approved_before: Mapping[str, int],
    variables: Mapping[str, Mapping[str, Any]],
    costs: Mapping[str, float] | None = None,
) -> Interpretation:
    """Read one answer against the items under review.

    Per-item verdicts win over ``approve_all``/``reject_all``, which decide the rest. An item
    whose new prompt is refused is not decided (not even by ``approve_all``): it stays under
    review, and nothing is paid for the refused prompt.

    Args:
        answer: The submitted form.
        round_number: The round (1-based).
        pending: Item ids under review in this round.
        approved_before: Items approved in an earlier round -> that round.
        variables: Each pending item's template variables (for a new prompt).
        costs: What each pending item's image cost (for the records and events).

    Returns:
        The verdicts and the problems.
    """
    costs = costs or {}
    result = Interpretation()
    under_review = set(pending)
    reviewer = (answer.reviewer or "").strip() or None
    if answer.approve_all and answer.reject_all:
        result.problems.append("approve all and reject all were both ticked: neither is applied")
    bulk: Verdict | None = None
    if answer.approve_all != answer.reject_all:
        bulk = "approved" if answer.approve_all else "rejected"
    if not answer.decisions and bulk is None:
        result.problems.append("the form decided nothing (no item and no approve/reject all)")
        return result

    counts: dict[str, int] = {}
    for decision in answer.decisions:
        counts[decision.item] = counts.get(decision.item, 0) + 1
    held: set[str] = set()
    for decision in answer.decisions:
        item = decision.item
        if item not in under_review:
            if item in approved_before:
                result.problems.append(
                    f"item {item!r} was already approved in round {approved_before[item]}: "
                    "its decision is kept"
                )
            else:
                result.problems.append(f"unknown item id {item!r}: not in this round")
            continue
        if counts[item] > 1:
            if item not in held:
                result.problems.append(f"item {item!r} is listed {counts[item]} times: undecided")
            held.add(item)
            continue
        note = (decision.note or "").strip() or None
        new_prompt = (decision.new_prompt or "").strip() or None
        if decision.decision == "approve":
            if new_prompt:
                result.problems.append(f"item {item!r} is approved: its new prompt is ignored")
            result.entries[item] = _entry(item, round_number, "approved", "reviewer", reviewer,
                                          note, None, costs)  # fmt: skip
            continue
        if new_prompt:
            try:
                rendered = render_new_prompt(new_prompt, variables.get(item, {}))
            except ValidationError as exc:
                result.problems.append(
                    f"item {item!r}: the new prompt is refused ({exc.rule}); it stays under review"
                )
                held.add(item)
                continue
            result.new_prompts[item] = rendered
        result.entries[item] = _entry(item, round_number, "rejected", "reviewer", reviewer,
                                      note, result.new_prompts.get(item), costs)  # fmt: skip
    if bulk is not None:
        by = "approve_all" if bulk == "approved" else "reject_all"
        for item in pending:
            if item not in result.entries and item not in held:
                result.entries[item] = _entry(item, round_number, bulk, by, reviewer, None, None,
                                              costs)  # fmt: skip
    result.entries = {item: result.entries[item] for item in pending if item in result.entries}
    return result


def _entry(
    item: str,
    round_number: int,
    decision: Verdict,
    by: str,
    reviewer: str | None,
    note: str | None,
    new_prompt: str | None,
    costs: Mapping[str, float],
) -> ReviewEntry:
    return ReviewEntry(
        item_id=item,
        round=round_number,
        decision=decision,
        by=by,
        reviewer=reviewer,
        note=note,
        new_prompt=(prompt_excerpt(new_prompt) or None) if new_prompt else None,
        cost_usd=round(costs.get(item, 0.0), 6),
    )


def timeout_verdicts(
    pending: Sequence[str], round_number: int, on_timeout: str, costs: Mapping[str, float]
) -> dict[str, ReviewEntry]:
    """The verdicts of a round nobody answered in time (``approve_all`` or ``reject_all``).

    Args:
        pending: Item ids under review.
        round_number: The round.
        on_timeout: ``approve_all`` or ``reject_all``.
        costs: What each item's image cost.

    Returns:
        One verdict per item, ``by="timeout"``.
    """
    decision: Verdict = "approved" if on_timeout == "approve_all" else "rejected"
    return {
        item: _entry(item, round_number, decision, "timeout", None, None, None, costs)
        for item in pending
    }


def pause_key(round_number: int, attempt: int, candidate_keys: Sequence[str]) -> str:
    """The Prefect pause key of one question: stable for the same round, attempt and images.

    On resume a suspended run starts again from the top; asking with the same key makes Prefect
    return the answer it stored instead of asking again.

    Args:
        round_number: The round.
        attempt: How many times this round has asked (1-based).
        candidate_keys: The :func:`verdict_key` of every image asked about.

    Returns:
        Lowercase letters, digits and dashes (what Prefect's input keys allow).
    """
    digest = hashlib.sha256("\0".join(sorted(candidate_keys)).encode()).hexdigest()[:16]
    return f"cometapi-review-r{round_number}-a{attempt}-{digest}"


def verdict_key(delivery_key: str) -> str:
    """Where the verdict on one image is kept: next to its delivery record.

    Args:
        delivery_key: The image's :func:`~prefect_cometapi.batching.ledger.delivery_key`.

    Returns:
        ``cometapi-review-<sha256>``.
    """
    return "cometapi-review-" + hashlib.sha256(f"review-v1\0{delivery_key}".encode()).hexdigest()


class VerdictRecord(BaseModel):
    """A person's verdict on one image, as stored.

    Attributes:
        entry: The verdict.
        flow_run_id: The run it was given in (a restart of that run replays it from Prefect).
        new_prompt: A rejected item's rendered new prompt, in full.
    """

    entry: ReviewEntry
    flow_run_id: str | None = None
    new_prompt: str | None = None


class VerdictRecordSerializer(Serializer):  # type: ignore[type-arg]
    """Verdict records as plain JSON, read back only as a :class:`VerdictRecord`.

    Attributes:
        type: ``cometapi-review``.
    """

    type: str = Field(default="cometapi-review", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        """Encode a verdict record.

        Args:
            obj: A :class:`VerdictRecord`.

        Returns:
            Its JSON.
        """
        return VerdictRecord.model_validate(obj).model_dump_json().encode()

    def loads(self, blob: bytes) -> VerdictRecord:
        """Decode what :meth:`dumps` wrote.

        Args:
            blob: The stored bytes.

        Returns:
            The record.
        """
        return VerdictRecord.model_validate_json(blob)


def verdict_store() -> Any:
    """The store of verdicts (the image task's result store, JSON records only).

    Returns:
        A Prefect ``ResultStore``.
    """
    return json_record_store(VerdictRecordSerializer())


def stored_verdict(key: str, flow_run_id: str | None, store: Any = None) -> VerdictRecord | None:
    """An earlier run's verdict on an image (this run's own are replayed by Prefect instead).

    Args:
        key: From :func:`verdict_key`.
        flow_run_id: The current flow run (its own records are ignored here).
        store: The store (default :func:`verdict_store`).

    Returns:
        The record, or ``None``.
    """
    record = _read(key, store or verdict_store())
    if record is None or (flow_run_id is not None and record.flow_run_id == flow_run_id):
        return None
    return record


def _read(key: str, store: Any) -> VerdictRecord | None:
    try:
        record = store.read(key).result
    except Exception:  # noqa: BLE001 - no record (or unreadable): not decided
        return None
    return record if isinstance(record, VerdictRecord) else None


def record_verdict(
    key: str,
    entry: ReviewEntry,
    flow_run_id: str | None,
    new_prompt: str | None,
    emit: Callable[[ReviewEntry], Any],
    store: Any = None,
) -> None:
    """Keep a person's verdict and emit its event, once (a replayed verdict is not re-emitted).

    Args:
        key: From :func:`verdict_key`.
        entry: The verdict.
        flow_run_id: The current flow run.
        new_prompt: A rejected item's rendered new prompt.
        emit: Emits the verdict's event.
        store: The store (default :func:`verdict_store`).
    """
    store = store or verdict_store()
    known = _read(key, store)
    if known is not None and known.flow_run_id == flow_run_id and known.entry == entry:
        return
    try:
        store.write(VerdictRecord(entry=entry, flow_run_id=flow_run_id, new_prompt=new_prompt),
                    key=key)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the decision stands; a re-run would ask again
        import logging

        logging.getLogger(__name__).warning("could not keep the verdict on %s: %s", key, exc)
    emit(entry)
