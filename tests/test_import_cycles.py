"""No import cycles, function-level imports included (STYLE.md: "no import cycles").

The graph is read from the source with ``ast``: every ``import drkit...`` and
``from drkit... import ...`` anywhere in a module (at the top or inside a function),
except under ``if TYPE_CHECKING:``, which never runs.  A cycle hidden inside functions
still ties two modules into one: neither can be understood, tested or moved alone.

Every module of the package must sit in no cycle.
"""

from __future__ import annotations

import ast
import functools
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
