"""The shape of the code: no import circle, short functions, files that do one job (boundaries: test_import_boundaries).

Read from the source with ``ast`` (nothing is imported), so these are rule-level tests of the fast lane.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("shop", "similarity", "workers")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 500
# Files allowed past MAX_FILE_LINES, each with the one job it does.
LONG_FILES: dict[str, str] = {}


def modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name, migrations left out."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            if "migrations" in relative.parts:
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            # "from shop.services import enqueue" imports the module shop.services.enqueue.
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        # The nearest enclosing project module: "shop.models.Product" is shop.models.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    graph = {name: imported_modules(name, path, known) for name, path in found.items()}
    # Importing a package runs its __init__: an edge to "shop" means nothing beyond it.
    return {name: {t for t in targets if t not in PACKAGES} for name, targets in graph.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def functions(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            yield f"{node.name} (line {node.lineno})", node.end_lineno - node.lineno + 1


def test_it_finds_a_circle_when_there_is_one() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_it_reads_function_level_and_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "tasks.py"
    module.write_text("def f():\n    from shop.services import enqueue\n    from .models import Product\n")
    known = {"shop.services.enqueue", "shop.models", "shop.tasks"}

    assert imported_modules("shop.tasks", module, known) == {"shop.services.enqueue", "shop.models"}


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert circles(import_graph()) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_function_is_longer_than_a_screen(name: str) -> None:
    long = [
        f"{function}: {lines} lines" for function, lines in functions(modules()[name]) if lines > MAX_FUNCTION_LINES
    ]
    assert not long, f"{name}: split these: {long}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_a_long_file_is_one_named_job(name: str) -> None:
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_FILE_LINES or name in LONG_FILES, f"{name} has {lines} lines: split it by job"
