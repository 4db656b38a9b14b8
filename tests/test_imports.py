"""The import graph, read from the source with `ast` (nothing is imported): no cycles between
modules or between packages, lazy imports inside functions included, and `core` stays the
functional core (it imports nothing from the shell or the UI libraries).

Imports under `if TYPE_CHECKING:` are left out: they never run, so they cannot form a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("core", "jobs", "app", "pages")
CORE_MUST_NOT_IMPORT = ("jobs", "app", "pages", "streamlit", "gradio")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node`, except the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child):
            yield from (n for orelse in child.orelse for n in (orelse, *runtime_nodes(orelse)))
            continue
        yield child
        yield from runtime_nodes(child)


def imported_names(name: str, path: Path) -> Iterator[str]:
    """The dotted names a module imports at run time (at the top or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (`from pkg import mod` counts as importing `pkg.mod`)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {t for t in imported_names(name, path) if t in known}
        # `from pkg import mod` also yields `pkg`; the submodule is the real dependency.
        graph[name] = {t for t in targets if not any(o.startswith(f"{t}.") for o in targets)} - {name}
    return graph


def package_of(module: str) -> str:
    """The unit of layering: `core.training.loop` -> `core.training`, `core.settings` stays itself."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_cycles_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        graph.setdefault(package_of(module), set()).update(package_of(t) for t in targets)
    for package, targets in graph.items():
        targets.discard(package)
    assert cycles(graph) == []


def test_core_imports_nothing_from_the_shell_or_the_ui() -> None:
    offending = []
    for name, path in modules().items():
        if name.split(".")[0] != "core":
            continue
        tree = ast.parse(path.read_text(), str(path))  # type-only imports count here: the layering is the point
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offending += [f"{name} imports {n}" for n in names if n.split(".")[0] in CORE_MUST_NOT_IMPORT]
    assert offending == []


def test_the_walk_counts_lazy_imports_and_skips_type_only_ones(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from core.evaluation.evaluator import Evaluator\n"
        "else:\n"
        "    import core.db\n"
        "def f():\n"
        "    from core.evaluation.inception import inception_features\n"
    )
    names = set(imported_names("core.evaluation.mod", source))
    assert {"core.evaluation.sibling", "core.db", "core.evaluation.inception"} <= names
    assert "core.evaluation.evaluator" not in names
