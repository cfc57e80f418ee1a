"""The composition root stays a root: no part imports `shadowdns.app`, and no module
import circle forms (issue 14: the health, control and API parts imported the root back).

Every import statement counts, wherever it is: at the top, under `TYPE_CHECKING` and
inside functions, because each one is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import shadowdns

ROOT = "shadowdns.app"
# The command line runs the root; nothing else may import it.
MAY_IMPORT_ROOT = frozenset({"shadowdns.resolver.commands", "shadowdns.demo"})
SRC = Path(shadowdns.__file__).parent


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(module: str, source: str, is_package: bool = False) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything `source` imports, names from a package included
    as `package.name` (they may be submodules); relative imports made absolute."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                package = module.split(".")
                if not is_package:
                    package.pop()
                package = package[:len(package) - node.level + 1]
                target = ".".join(package + ([target] if target else []))
            yield target, node.lineno
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


def import_graph(base: Path) -> dict[str, dict[str, tuple[Path, int]]]:
    """module -> {module of the package it imports: (file, line of the first import)}."""
    files = {module_name(p, base): p for p in sorted(base.rglob("*.py"))}
    graph: dict[str, dict[str, tuple[Path, int]]] = {}
    for name, path in files.items():
        edges: dict[str, tuple[Path, int]] = {}
        for target, line in imported(name, path.read_text(), path.name == "__init__.py"):
            if target in files and target != name:
                edges.setdefault(target, (path, line))
        graph[name] = edges
    return graph


def cycles(graph: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of two or more
    modules (Tarjan, iterative: the package has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, tuple[Path, int]]]:
    return import_graph(SRC)


def test_only_the_command_line_imports_the_composition_root(
        graph: dict[str, dict[str, tuple[Path, int]]]) -> None:
    """Parts get what they need passed down (`HealthInputs`, `ControlInputs`, `ApiService`);
    only the CLI entry points that run the server import `shadowdns.app`."""
    assert ROOT in graph
    offenders = sorted(f"{path}:{line}: {module} imports {ROOT}"
                       for module, edges in graph.items() if module not in MAY_IMPORT_ROOT
                       for target, (path, line) in edges.items() if target == ROOT)
    assert offenders == []
    assert {m for m, edges in graph.items() if ROOT in edges} == MAY_IMPORT_ROOT


def test_no_module_import_circle(graph: dict[str, dict[str, tuple[Path, int]]]) -> None:
    """No set of modules imports itself round, not even through `TYPE_CHECKING`."""
    report = [f"{path}:{line}: {a} imports {b}"
              for component in cycles(graph) for a in component for b in component
              if b in graph[a] for path, line in [graph[a][b]]]
    assert report == [], "import circle(s):\n" + "\n".join(report)


@pytest.mark.parametrize(("module", "source", "is_package", "expected"), [
    ("shadowdns.api.metrics", "import shadowdns.app\n", False, {"shadowdns.app"}),
    ("shadowdns.api.metrics",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shadowdns.app import S\n",
     False, {"typing", "typing.TYPE_CHECKING", "shadowdns.app", "shadowdns.app.S"}),
    ("shadowdns.health.service", "def f():\n    from .. import app\n", False,
     {"shadowdns", "shadowdns.app"}),
    ("shadowdns.store", "from .base import Store\n", True,
     {"shadowdns.store.base", "shadowdns.store.base.Store"}),
])
def test_imports_are_found_wherever_they_are(module: str, source: str, is_package: bool,
                                             expected: set[str]) -> None:
    """Imports under TYPE_CHECKING, inside functions and relative ones all count."""
    assert {name for name, _ in imported(module, source, is_package)} == expected


@pytest.mark.parametrize(("graph_", "expected"), [
    ({"a": {"b": 0}, "b": {"c": 0}, "c": {}}, []),
    ({"a": {"b": 0}, "b": {"a": 0}}, [["a", "b"]]),
    ({"a": {"b": 0}, "b": {"c": 0}, "c": {"a": 0}, "d": {"a": 0}}, [["a", "b", "c"]]),
])
def test_cycles_finds_every_circle(graph_: dict[str, dict[str, int]],
                                   expected: list[list[str]]) -> None:
    """The circle finder reports a circle of any length, and nothing in a tree."""
    assert cycles(graph_) == expected
