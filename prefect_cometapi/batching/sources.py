"""Where a flow's inputs come from: credentials, templates and batch items (list, CSV, JSONL).

Everything here is plain, deterministic Python: the same parameters give the same prompts and
item ids, so a re-run hits the image cache for every finished item.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_cometapi.allowlist import EXAMPLES_DIR
from prefect_cometapi.errors import ValidationError

__all__ = [
    "EXAMPLE_ITEMS",
    "EXAMPLE_TEMPLATE",
    "Item",
    "build_items",
    "check_concurrency_limits",
    "parse_items",
    "read_text",
    "template_source",
]

EXAMPLE_TEMPLATE = EXAMPLES_DIR / "product_banner.j2"
EXAMPLE_ITEMS = EXAMPLES_DIR / "products.jsonl"
MAX_ITEMS = 10_000
_REMOTE = ("s3://", "http://", "https://")
_ID_RE = re.compile(r"[^A-Za-z0-9._-]+")


def check_concurrency_limits(
    concurrency_limit: str | None, rate_limit: str | None, spend_limit: str | None = None
) -> None:
    """Refuse a run whose named global concurrency limits do not exist on the Prefect server.

    Prefect refuses to acquire slots of a missing limit, so without this check every item of a
    batch would fail one by one and the run would still end Completed, with nothing delivered.

    Args:
        concurrency_limit: The ``concurrency_limit`` parameter (a limit's name), or ``None``.
        rate_limit: The ``rate_limit`` parameter (a limit with slot decay), or ``None``.
        spend_limit: The ``spend_limit`` parameter (a spend limit, with slot decay), or ``None``.

    Raises:
        ValidationError: ``param`` is the parameter naming a missing limit, or a ``rate_limit``
            without slot decay.
    """
    named = [
        ("concurrency_limit", concurrency_limit),
        ("rate_limit", rate_limit),
        ("spend_limit", spend_limit),
    ]
    named = [(param, name) for param, name in named if name]
    if not named:
        return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for param, name in named:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                raise ValidationError(
                    param,
                    f"no Prefect global concurrency limit is named {name!r}; create it first "
                    f"(prefect gcl create {name} --limit N"
                    + (" --slot-decay-per-second R" if param != "concurrency_limit" else "")
                    + ") or leave the parameter empty",
                ) from None
            if param != "concurrency_limit" and not limit.slot_decay_per_second:
                raise ValidationError(
                    param,
                    f"the global concurrency limit {name!r} has no slot decay, so it cannot be "
                    "used as a rate limit; give it --slot-decay-per-second or use it as "
                    "concurrency_limit",
                )


def read_text(source: str | Path, endpoint_url: str | None = None, param: str = "source") -> str:
    """Read a small text file from a local path, an ``s3://`` URI or an ``http(s)://`` URL.

    Args:
        source: Where to read.
        endpoint_url: S3-compatible endpoint for ``s3://`` URIs.
        param: The parameter name errors blame.

    Returns:
        The text.
    """
    from prefect_cometapi.inputs.fetch import load_text

    return load_text(source, endpoint_url=endpoint_url, param=param)


def template_source(template: str, endpoint_url: str | None = None) -> str:
    """Template text for ``render_template``: remote templates are fetched, others kept as given.

    Args:
        template: Template text, a local file path, an ``s3://`` URI or a URL.
        endpoint_url: S3-compatible endpoint for ``s3://`` URIs.

    Returns:
        Template text, or the local path (``render_template`` reads local files itself).
    """
    if isinstance(template, str) and template.strip().lower().startswith(_REMOTE):
        return read_text(template.strip(), endpoint_url, param="template")
    return template


@dataclass(frozen=True)
class Item:
    """One batch item: a stable id and the variables of the template.

    Attributes:
        item_id: From the ``id_field`` of the variables, or ``item-0001``...; safe in S3 keys.
        index: Position in the batch (0-based).
        variables: The template variables.
    """

    item_id: str
    index: int
    variables: dict[str, Any]


def parse_items(text: str, name: str, limit: int = MAX_ITEMS) -> list[dict[str, Any]]:
    """Parse CSV, JSONL or a JSON list of objects, one row at a time, stopping past ``limit``.

    Rows are counted while they are parsed, so a file of millions of tiny rows is refused after
    ``limit + 1`` of them, without building the rest.

    Args:
        text: The file's text.
        name: Its name or URI (the extension picks the format; otherwise the content does).
        limit: The most rows accepted.

    Returns:
        One dict of variables per row/line.

    Raises:
        ValidationError: ``param="items_file"`` for a malformed file; ``param="items"`` when it
            holds more than ``limit`` rows.
    """
    lower = name.lower().split("?", 1)[0]
    stripped = text.lstrip()
    if not stripped:
        return []
    if lower.endswith(".csv") or not (
        lower.endswith((".jsonl", ".json", ".ndjson")) or stripped[:1] in "[{"
    ):
        rows = _capped(_csv_rows(text, name), limit)
    elif lower.endswith(".json") or stripped.startswith("["):
        rows = _capped(_json_list_rows(stripped, name), limit)
    else:
        rows = _capped(_jsonl_rows(text, name), limit)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ValidationError("items_file", f"{name}: item {number} is not a JSON object")
    return rows


def _capped(rows: Iterator[Any], limit: int) -> list[Any]:
    kept = []
    for row in rows:
        if len(kept) == limit:
            raise ValidationError(
                "items", f"at most {MAX_ITEMS:,} items per batch; the file has more (stopped)"
            )
        kept.append(row)
    return kept


def _csv_rows(text: str, name: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(_lines(text))
    try:
        for row in reader:
            if None in row:
                raise ValidationError(
                    "items_file",
                    f"{name}: line {reader.line_num} has more cells than the header "
                    f"({len(reader.fieldnames or [])})",
                )
            # A short row leaves its last variables missing (not the text "None"), so the
            # template refuses the item unless it gives them a default.
            yield {k: v for k, v in row.items() if v is not None}
    except csv.Error as exc:
        raise ValidationError("items_file", f"{name}: line {reader.line_num}: {exc}") from None


def _jsonl_rows(text: str, name: str) -> Iterator[Any]:
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        yield _json_value(line, name, f"line {number} is not valid JSON")


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their line ends, one at a time (no copy of the whole text)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _json_list_rows(text: str, name: str) -> Iterator[Any]:
    """The elements of a JSON list, decoded one by one."""
    if not text.startswith("["):
        raise ValidationError("items_file", f"{name}: a JSON file must hold a list of objects")
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 1)
    if text.startswith("]", pos):
        end = pos + 1
    else:
        while True:
            try:
                row, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise ValidationError("items_file", f"{name}: invalid JSON: {exc}") from None
            except RecursionError:
                raise ValidationError("items_file", f"{name}: JSON nested too deeply") from None
            yield row
            pos = _skip_space(text, pos)
            if text.startswith("]", pos):
                end = pos + 1
                break
            if not text.startswith(",", pos):
                raise ValidationError(
                    "items_file", f"{name}: invalid JSON: expected ',' or ']' at char {pos}"
                )
            pos = _skip_space(text, pos + 1)
    if text[end:].strip():
        raise ValidationError("items_file", f"{name}: invalid JSON: extra data after the list")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_value(text: str, name: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("items_file", f"{name}: {what}: {exc.msg}") from None
    except RecursionError:
        raise ValidationError("items_file", f"{name}: {what}: nested too deeply") from None


def _clean_id(value: Any) -> str:
    return _ID_RE.sub("-", str(value)).strip("-.")[:64]


def build_items(
    items: Sequence[Mapping[str, Any]] | None,
    items_file: str | None,
    id_field: str = "id",
    endpoint_url: str | None = None,
) -> list[Item]:
    """The batch's items, in order, with stable unique ids.

    Args:
        items: Variable sets given in the parameters.
        items_file: A CSV/JSONL/JSON file (local path, ``s3://`` URI or URL); appended after
            ``items``.
        id_field: The variable holding each item's id (missing: ``item-0001``...).
        endpoint_url: S3-compatible endpoint for an ``s3://`` file.

    Returns:
        The items.

    Raises:
        ValidationError: No items, too many, or a malformed file.
    """
    rows: list[Mapping[str, Any]] = list(items or [])
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise ValidationError("items", f"item {number} must be a mapping of variables", row)
    if len(rows) > MAX_ITEMS:
        raise ValidationError("items", f"at most {MAX_ITEMS:,} items per batch", len(rows))
    if items_file:
        text = read_text(items_file, endpoint_url, "items_file")
        rows.extend(parse_items(text, items_file, limit=MAX_ITEMS - len(rows)))
    if not rows:
        raise ValidationError("items", "give at least one item (items or items_file)")
    seen: set[str] = set()
    result: list[Item] = []
    for index, row in enumerate(rows):
        item_id = _clean_id(row.get(id_field, "")) or f"item-{index + 1:04d}"
        if item_id in seen:
            item_id = f"{item_id}-{index + 1}"
        seen.add(item_id)
        result.append(Item(item_id=item_id, index=index, variables=dict(row)))
    return result
