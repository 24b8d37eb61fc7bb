"""The product does not carry its demo: ``drkit/demo/`` stands apart (see ARCHITECTURE.md,
Packages).

* nothing in drkit imports the demo except the CLI layer, which runs it;
* the demo imports only the packages' public faces: public, documented names, taken
  from the module that defines them (or re-exports them on purpose), never a private
  attribute;
* ``drkit demo --help`` lists every step the demo runs, in order;
* the demo's sanitize step runs the rules drkit ships, found inside the package (a
  wheel install has no ``sanitize_rules/`` beside it, and a file of the same name in
  the current directory is not them).

Everything is read from the source tree and real subprocesses; nothing is mocked.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DRKIT = REPO / "drkit"
DEMO = DRKIT / "demo"
SHIPPED_RULES = REPO / "sanitize_rules" / "prod-to-staging.yaml"

#: the CLI layer runs the demo; nothing else in the product may import it
MAY_IMPORT_THE_DEMO = ("drkit/cli/",)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) of every drkit import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names = [alias.name for alias in node.names]
            if module == "drkit":  # from drkit import demo
                found += [(f"drkit.{name}", [], node.lineno) for name in names]
            elif module.startswith("drkit."):
                found.append((module, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("drkit")]
    return found


def _product_modules() -> list[Path]:
    return sorted(p for p in DRKIT.rglob("*.py") if DEMO not in p.parents)


def test_the_demo_is_one_package_and_leaves_nothing_behind() -> None:
    assert (DEMO / "__init__.py").is_file()
    for old in ("demo.py", "sample.py", "sanitize/demo_step.py", "restore/pitr_demo.py"):
        assert not (DRKIT / old).exists(), f"drkit/{old} is left behind (no shims)"
    from drkit.demo import STEPS, run_demo

    assert callable(run_demo)
    assert STEPS


def test_the_product_never_imports_the_demo() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _product_modules()
        if not str(path.relative_to(REPO)).startswith(MAY_IMPORT_THE_DEMO)
        for module, _names, line in _imports(path)
        if module == "drkit.demo" or module.startswith("drkit.demo.")
    ]
    assert not offenders, offenders


def _public_face(module: str) -> tuple[set[str], set[str]]:
    """(documented definitions, deliberate re-exports) at the top level of ``module``."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    documented: set[str] = set()
    exported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if ast.get_docstring(node):
                documented.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            documented |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            exported |= {a.name for a in node.names if a.asname == a.name}
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            # a lazy face (drkit.lazy_face) names its re-exports for the type checker
            exported |= {
                a.name
                for imp in node.body
                if isinstance(imp, ast.ImportFrom)
                for a in imp.names
                if a.asname == a.name
            }
    return documented, exported


def test_the_demo_uses_only_public_documented_names() -> None:
    problems: list[str] = []
    for path in sorted(DEMO.rglob("*.py")):
        where = path.relative_to(REPO)
        for module, names, line in _imports(path):
            if module.startswith("drkit.demo"):
                continue
            if any(part.startswith("_") for part in module.split(".")):
                problems.append(f"{where}:{line}: private module {module}")
                continue
            documented, exported = _public_face(module)
            for name in names:
                if name.startswith("_"):
                    problems.append(f"{where}:{line}: private name {module}.{name}")
                elif name not in documented | exported:
                    problems.append(
                        f"{where}:{line}: {module}.{name} is not defined (with a docstring) "
                        f"nor re-exported there"
                    )
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{where}:{node.lineno}: private attribute .{node.attr}")
    assert not problems, "\n".join(problems)


def test_demo_help_lists_every_step_in_order() -> None:
    from drkit.demo import STEPS

    result = subprocess.run(
        [sys.executable, "-m", "drkit", "demo", "--help"],
        cwd=REPO,
        env=_env(COLUMNS="100"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    runs = "then runs: " + " → ".join(step.summary for step in STEPS) + "."
    assert runs in text, f"the help should say: {runs}\n{text}"


def test_the_demo_runs_the_rules_drkit_ships_wherever_it_is_started(tmp_path: Path) -> None:
    decoy = tmp_path / "sanitize_rules" / "prod-to-staging.yaml"
    decoy.parent.mkdir()
    decoy.write_text("version: 1\ntables: {}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from drkit.demo.sanitize_step import demo_rules; print(demo_rules())",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    used = Path(result.stdout.strip())
    assert DEMO in used.parents, used
    assert used.read_bytes() == SHIPPED_RULES.read_bytes()


def test_the_built_package_carries_the_demo_and_its_rules(tmp_path: Path) -> None:
    """What setuptools' ``build_py`` copies is what the wheel (and the Docker image) holds."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".*_cache"),
    )
    built = tmp_path / "lib"
    script = "from setuptools import setup; setup()"
    result = subprocess.run(
        [sys.executable, "-c", script, "-q", "build_py", "--build-lib", str(built)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"setuptools build_py failed (pip install setuptools):\n{result.stderr}"
    )
    rules = built / "drkit" / "demo" / "prod-to-staging.yaml"
    assert rules.is_file() and not rules.is_symlink(), sorted(built.rglob("*"))
    assert rules.read_bytes() == SHIPPED_RULES.read_bytes()
    for module in ("runner", "sample", "sanitize_step", "pitr_step"):
        assert (built / "drkit" / "demo" / f"{module}.py").is_file()
    assert not (built / "drkit" / "sample.py").exists()
