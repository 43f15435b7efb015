"""Items files are parsed as a stream: the item cap applies while parsing, not after."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from prefect_cometapi.batching.sources import MAX_ITEMS, build_items, parse_items
from prefect_cometapi.errors import ValidationError

#: The bytes of a file of tiny rows: 10 MB, about 2.5 million rows.
TEN_MB = 10 * 1024 * 1024


def tiny_rows(kind: str) -> str:
    """About 10 MB of the smallest rows each format allows."""
    if kind == "csv":
        return "a\n" + "1\n" * (TEN_MB // 2)
    if kind == "jsonl":
        return "{}\n" * (TEN_MB // 3)
    return "[" + ",".join(["{}"] * (TEN_MB // 3)) + "]"


@pytest.mark.parametrize(
    ("kind", "name"), [("csv", "x.csv"), ("jsonl", "x.jsonl"), ("json", "x.json")]
)
def test_millions_of_tiny_rows_are_refused_after_the_cap_with_flat_memory(
    kind: str, name: str
) -> None:
    text = tiny_rows(kind)
    assert len(text) >= TEN_MB - 8
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as info:
            parse_items(text, name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.param == "items"
    assert f"at most {MAX_ITEMS:,} items" in info.value.rule
    # 10,001 small dicts and the parser's buffers, not 2.5 million rows (hundreds of MB).
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while parsing"


def test_the_cap_counts_the_items_given_as_a_parameter_too(tmp_path: object) -> None:
    rows = [{"id": str(i)} for i in range(MAX_ITEMS - 1)]
    assert len(parse_items("id\nx\n", "f.csv", limit=1)) == 1
    with pytest.raises(ValidationError) as info:
        parse_items("id\nx\ny\n", "f.csv", limit=1)
    assert info.value.param == "items"
    with pytest.raises(ValidationError):
        build_items([*rows, {"id": "a"}, {"id": "b"}], None)


@pytest.mark.parametrize(
    ("text", "name", "rule"),
    [
        ("[" * 100_000 + "]" * 100_000, "deep.json", "nested too deeply|invalid JSON"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000 + "\n", "deep.jsonl", "nested too deeply"),
        ('[{"a": 1}] trailing', "x.json", "extra data"),
        ('[{"a": 1} {"b": 2}]', "x.json", "expected ',' or ']'"),
        ('{"a": 1}', "x.json", "list of objects"),
    ],
    ids=["deep-json", "deep-jsonl", "trailing", "missing-comma", "object"],
)
def test_malformed_or_pathological_json_is_a_typed_error(text: str, name: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule) as info:
        parse_items(text, name)
    assert info.value.param == "items_file"


def test_streamed_parsing_gives_the_same_rows() -> None:
    rows = [{"id": "a", "n": 1}, {"id": "b", "tags": ["x", "y"]}]
    assert parse_items(json.dumps(rows), "x.json") == rows
    assert parse_items(" [ ] ", "x.json") == []
    assert parse_items("\n".join(json.dumps(r) for r in rows) + "\n\n", "x.jsonl") == rows
    assert parse_items("id,name\na,A\nb,B\n", "x.csv") == [
        {"id": "a", "name": "A"},
        {"id": "b", "name": "B"},
    ]
