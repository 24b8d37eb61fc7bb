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

And every package is reached through its face: a module outside a package imports the
package's ``__init__`` (``from drkit.pg import connect``), never one of its inner modules;
the faces name what they load and load it lazily where it is heavy (see ARCHITECTURE.md,
Packages).
"""

from __future__ import annotations

import ast
import functools
import importlib
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DRKIT = REPO / "drkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module -> the drkit modules it imports (anywhere but under TYPE_CHECKING)."""
    modules = {_module_name(p): p for p in DRKIT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = parsed(path)
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


# -- package faces ---------------------------------------------------------------------
#
# Each package's ``__init__`` is its face: the names other packages use.  A module outside
# a package imports from the face, never from one of the package's inner modules
# (``from drkit.pg import connect``, not ``from drkit.pg.connect import connect``), so a
# package can move what is inside without its callers knowing.  Modules of one package
# import each other directly.


def packages() -> list[str]:
    return sorted(p.parent.name for p in DRKIT.glob("*/__init__.py"))


#: importers not converted yet, by path prefix, each with the reason
PENDING_IMPORTERS: dict[str, str] = {}

#: single imports past a face that stay for now, each with the reason
PENDING_IMPORTS: dict[tuple[str, str], str] = {}


def past_a_face(rel: str, own: str, tree: ast.AST) -> list[tuple[str, int, str]]:
    """(path, line, inner module) for every import in ``tree`` (inside a function, under
    TYPE_CHECKING) of an inner module of a package other than ``own``."""
    inside = set(packages())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module or ""]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "drkit" and len(parts) > 2 and parts[1] in inside - {own}:
                found.append((rel, node.lineno, module))
    return found


@functools.cache
def imports_past_a_face() -> list[tuple[str, int, str]]:
    """:func:`past_a_face` over every module of drkit."""
    found = []
    for path in sorted(DRKIT.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        found += past_a_face(rel, top_package(_module_name(path)), parsed(path))
    return found


def test_callers_import_other_packages_from_their_faces() -> None:
    wrong = [
        f"{path}:{line}: {module}"
        for path, line, module in imports_past_a_face()
        if not path.startswith(tuple(PENDING_IMPORTERS)) and (path, module) not in PENDING_IMPORTS
    ]
    assert not wrong, (
        "imports another package's inner module; import the name from the package's face "
        "(add it to the face's __init__ if it is missing):\n" + "\n".join(wrong)
    )


def test_pending_face_imports_still_exist() -> None:
    """An exception is dropped once the import it excuses is gone."""
    found = imports_past_a_face()
    gone = [p for p in PENDING_IMPORTERS if not any(path.startswith(p) for path, _, _ in found)]
    gone += [f"{p} -> {m}" for p, m in PENDING_IMPORTS if not any(f[::2] == (p, m) for f in found)]
    assert not gone, "no longer imported past a face, drop the exception: " + ", ".join(gone)


def test_face_check_sees_function_level_imports() -> None:
    """The check reads imports inside functions too: the lazy ones are the ones that
    would slip past it."""
    tree = ast.parse(
        "def kinds():\n    from drkit.sanitize.scan.content import KINDS\n    return KINDS\n"
    )
    assert past_a_face("drkit/docgen.py", "docgen", tree) == [
        ("drkit/docgen.py", 2, "drkit.sanitize.scan.content")
    ]


def face_declarations(package: str) -> set[tuple[str, str]]:
    """(module, name) for each name a face imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse((DRKIT / package / "__init__.py").read_text(encoding="utf-8"))
    return {
        (node.module or "", alias.name)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


@pytest.mark.parametrize("package", packages())
def test_lazy_face_declares_what_it_loads(package: str) -> None:
    """A lazy face's table and its TYPE_CHECKING imports name the same things: a name only
    in the table is ``Any`` to mypy, one only under TYPE_CHECKING passes mypy and fails at
    run time."""
    face = importlib.import_module(f"drkit.{package}")
    table: dict[str, str] = face.__dict__.get("__face_names__", {})
    loads = {(f"drkit.{package}.{home}", name) for name, home in table.items()}
    declared = {(m, n) for m, n in face_declarations(package) if m.startswith(f"drkit.{package}.")}
    assert loads == declared, (
        f"only loaded: {sorted(loads - declared)}; only declared: {sorted(declared - loads)}"
    )


FACE_IDENTITY = """
import importlib, sys
import drkit
pairs = []
for package in sys.argv[1:]:
    face = importlib.import_module("drkit." + package)
    table = face.__dict__.get("__face_names__", {})
    for home in sorted(set(table.values())):
        importlib.import_module(f"drkit.{package}.{home}")
    for name, home in table.items():
        ours = getattr(face, name)
        theirs = getattr(sys.modules[f"drkit.{package}.{home}"], name)
        if ours is not theirs:
            pairs.append(f"drkit.{package}.{name} is {ours!r}, not drkit.{package}.{home}.{name}")
print("\\n".join(pairs))
"""


def test_every_face_name_is_what_its_module_defines() -> None:
    """Attack: import a face's modules first, then ask the face.  ``drkit.pg.connect`` is
    a module and the function of that name; once the module has been imported, Python
    binds the package attribute to the module, and a plain module ``__getattr__`` is
    never asked again: ``from drkit.pg import connect`` would hand out a module."""
    done = subprocess.run(
        [sys.executable, "-c", FACE_IDENTITY, *packages()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", done.stdout


def test_faces_stay_cheap_to_import() -> None:
    """Python runs a package's ``__init__`` whenever any of its modules is imported, so an
    eager face would make every importer of one backup module pay for all of them.  The
    faces of backup, pg, storage, wal, cli and demo load no database driver, no S3 SDK and
    no pydantic."""
    heavy = ("psycopg", "boto3", "botocore", "pydantic")
    code = (
        "import sys; import drkit.backup, drkit.pg, drkit.storage, drkit.wal, drkit.cli, "
        f"drkit.demo; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", f"importing the faces loaded {done.stdout.strip()}"


def test_only_a_search_of_a_copy_loads_the_compiler() -> None:
    """numba (``drkit/jit.py``) costs a second or so to import: no face loads it, every
    package's included, nor the command table; the sanitize scan's modules do."""
    faces = ", ".join(f"drkit.{p}" for p in packages())
    code = f"import sys; import {faces}, drkit.cli.app; print('numba' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False", "importing the faces loaded numba"
