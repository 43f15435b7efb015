"""The review gate's artifacts: the gallery a reviewer judges, and the table of every verdict.

Everything a reviewer typed (notes, names, new prompts) and every prompt is escaped before it
goes into markdown; the decisions table is a table artifact (cells are text, not markdown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_cometapi.reports.artifacts import artifact_key, rendered_table
from prefect_cometapi.reports.outcomes import ReviewEntry
from prefect_cometapi.text import markdown_text as _md
from prefect_cometapi.text import usd

__all__ = ["ReviewTile", "publish_review", "review_markdown"]

RESUME_EXAMPLE = (
    'resume_flow_run(flow_run_id, run_input={"decisions": [{"item": "ITEM", '
    '"decision": "reject", "new_prompt": "..."}], "approve_all": True})'
)
"""The one line of code that answers a round (``from prefect.flow_runs import resume_flow_run``)."""


@dataclass
class ReviewTile:
    """One image set under review, as the gallery shows it.

    Attributes:
        item_id: The item.
        prompt: Its prompt (left out when prompts are private).
        previews: ``data:`` URIs of its images' thumbnails.
        sizes: ``WxH`` of each image.
        cost_usd: What its generation cost this run.
        cached: It came from the cache.
        variant: The request's variant (regenerations bump it).
    """

    item_id: str
    prompt: str | None
    previews: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    cost_usd: float = 0.0
    cached: bool = False
    variant: int = 0


def review_markdown(
    title: str,
    round_number: int,
    max_rounds: int,
    tiles: Sequence[ReviewTile],
    problems: Sequence[str] = (),
    timeout_s: int | None = None,
    on_timeout: str | None = None,
) -> str:
    """The gallery of one round: each item's previews, id, prompt, sizes and cost.

    Args:
        title: The heading.
        round_number: The round.
        max_rounds: Rounds at most.
        tiles: The items under review.
        problems: What the run could not accept in the previous answer (shown first).
        timeout_s: Seconds the round waits.
        on_timeout: What happens then.

    Returns:
        Markdown.
    """
    total = sum(t.cost_usd for t in tiles)
    lines = [
        f"# {_md(title)}: review round {round_number} of {max_rounds}",
        "",
        f"**{len(tiles)} item(s) to review**, generated for {usd(total)} in this run. "
        "Open the run and press **Resume** to answer: per item approve or reject (with a new "
        "prompt or a note), or approve all / reject all. Items you leave out are asked again.",
        "",
        f"From code: `{RESUME_EXAMPLE}`",
        "",
    ]
    if timeout_s is not None:
        lines += [f"_Unanswered after {timeout_s} s: {_md(on_timeout or 'fail')}._", ""]
    if problems:
        lines += ["## Not accepted from the last answer", ""]
        lines += [f"- {_md(problem)}" for problem in problems]
        lines.append("")
    for tile in tiles:
        lines += [f"## {_md(tile.item_id)}", ""]
        for number, preview in enumerate(tile.previews, start=1):
            label = tile.item_id + (f" ({number})" if len(tile.previews) > 1 else "")
            lines += [f"![{_md(label)}]({preview})", ""]
        facts = [", ".join(tile.sizes) or "no image", usd(tile.cost_usd)]
        if tile.cached:
            facts.append("cached")
        if tile.variant:
            facts.append(f"variant {tile.variant}")
        lines += [" · ".join(facts), ""]
        if tile.prompt is not None:
            lines += [f"> {_md(tile.prompt)}", ""]
    return "\n".join(lines)


def decisions_rows(entries: Sequence[ReviewEntry]) -> list[dict[str, object]]:
    """Who decided what: one row per verdict.

    Args:
        entries: The verdicts, in order.

    Returns:
        Rows (string cells escaped for the UI) with ``item``, ``round``, ``decision``, ``by``,
        ``reviewer``, ``note``, ``new_prompt`` and ``cost_usd``.
    """
    return rendered_table(
        [
            {
                "item": e.item_id,
                "round": e.round,
                "decision": e.decision,
                "by": e.by,
                "reviewer": e.reviewer or "",
                "note": e.note or "",
                "new_prompt": e.new_prompt or "",
                "cost_usd": round(e.cost_usd, 6),
            }
            for e in entries
        ]
    )


def publish_review(flow_name: str, markdown: str | None, entries: Sequence[ReviewEntry]) -> None:
    """Publish the round's gallery and/or the decisions table.

    Args:
        flow_name: The flow's name (for the keys ``cometapi-<flow>-review`` and
            ``cometapi-<flow>-review-decisions``).
        markdown: The gallery (``None``: only the table).
        entries: The verdicts so far (empty: no table).
    """
    if markdown is not None:
        create_markdown_artifact(
            markdown=markdown,
            key=artifact_key(flow_name, "review"),
            description="Images waiting for review",
        )
    if entries:
        approved = sum(1 for e in entries if e.decision == "approved")
        create_table_artifact(
            table=decisions_rows(entries),
            key=artifact_key(flow_name, "review-decisions"),
            description=f"{len(entries)} verdict(s): {approved} approved, "
            f"{len(entries) - approved} rejected",
        )
