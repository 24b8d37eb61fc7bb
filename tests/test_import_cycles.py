"""No import cycles, function-level imports included: between modules, and between the
top-level packages of drkit (see ARCHITECTURE.md, Packages).

The graph is read from the source with ``ast``: every ``import drkit...`` and
``from drkit... import ...`` anywhere in a module (at the top or inside a function),
except under ``if TYPE_CHECKING:``, which never runs.  A cycle hidden inside functions
still ties two modules into one: neither can be understood, tested or moved alone.

Every module of the package must sit in no cycle, and neither must any top-level
package: ``drkit.backup`` importing ``drkit.wal`` while anything in ``drkit.wal`` imports
``drkit.backup`` (even inside a function) makes the two one package in fact.  A
top-level module (``drkit.config``, ``drkit.status``) counts as a package of its own.
"""

from __future__ import annotations

import ast
import functools
import itertools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DRKIT = REPO / "drkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module -> the drkit modules it imports (anywhere but under TYPE_CHECKING)."""
    modules = {_module_name(p): p for p in DRKIT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        never_run = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in ast.walk(node)
        }
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in never_run:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest import path from ``start`` back to itself, or None."""
    paths = {dep: [start, dep] for dep in sorted(graph[start])}
    queue = list(paths)
    while queue:
        current = queue.pop(0)
        if current == start:
            return paths[current]
        for dep in sorted(graph[current]):
            if dep not in paths:
                paths[dep] = [*paths[current], dep]
                queue.append(dep)
    return None


def all_modules() -> list[str]:
    return sorted(_module_name(p) for p in DRKIT.rglob("*.py"))


@pytest.mark.parametrize("module", all_modules())
def test_module_is_in_no_import_cycle(module: str) -> None:
    graph = import_graph()
    assert module in graph, f"{module} does not exist"
    cycle = cycle_through(graph, module)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def top_package(module: str) -> str:
    """``drkit.wal.push`` -> ``wal``; ``drkit.status`` -> ``status``; ``drkit`` -> ``drkit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    """top-level package -> the packages it imports, and for each edge the module imports
    that make it (``drkit.wal.identity -> drkit.catalog``)."""
    graph: dict[str, set[str]] = {}
    why: dict[tuple[str, str], list[str]] = {}
    for module, deps in import_graph().items():
        source = top_package(module)
        graph.setdefault(source, set())
        for dep in sorted(deps):
            target = top_package(dep)
            if target != source:
                graph[source].add(target)
                why.setdefault((source, target), []).append(f"{module} -> {dep}")
    return graph, why


#: package edges that still close a cycle, each with the reason it is not broken yet.
#: The test below fails on any other cycle, and on an entry here that no longer exists.
KNOWN_PACKAGE_EDGES: dict[tuple[str, str], str] = {}


def all_packages() -> list[str]:
    return sorted(package_graph()[0])


@pytest.mark.parametrize("package", all_packages())
def test_package_is_in_no_import_cycle(package: str) -> None:
    graph, why = package_graph()
    allowed = {
        source: {t for t in targets if (source, t) not in KNOWN_PACKAGE_EDGES}
        for source, targets in graph.items()
    }
    cycle = cycle_through(allowed, package)
    assert cycle is None, "package import cycle: " + "; ".join(
        f"{a} -> {b} ({', '.join(why[(a, b)][:3])})" for a, b in itertools.pairwise(cycle)
    )


def test_known_package_edges_still_exist() -> None:
    """An edge listed as known is removed from the list once it is gone."""
    graph, _ = package_graph()
    gone = [f"{a} -> {b}" for a, b in KNOWN_PACKAGE_EDGES if b not in graph.get(a, set())]
    assert not gone, "no longer imported, drop from KNOWN_PACKAGE_EDGES: " + ", ".join(gone)


def test_package_cycle_check_sees_function_level_imports() -> None:
    """The graph counts an import inside a function: ``record_identity`` reads the
    catalog only when it binds an archive, from inside the function."""
    _, why = package_graph()
    assert "drkit.wal.identity -> drkit.catalog" in why[("wal", "catalog")]


def test_catalog_sits_below_backup_and_wal() -> None:
    """The catalog is read by the WAL code and written by the backup code: it imports
    neither (nor anything above them), so neither can close a loop through it."""
    graph, why = package_graph()
    above = {"wal", "backup", "restore", "drill", "sanitize", "status", "schedule", "cli"}
    wrong = sorted(graph["catalog"] & above)
    assert not wrong, "drkit.catalog imports " + "; ".join(
        ", ".join(why[("catalog", p)][:3]) for p in wrong
    )
