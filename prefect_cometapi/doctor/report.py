"""The doctor's output: one line per check (or JSON), secrets scrubbed, and the exit code."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from prefect_cometapi.doctor.result import CheckResult, Status
from prefect_cometapi.errors import redact

__all__ = ["exit_code", "render_json", "render_text", "scrub"]

_WIDTH = max(len(s.value) for s in Status)


def exit_code(results: Iterable[CheckResult]) -> int:
    """``1`` when any check found a problem, else ``0`` (warnings and skipped checks pass).

    Args:
        results: The checks' results.

    Returns:
        The exit status.
    """
    return 1 if any(r.status is Status.PROBLEM for r in results) else 0


def _scrub_value(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {k: _scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, secrets) for v in value]
    return value


def scrub(results: Iterable[CheckResult], secrets: Iterable[str | None]) -> list[CheckResult]:
    """The results with every secret (and anything shaped like a key) replaced by ``***``.

    The checks never put a key in their results; this is the last guard before printing.

    Args:
        results: The checks' results.
        secrets: Exact values to remove (the API key in use, ``COMETAPI_KEY``...).

    Returns:
        Scrubbed copies.
    """
    known = [s for s in secrets if s]
    return [
        replace(
            r,
            message=redact(r.message, *known),
            fix=redact(r.fix, *known),
            details=_scrub_value(r.details, known),
        )
        for r in results
    ]


def _summary(results: Sequence[CheckResult]) -> str:
    problems = sum(r.status is Status.PROBLEM for r in results)
    warnings = sum(r.status is Status.WARNING for r in results)
    if not problems and not warnings:
        return "All checks passed."
    counts = []
    if problems:
        counts.append(f"{problems} problem{'s' * (problems != 1)}")
    if warnings:
        counts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    advice = (
        "fix the problems before the first run"
        if problems
        else "no problem; read the warnings before the first run"
    )
    return f"{', '.join(counts)}: {advice}."


def render_text(results: Sequence[CheckResult], version: str) -> str:
    """The report as a person reads it: one line per check, its fix after ``->``.

    Args:
        results: The (scrubbed) results.
        version: The package version shown in the heading.

    Returns:
        The text, ending in a newline.
    """
    name_width = max((len(r.name) for r in results), default=0)
    lines = [f"prefect-cometapi {version} doctor"]
    for r in results:
        line = f"{r.status.value:<{_WIDTH}}  {r.name:<{name_width}}  {r.message}"
        if r.fix and r.status is not Status.OK:
            line += f" -> fix: {r.fix}"
        lines.append(line)
    lines.append(_summary(results))
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[CheckResult], version: str) -> str:
    """The report for programs: ``ok``, ``exit_code``, counts and every check.

    Args:
        results: The (scrubbed) results.
        version: The package version.

    Returns:
        One JSON document, ending in a newline.
    """
    document = {
        "version": version,
        "ok": exit_code(results) == 0,
        "exit_code": exit_code(results),
        "problems": sum(r.status is Status.PROBLEM for r in results),
        "warnings": sum(r.status is Status.WARNING for r in results),
        "checks": [r.to_json() for r in results],
    }
    return json.dumps(document, indent=2) + "\n"
