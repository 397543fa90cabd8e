"""Imports run one way, down the layers: the import graph of the core and of each integration, read from the
source (module level, inside functions and under TYPE_CHECKING alike), has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = [
    (REPO, "emergence"),
    (REPO / "integrations" / "mlflow", "emergence_mlflow"),
    (REPO / "integrations" / "wandb", "emergence_wandb"),
    (REPO / "integrations" / "ray", "emergence_ray"),
]


def module_files(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports anywhere in its source. ``from pkg import x`` imports
    ``pkg.x`` when that is a module, else ``pkg`` itself (its ``__init__``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph(root: Path, package: str) -> nx.DiGraph:
    files = module_files(root, package)
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        graph.add_edges_from((name, target) for target in imported_modules(name, path, set(files)))
    return graph


@pytest.mark.parametrize(("root", "package"), PACKAGES, ids=[p for _, p in PACKAGES])
def test_no_import_cycle(root: Path, package: str) -> None:
    graph = import_graph(root, package)
    assert graph.number_of_nodes() > 1
    cycles = [sorted(component) for component in nx.strongly_connected_components(graph) if len(component) > 1]
    assert cycles == [], f"import cycles in {package}: {cycles}"


def test_the_graph_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    """The checker itself: a cycle hidden in a function body or under TYPE_CHECKING is still a cycle."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.high import g\n")
    (package / "high.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import low\n")
    (package / "public.py").write_text("from pkg import __version__\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph.has_edge("pkg.low", "pkg.high") and graph.has_edge("pkg.high", "pkg.low")
    assert graph.has_edge("pkg.public", "pkg")  # a name from a package's __init__ imports the package
    assert not nx.is_directed_acyclic_graph(graph)
