"""The run's e-mail map alone: filling it and reading it, old code against new.

    python -m benchmarks.bench_emailmap --users 500000 --lookups 200000 --rounds 3
    python -m benchmarks.bench_emailmap --old-ref main      # the code to compare against

One round: a fresh :class:`~drkit.sanitize.strategies.compiler.Compiler` registers
``--users`` addresses in the sample's shape (``marco.rossi17@customer17.com``, the
template ``user_{id}@example.com``) through ``register_email``, as the originals pass
does, in a shuffled order; then ``--lookups`` addresses go through ``email_pseudonym``
as ``replace_pii`` sends them: half registered (in their exact spelling, a quarter of
those in another letter case), half that no template registered.  Each address is a
fresh string, as a parsed JSON value is.

The old code is ``compiler.py`` and ``pseudomap.py`` as they are at ``--old-ref``
(``git show REF:PATH``), loaded as temporary modules; the new code is this tree's.
Printed (JSON): the medians of ``--rounds`` rounds of CPU seconds of the fill, of the
first lookup (where a spilled map may build its keyed table) and of the other lookups
(``time.process_time``: the machine is shared, and SQLite runs in this process) for each,
and whether both gave every address the same pseudonym.  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from drkit.sanitize.strategies.compiler import Compiler
from drkit.sanitize.strategies.pseudonymizer import Pseudonymizer

SALT = b"benchmark-salt-not-a-secret"
DOMAIN = "example.com"
GIVEN = ["marco", "giulia", "luca", "sofia", "matteo", "davide", "anna", "paolo"]
FAMILY = ["rossi", "bruno", "costa", "marino", "conti", "romano", "ricci", "greco"]


def address(i: int) -> str:
    return f"{GIVEN[i % 8]}.{FAMILY[(i // 8) % 8]}{i}@customer{i % 100}.com"


def old_code(ref: str, workdir: Path) -> type[Compiler]:
    """``Compiler`` as it is at ``ref``, using ``PseudonymMap`` as it is at ``ref``."""
    modules: dict[str, ModuleType] = {}
    for name in ("pseudomap", "compiler"):
        source = subprocess.run(
            ["git", "show", f"{ref}:drkit/sanitize/strategies/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        path = workdir / f"old_{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"old_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    modules["compiler"].PseudonymMap = modules["pseudomap"].PseudonymMap  # type: ignore[attr-defined]
    return modules["compiler"].Compiler  # type: ignore[no-any-return]


def one_round(
    cls: type[Compiler], users: int, lookups: int, seed: int
) -> tuple[float, float, float, list[str]]:
    rng = random.Random(seed)
    order = list(range(1, users + 1))
    rng.shuffle(order)
    compiler = cls(Pseudonymizer(SALT))
    wanted: list[str] = []
    for n in range(lookups):
        if n % 2:
            wanted.append(f"nobody.{rng.randrange(users)}@elsewhere{n % 7}.org")
        else:
            a = address(rng.randrange(1, users + 1))
            wanted.append(a.upper() if n % 8 == 0 else a)
    gc.collect()
    start = time.process_time()
    for i in order:
        compiler.register_email(address(i), f"user_{i}@example.com")
    filled = time.process_time()
    got = [compiler.email_pseudonym("".join(wanted[0]), DOMAIN)]  # a spilled map builds here
    first = time.process_time()
    got += [compiler.email_pseudonym("".join(w), DOMAIN) for w in wanted[1:]]
    done = time.process_time()
    compiler.close()
    return filled - start, first - filled, done - first, got


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-ref", default="main")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = old_code(args.old_ref, Path(tmp))
        times: dict[str, dict[str, list[float]]] = {
            name: {"fill": [], "first_lookup": [], "lookups": []} for name in ("old", "new")
        }
        same = True
        for r in range(args.rounds):  # interleaved, so both see the same machine load
            results = []
            for name, cls in (("old", old), ("new", Compiler)):
                fill, first, lookups, got = one_round(cls, args.users, args.lookups, seed=r)
                times[name]["fill"].append(fill)
                times[name]["first_lookup"].append(first)
                times[name]["lookups"].append(lookups)
                results.append(got)
            same = same and results[0] == results[1]
    report: dict[str, Any] = {
        "users": args.users,
        "lookups": args.lookups,
        "rounds": args.rounds,
        "same_pseudonyms": same,
    }
    for name, t in times.items():
        report[name] = {k: round(statistics.median(v), 3) for k, v in t.items()}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
