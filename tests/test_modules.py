"""Module layout: telemetry modules a newcomer can read in one sitting, and no import circle in the package.

Imports are read from the source (``ast``), including those inside functions (a lazy import still
ties two modules together); imports under ``if TYPE_CHECKING:`` are left out (they never run). One
pattern is allowed: a package's factory importing its own adapter lazily (``nerops.registry`` picks
``mlflow_registry`` by setting, and the adapter implements the package's port).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nerops"
MAX_TELEMETRY_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _lazy(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return True
    return False


def imports_of(path: Path, known: set[str], name: str | None = None) -> set[str]:
    """The package's modules that ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    name = name or module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or _type_checking_only(node, parents):
            continue
        targets: set[str] = set()
        if isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names}
        elif node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                targets.add(sub if sub in known else node.module)
        if path.name == "__init__.py" and _lazy(node, parents):  # a package's factory loading its own adapter
            targets = {target for target in targets if not target.startswith(f"{name}.")}
        found |= targets
    return {module for module in found if module in known and module != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_telemetry_module_is_longer_than_about_300_lines():
    lengths = {
        path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (PACKAGE / "telemetry").glob("*.py")
    }
    assert len(lengths) >= 10, lengths  # the split happened
    assert {name: n for name, n in lengths.items() if n > MAX_TELEMETRY_LINES} == {}


def test_the_package_has_no_import_circle():
    known = set(modules())
    graph = {name: imports_of(path, known) for name, path in modules().items()}
    assert "nerops.model_scores" in graph["nerops.lifecycle"]  # the graph sees real imports
    assert "nerops.lifecycle" in graph["nerops.reporting"]  # ... lazy ones inside functions too
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": {"b"}, "b": {"a"}}, True),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, has_cycle):
    assert (find_cycle(graph) is not None) == has_cycle


def test_the_import_reader_sees_lazy_imports_and_skips_type_checking_ones(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nerops import ledger\n"
        "def f():\n    from nerops.telemetry import store\n    import nerops.gate\n"
    )
    known = {"nerops.ledger", "nerops.telemetry", "nerops.telemetry.store", "nerops.gate"}
    assert imports_of(source, known, "m") == {"nerops.telemetry.store", "nerops.gate"}
