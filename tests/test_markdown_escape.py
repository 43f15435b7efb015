"""One escape for everything a run parameter can put in a markdown artifact (issue 23, item 1).

The Prefect UI renders artifact markdown, descriptions and every string table cell with
``marked`` (GFM). These tests pin that no payload survives as a link, an image, HTML or an
autolink; ``tests/reliability/test_hostile_parameters.py`` runs the same payloads through flows.
"""

from __future__ import annotations

import re

import pytest

from prefect_cometapi.reports.artifacts import rendered_table
from prefect_cometapi.text import markdown_text

PAYLOADS = [
    "![t](http://attacker/track.png)",
    "![t](https:/attacker/x.png)",
    "[click](javascript:alert(1))",
    "<img src=http://attacker/x.png>",
    "<http://attacker/x>",
    "see https://attacker.example/x",
    "visit www.attacker.example",
    "mail victim@attacker.example",
    "[a][r]\n\n[r]: http://attacker/x",
    "&#x6A;avascript:alert(1)",
    "x\u202egnp.exe\u200b\u0085\u2028y",
    "`code` *b* ~~s~~ | cell",
]
_UNESCAPED = re.compile(r"(?<!\\)[\[\]<>&`*|~]")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_markdown_construct_survives(payload: str) -> None:
    text = markdown_text(payload)
    assert not _UNESCAPED.search(text), text
    assert not re.search(r"(?i)(https?|ftp):|www\.|(?<!\[)@", text), text
    assert "\n" not in text and "\u202e" not in text and "\u200b" not in text
    assert "\u0085" not in text and "\u2028" not in text


def test_plain_values_are_unchanged() -> None:
    for value in ["s3://bucket/banners/2026-01-01/p_01-0a1b2c3d.png", "item-0001", "a lamp, 2x"]:
        assert markdown_text(value) == value


def test_the_escapes_render_back_to_the_same_characters_urls_defanged() -> None:
    shown = re.sub(r"\\(.)", r"\1", markdown_text("![t](http://a/b.png) <i> a@b.c www.x"))
    assert shown == "![t](http[:]//a/b.png) <i> a[@]b.c www[.]x"


def test_limit_cuts_before_escaping() -> None:
    assert markdown_text("[" * 10, limit=5) == "\\[\\[..."


def test_every_string_cell_of_a_table_is_escaped() -> None:
    rows = rendered_table([{"item": "![t](http://x/y.png)", "cost_usd": 0.5, "cached": True}])
    assert rows == [{"item": "!\\[t\\](http\\[:\\]//x/y.png)", "cost_usd": 0.5, "cached": True}]
