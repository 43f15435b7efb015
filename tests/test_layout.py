"""The package's shape: few flat modules, small files, thin flows, a short public surface.

What issue 18 asked for, kept from drifting back: the flat part of ``prefect_cometapi`` holds at
most eight modules (the rest live in subpackages named for what they hold), no source file
outside the tests grows past about 450 lines, ``flows/`` holds flow entrypoints only, the lower
layers never import the upper ones, nothing imports the demo, and every name a subpackage lists
in ``__all__`` is used somewhere else (a module, a test, the README or the docs).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("prefect_cometapi", "tasks", "flows", "blocks")
#: The documented faces: what users import; their ``__all__`` is the public API itself.
FACES = {
    "prefect_cometapi/__init__.py",
    "tasks/__init__.py",
    "flows/__init__.py",
    "blocks/__init__.py",
    "prefect_cometapi/emulator/__init__.py",
}
MAX_FLAT_MODULES = 8
MAX_LINES = 450
#: Each does one job and may stay longer: the error catalogue, the emulator's drawing.
LONG_ALLOWED = {"prefect_cometapi/errors.py", "prefect_cometapi/emulator/drawing.py"}
#: The lower layers and what they must not import.
LOWER = ("client", "inputs", "caching", "s3", "billing", "templates")
UPPER = ("orchestration", "batching", "reports", "forms", "doctor", "demo", "tasks", "flows")
#: Known debt, each named: the batch budget estimates from the form's ImageOptions and asks the
#: image task's result store which prompts are cached (both live above billing).
KNOWN_UPWARD = {"prefect_cometapi/billing/budget.py"}


def _sources() -> list[Path]:
    found = []
    for folder in (*PACKAGE_DIRS, "bench", "tools", "deployments"):
        found.extend(p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)
    return sorted(found)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_flat_package_holds_few_modules() -> None:
    flat = sorted(p.name for p in (ROOT / "prefect_cometapi").glob("*.py"))
    assert len(flat) <= MAX_FLAT_MODULES, f"flat modules: {flat}; move some into a subpackage"


@pytest.mark.parametrize("path", _sources(), ids=_rel)
def test_no_source_file_is_long(path: Path) -> None:
    if _rel(path) in LONG_ALLOWED:
        return
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{_rel(path)} has {lines} lines: split it by job"


def test_flows_holds_only_flow_entrypoints() -> None:
    for path in sorted((ROOT / "flows").glob("*.py")):
        if path.name in ("__init__.py", "costs.py"):  # costs.py: cost_summary, a flow's block
            continue
        tree = ast.parse(path.read_text())
        flows = [
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any("flow" in ast.unparse(d) for d in node.decorator_list)
        ]
        assert flows, f"{_rel(path)} defines no flow: its code belongs in a subpackage"


def test_lower_layers_never_import_upper_ones_and_nothing_imports_the_demo() -> None:
    wrong = []
    for path in _sources():
        rel = _rel(path)
        if not rel.startswith("prefect_cometapi/"):
            continue
        part = rel.split("/")[1]
        imported = {
            n.split(".")[1]
            for n in _imports(path)
            if n.startswith("prefect_cometapi.") and n.count(".") >= 1
        }
        if part in LOWER and rel not in KNOWN_UPWARD:
            wrong += [f"{rel} imports {u}" for u in imported if u in UPPER]
        if part not in ("demo", "cli.py"):
            wrong += [f"{rel} imports the demo" for u in imported if u == "demo"]
    assert wrong == []


def _all_names(path: Path) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [e.value for e in node.value.elts]  # type: ignore[attr-defined]
    return []


def test_every_listed_name_is_used_outside_its_module() -> None:
    """``__all__`` is an API boundary: a subpackage lists what others use, nothing more."""
    readers = [*_sources(), *(ROOT / "tests").rglob("*.py"), ROOT / "README.md"]
    readers += [*(ROOT / "docs").rglob("*.md"), *(ROOT / "deployments").rglob("*.yaml")]
    texts = {p: p.read_text() for p in readers if p.is_file()}
    unused = []
    for path in _sources():
        rel = _rel(path)
        if rel in FACES or not rel.startswith(PACKAGE_DIRS):
            continue
        for name in _all_names(path):
            word = re.compile(rf"\b{re.escape(name)}\b")
            if not any(word.search(text) for other, text in texts.items() if other != path):
                unused.append(f"{rel}: {name}")
    assert unused == [], "listed in __all__ but used nowhere else: " + ", ".join(unused)
