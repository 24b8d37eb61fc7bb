"""The code explains itself from inside the repository.

* Every docstring or comment that says "see ARCHITECTURE.md, <section>" names a section
  ARCHITECTURE.md has (a ``## <section>`` heading), so a reader who follows the pointer
  finds it.
* Nothing in drkit/, tests/ or benchmarks/ cites a document that is not in the
  repository: the design notes the project was first built from are not shipped, so a
  pointer to them (by name, or by a bare section sign) leads nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("drkit", "tests", "benchmarks") for p in sorted((REPO / d).rglob("*.py"))]

#: "ARCHITECTURE.md, Command line" (the pointer may wrap after the comma)
CITATION = re.compile(r"ARCHITECTURE\.md,\s+#*\s*([A-Z][A-Za-z-]*(?: [a-z][A-Za-z-]*)*)")

#: documents outside the repository (spelled so that this file does not match itself)
OUTSIDE = ("DESIGN" + ".md", "STYLE" + ".md", "\N{SECTION SIGN}")


def sections() -> set[str]:
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return {m.group(1).strip() for m in re.finditer(r"^## (.+)$", text, re.MULTILINE)}


def test_every_architecture_citation_names_a_section() -> None:
    known = sections()
    cited = {
        (path.relative_to(REPO).as_posix(), m.group(1))
        for path in SOURCES
        for m in CITATION.finditer(path.read_text(encoding="utf-8"))
    }
    assert cited, "no file cites ARCHITECTURE.md: the pattern is wrong"
    missing = sorted(f"{where}: {name!r}" for where, name in cited if name not in known)
    assert not missing, f"ARCHITECTURE.md has no such section ({sorted(known)}): {missing}"


def test_no_source_cites_a_document_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(REPO).as_posix()}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(name in line for name in OUTSIDE)
        # a test asserting that an output does *not* mention one is no citation
        and " not in " not in line
    ]
    assert not found, "cites a document outside the repository:\n" + "\n".join(found)


def test_no_test_module_imports_another_test_module_or_conftest() -> None:
    """Fixtures load as pytest plugins (``tests/fix_*.py``) and shared helpers live in
    support modules (``tests/builders.py``, ``tests/wal_support.py``...): a test module that
    imports another runs the other's module code, re-registers its fixtures and ties two
    files that should move alone."""
    import ast

    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                last = module.rpartition(".")[2]
                if last == "conftest" or (last.startswith("test_") and "tests" in module):
                    found.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}: {module}")
    assert not found, "imports a test module or conftest:\n" + "\n".join(found)


def test_tests_mirror_the_packages() -> None:
    """Every test directory is named after the drkit package it tests (``tests/wal/`` for
    ``drkit/wal/``...), save ``reliability/`` for the cross-cutting attacks; the tests of
    a package do not sit at ``tests/``'s root, which holds top-level modules' tests."""
    packages = {p.parent.name for p in (REPO / "drkit").glob("*/__init__.py")}
    test_dirs = {p.parent.name for p in (REPO / "tests").glob("*/test_*.py")}
    assert test_dirs - packages <= {"reliability"}, sorted(test_dirs - packages)
    at_root = {p.stem.removeprefix("test_") for p in (REPO / "tests").glob("test_*.py")}
    assert not at_root & packages, sorted(at_root & packages)


def test_only_storage_and_the_policy_tell_repository_schemes_apart() -> None:
    """Backend facts belong to storage: a backend's model says what its driver needs
    (``environment_prefixes``, ``local_root``, ``parallel_uploads``), so a new backend is
    one driver, one model and one factory line, never a url test elsewhere."""
    scheme_test = re.compile(r"""(startswith|==)\(?\s*["'](s3|file|gs|azure)://""")
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "drkit").rglob("*.py"))
        if "storage" not in path.relative_to(REPO).parts and path.name != "config.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if scheme_test.search(line)
    ]
    assert not found, "a repository url's scheme tested outside storage:\n" + "\n".join(found)
