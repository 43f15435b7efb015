"""Prompt templating: rendering, every missing variable at once, the sandbox, files, limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prefect import flow

from prefect_cometapi.client.rules import MAX_PROMPT_CHARS
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.tasks.prompts import render_prompt
from prefect_cometapi.templates import render as prompts
from prefect_cometapi.templates import render_template

BANNER = """\
A product banner for {{ name | upper }}.
Features:
{% for f in features %}
- {{ f | title }}
{% endfor %}
Tags: {{ features | join(", ") }}
"""


def test_loops_and_filters_render() -> None:
    prompt = render_template(BANNER, {"name": "lumen", "features": ["solar power", "waterproof"]})
    assert prompt == (
        "A product banner for LUMEN.\n"
        "Features:\n"
        "- Solar Power\n"
        "- Waterproof\n"
        "Tags: solar power, waterproof"
    )


def test_inline_loop_and_result_is_stripped() -> None:
    template = "\n  {% for f in features %}- {{ f | title }}\n{% endfor %}  \n"
    assert render_template(template, {"features": ["a b", "c"]}) == "- A B\n- C"


def test_every_missing_variable_is_listed() -> None:
    with pytest.raises(ValidationError) as info:
        render_template("{{ zeta }} {{ name }} {{ alpha }} {% for x in items %}{{ x }}{% endfor %}",
                        {"name": "ok"})  # fmt: skip
    assert info.value.param == "variables"
    assert "missing template variables: alpha, items, zeta" in info.value.rule
    assert "name" not in info.value.rule.split(":")[1].split(";")[0]


def test_guarded_names_are_optional() -> None:
    template = "{% if discount is defined %}-{{ discount }}% {% endif %}{{ tag | default('new') }}"
    assert render_template(template) == "new"
    assert render_template(template, {"discount": 20, "tag": "hot"}) == "-20% hot"


def test_missing_attribute_is_a_typed_error() -> None:
    with pytest.raises(ValidationError) as info:
        render_template("Line one\nA {{ product.colour }} lamp", {"product": {"color": "red"}})
    assert info.value.param == "variables"
    assert "colour" in info.value.rule
    assert "line 2" in info.value.rule


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(ValidationError) as info:
        render_template("first line\nsecond line\n{% for x in %}{{ x }}{% endfor %}")
    assert info.value.param == "template"
    assert "line 3" in info.value.rule


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ items.append(1) }}",
    ],
)
def test_sandbox_refuses_attacks(attack: str) -> None:
    with pytest.raises(ValidationError) as info:
        render_template(attack, {"items": []})
    assert info.value.param == "template"
    assert "sandbox refuses" in info.value.rule


@pytest.mark.parametrize("blowup", ["{{ 'x' * 10**9 }}", "{{ 10 ** 1000000 }}"])
def test_sandbox_refuses_memory_blowups(blowup: str) -> None:
    with pytest.raises(ValidationError) as info:
        render_template(blowup)
    assert info.value.param == "template"
    assert "sandbox refuses" in info.value.rule


#: Templates that would take a worker's memory or time, each refused with the rule it breaks.
EXHAUSTING_TEMPLATES = {
    "center-filter": ("{{ 'x'|center(10**9) }}", "'center' filter with an argument"),
    "percent-width": ("{{ '%0999999999d' % 1 }}", "% format width"),
    "percent-star": ("{{ '%*d' % (999999999, 1) }}", "'\\*' width"),
    "str-ljust": ("{{ 'x'.ljust(10**9) }}", "str.ljust"),
    "str-format-width": ("{{ '{:>999999999}'.format(1) }}", "format width"),
    "str-format-nested": ("{{ '{:>{w}}'.format(1, w=999) }}", "nested"),
    "concat-doubling": (
        "{% set x = 'abcdefgh' %}" + "{% set x = x ~ x %}" * 40 + "{{ x }}",
        "'~' concatenation",
    ),
    "plus-doubling": ("{% set x = 'abcdefgh' %}" + "{% set x = x + x %}" * 40, "a sum"),
    "join-of-references": ("{{ (['x' * 90000] * 1000) | join }}", "repeated sequence"),
    "indent-growth": ("{{ ('\\n' * 90000) | indent(' ' * 90000) }}", "indented string"),
    "replace-growth": ("{{ ('a' * 90000) | replace('a', 'b' * 90000) }}", "replace"),
    "expandtabs": ("{{ ('\\t' * 90000).expandtabs(90000) }}", "expandtabs"),
    "slice-filter": ("{{ [1] | slice(10**9) | list }}", "'slice' filter"),
    "lipsum": ("{{ lipsum(100000) }}", "lorem ipsum"),
    "nested-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
        "loop iterations",
    ),
    # Macro calls are slow: on a loaded machine the time bound can come before the step bound.
    "macro-fan-out": (
        "{% macro a(n) %}{% if n %}{{ a(n-1) }}{{ a(n-1) }}{% endif %}{% endmacro %}{{ a(40) }}",
        "loop iterations, calls|render for longer than",
    ),
    "buffered-set-block": (
        "{% set x %}{% for i in range(100000) %}" + "y" * 10_000 + "{% endfor %}{% endset %}.",
        "output more than 1,000,000 characters",
    ),
    "str-of-nested-list": ("{% set l = [['x' * 1000] * 100] * 100 %}{{ l }}", "sequence"),
}


@pytest.mark.parametrize(
    ("template", "rule"), EXHAUSTING_TEMPLATES.values(), ids=EXHAUSTING_TEMPLATES.keys()
)
def test_templates_cannot_exhaust_the_worker(template: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        render_template(template)
    assert info.value.param == "template"
    assert "sandbox refuses" in info.value.rule
    assert re.search(rule, info.value.rule), info.value.rule


def test_a_100_kb_prompt_is_refused_while_rendering() -> None:
    with pytest.raises(ValidationError) as info:
        render_template("{{ 'x' * 50000 }}{{ 'y' * 50000 }}")
    assert info.value.param == "prompt" and "32,000" in info.value.rule


def test_memory_errors_become_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: object, **kwargs: object) -> str:
        raise MemoryError

    env = prompts._ENV
    monkeypatch.setitem(env.filters, "upper", exhausted)
    with pytest.raises(ValidationError) as info:
        render_template("{{ name | upper }} and more", {"name": "x"})
    assert info.value.param == "template" and "out of memory" in info.value.rule


def test_small_arithmetic_still_works() -> None:
    assert render_template("{{ 2 ** 10 }} {{ 'ab' * 2 }} {{ 3 * 4 }}") == "1024 abab 12"
    assert render_template("{{ 'a' ~ 'b' ~ 1 }} {{ '%05.1f' % 2.5 }} {{ '{:>4}'.format(7) }}") == (
        "ab1 002.5    7"
    )
    assert render_template("[{{ ['a', 'b'] | join(', ') | center(10) }}]") == "[   a, b   ]"


def test_file_template_from_path_and_str(tmp_path: Path) -> None:
    path = tmp_path / "banner.j2"
    path.write_text(BANNER, encoding="utf-8")
    variables = {"name": "x", "features": ["one"]}
    expected = render_template(BANNER, variables)
    assert render_template(path, variables) == expected
    assert render_template(str(path), variables) == expected
    md = tmp_path / "prompt.md"
    md.write_text("Hello {{ who }}", encoding="utf-8")
    assert render_template(str(md), {"who": "world"}) == "Hello world"


def test_file_template_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jinja"
    path.write_text("ok\n{% if %}", encoding="utf-8")
    with pytest.raises(ValidationError) as info:
        render_template(path)
    assert "line 2 of broken.jinja" in info.value.rule
    with pytest.raises(ValidationError) as info:
        render_template(tmp_path / "nope.j2")
    assert info.value.param == "template" and "does not exist" in info.value.rule
    with pytest.raises(ValidationError) as info:
        render_template(str(tmp_path / "nope.txt"))
    assert "does not exist" in info.value.rule


def test_sentence_ending_in_a_suffix_is_text() -> None:
    assert render_template("a poster of the notes.md") == "a poster of the notes.md"


def test_prompt_limit_is_exact() -> None:
    at_limit = "y" * MAX_PROMPT_CHARS
    assert render_template("  {{ p }}\n\n", {"p": at_limit}) == at_limit
    with pytest.raises(ValidationError) as info:
        render_template("{{ p }}", {"p": at_limit + "y"})
    assert info.value.param == "prompt"


def test_loop_over_the_limit_stops_early() -> None:
    with pytest.raises(ValidationError) as info:
        render_template(
            "{% for i in range(n) %}{{ word }} {% endfor %}", {"n": 90_000, "word": "z"}
        )
    assert info.value.param == "prompt"


def test_empty_render_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        render_template("{% if flag %}text{% endif %}   ", {"flag": False})
    assert info.value.param == "prompt"


def test_variables_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError) as info:
        render_template("{{ a }}", ["a"])  # type: ignore[arg-type]
    assert info.value.param == "variables"


def test_render_prompt_in_a_flow(tmp_path: Path) -> None:
    path = tmp_path / "p.j2"
    path.write_text("{{ subject | title }} at dawn", encoding="utf-8")

    @flow
    def make_prompts() -> list[str]:
        return [
            render_prompt("A {{ subject }} on {{ ground }}", {"subject": "fox", "ground": "snow"}),
            render_prompt(path, {"subject": "red fox"}),
        ]

    assert make_prompts() == ["A fox on snow", "Red Fox at dawn"]


def test_render_prompt_failure_fails_the_flow() -> None:
    @flow
    def broken() -> str:
        return render_prompt("{{ a }} {{ b }}", {})

    with pytest.raises(ValidationError) as info:
        broken()
    assert "a, b" in info.value.rule
