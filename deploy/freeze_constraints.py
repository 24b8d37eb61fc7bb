"""Write deploy/constraints.txt: the image's Python dependencies, pinned.

pyproject.toml says what drkit needs (ranges); this pins the versions of a resolved,
tested install.  Run it from the repository root in the environment the tests passed in
(``.ci/setup`` installs it):

    python3 deploy/freeze_constraints.py            # rewrite deploy/constraints.txt
    python3 deploy/freeze_constraints.py --check    # exit 1 if it is not current

It walks ``[project].dependencies`` (no extras of drkit: the image installs none) through
the installed distributions' own requirements, markers evaluated for this interpreter,
and writes ``name==version`` for each, as ``pip freeze`` would.  A dependency that is
not installed is an error, never a line left out.  The Dockerfile installs the wheel
with ``pip install --constraint`` on this file.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "constraints.txt"
HEADER = (
    "# The image's Python dependencies, pinned (generated from pyproject.toml by\n"
    "# deploy/freeze_constraints.py from a resolved, tested install; do not edit by hand)\n"
)


def _wanted(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})


def resolve(requirements: list[str]) -> dict[str, str]:
    """canonical name -> installed version, over the closure of ``requirements``."""
    pins: dict[str, str] = {}
    todo = [(Requirement(r), {""}) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, parent_extras = todo.pop()
        if not _wanted(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        extras = set(req.extras) | {""}
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            raise SystemExit(f"{req.name} is required but not installed: run .ci/setup") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"{req.name} {dist.version} is installed; {req} is required")
        pins[name] = dist.version
        todo.extend((Requirement(r), extras) for r in dist.requires or [])
    return pins


def render() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = resolve(project["dependencies"])
    return HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is not current: run python3 deploy/freeze_constraints.py")
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
