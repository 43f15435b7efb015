"""The package's modules import one another without cycles, lazy imports included."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import prefect_cometapi

PACKAGE = "prefect_cometapi"
#: Where each part of the package lives in the repository (pyproject's package-dir mapping).
ROOTS = {
    PACKAGE: Path(prefect_cometapi.__file__).parent,
    f"{PACKAGE}.blocks": Path(importlib.import_module(f"{PACKAGE}.blocks").__file__).parent,
    f"{PACKAGE}.tasks": Path(importlib.import_module(f"{PACKAGE}.tasks").__file__).parent,
    f"{PACKAGE}.flows": Path(importlib.import_module(f"{PACKAGE}.flows").__file__).parent,
}


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found: dict[str, Path] = {}
    for prefix, root in ROOTS.items():
        found[prefix] = root / "__init__.py"
        for info in pkgutil.walk_packages([str(root)], prefix=f"{prefix}."):
            name = info.name
            if any(name.startswith(f"{p}.") for p in ROOTS if p != prefix and p != PACKAGE):
                continue
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.origin:
                found[name] = Path(spec.origin)
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {t for t in targets if t in known and t != name}


def test_no_import_cycles() -> None:
    found = modules()
    assert f"{PACKAGE}.s3.upload" in found and f"{PACKAGE}.flows.fanout" in found
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    cycles = strongly_connected(graph)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of two or more modules that import one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
