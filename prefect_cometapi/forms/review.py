"""The review gate's forms: the flow parameter (:class:`ReviewOptions`) and the reviewer's answer.

The answer is a Prefect ``RunInput`` (:class:`ReviewDecision`): when a batch waits for review,
Prefect saves its JSON schema and the UI renders it as the form of the "Resume" dialog; the
server validates what is submitted against that schema before the run resumes, so an answer
the schema refuses (an item id that is not in this round, a prompt over the API's limit, a
decision other than approve/reject) is refused in the form itself and never reaches the run.
:func:`decision_form` makes the round's subclass, whose ``item`` field is an enum of exactly
the item ids under review.

What a schema cannot say (an empty form, an item listed twice, a new prompt the template
sandbox refuses, an item approved in an earlier round) is checked by the run
(:mod:`prefect_cometapi.batching.review`), which says why and asks again, paying nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, create_model

from prefect_cometapi.client.rules import MAX_PROMPT_CHARS
from prefect_cometapi.forms.fields import optional

__all__ = ["ItemDecision", "ReviewDecision", "NO_REVIEW", "ReviewOptions", "decision_form"]

MAX_NOTE_CHARS = 2_000
"""Longest note a reviewer may leave on an item (or on the whole answer)."""
OnTimeout = Literal["approve_all", "reject_all", "fail"]
"""What happens when nobody answers a round in time."""


class ReviewOptions(BaseModel):
    """Stop after generation and wait for a person to approve or reject each image.

    A flow's default is ``ReviewOptions(enabled=False)`` (no review, the form's switch off);
    ``ReviewOptions(...)`` made in code is on.

    Attributes:
        enabled: Review before anything is upscaled or uploaded.
        timeout_s: Seconds a round waits for an answer.
        on_timeout: When nobody answers in time: ``approve_all`` delivers every image of the
            round, ``reject_all`` delivers none of them (regenerating nothing), ``fail`` ends
            the run Failed.
        max_rounds: Rounds of review at most: rejected images are regenerated (a new variant,
            or the reviewer's new prompt) and reviewed again until this many rounds have run;
            what is still rejected after the last round is not delivered.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        True, description="Wait for a person to approve each image before upscale and S3."
    )
    timeout_s: int = Field(
        86_400, ge=1, le=30 * 86_400, description="Seconds each round waits for an answer."
    )
    on_timeout: OnTimeout = Field(
        "fail",
        description="Nobody answered in time: approve_all, reject_all, or fail the run.",
    )
    max_rounds: int = Field(
        3, ge=1, le=10, description="Rounds of review (rejected images are regenerated)."
    )


class ItemDecision(BaseModel):
    """One image's verdict.

    Attributes:
        item: The item id (as in the gallery).
        decision: ``approve`` or ``reject``.
        new_prompt: For a rejected item: the prompt of its next image (a template like the
            batch's, rendered with the item's variables). Empty: the same prompt, a new variant.
        note: Why (shown in the decisions table).
    """

    model_config = ConfigDict(extra="forbid")

    item: str = Field(description="The item id, as in the gallery.")
    decision: Literal["approve", "reject"] = Field(description="approve or reject this image.")
    new_prompt: optional(str, {"type": "string", "maxLength": MAX_PROMPT_CHARS}) = Field(
        None,
        description="Rejected only: the next image's prompt (empty: same prompt, new variant).",
    )
    note: optional(str, {"type": "string", "maxLength": MAX_NOTE_CHARS}) = Field(
        None, description="Why (optional)."
    )


class ReviewDecision(RunInput):
    """The reviewer's answer to one round: per-item verdicts, or all at once.

    Items the answer leaves out stay under review (the run asks again for them). A per-item
    verdict wins over ``approve_all`` / ``reject_all`` for that item.

    Attributes:
        approve_all: Approve every image of this round not decided below.
        reject_all: Reject every image of this round not decided below.
        decisions: Per-item verdicts.
        reviewer: Who decided (shown in the decisions table).
    """

    approve_all: bool = Field(False, description="Approve every image not decided below.")
    reject_all: bool = Field(False, description="Reject every image not decided below.")
    decisions: list[ItemDecision] = Field(
        default_factory=list, description="Per item: approve or reject (with a new prompt)."
    )
    reviewer: optional(str, {"type": "string", "maxLength": 200}) = Field(
        None, description="Your name, for the decisions table."
    )


def decision_form(item_ids: list[str]) -> type[ReviewDecision]:
    """The round's form: :class:`ReviewDecision` whose item ids are an enum of ``item_ids``.

    Args:
        item_ids: The items under review in this round.

    Returns:
        A ``ReviewDecision`` subclass (its schema is what the UI renders and the server checks).
    """
    choice: Any = Literal[tuple(item_ids)]  # type: ignore[valid-type]
    item_model = create_model(
        "ItemDecision",
        __base__=ItemDecision,
        __module__=__name__,
        item=(choice, Field(description="The item id, as in the gallery.")),
    )
    return create_model(  # type: ignore[no-any-return]
        "ReviewDecision",
        __base__=ReviewDecision,
        __module__=__name__,
        decisions=(
            list[item_model],  # type: ignore[valid-type]
            Field(
                default_factory=list,
                description="Per item: approve or reject (with a new prompt).",
            ),
        ),
    )


NO_REVIEW = ReviewOptions(enabled=False)
"""The flows' default: no review gate."""
