"""How long drkit takes to start (issue 22: ``drkit --version`` and a backup's first
``pg_dump`` within 0.15 s).

    python -m benchmarks.bench_startup --rounds 15
    python -m benchmarks.bench_startup --baseline /tmp/drkit-main   # another checkout too

Measured, each in a fresh interpreter, round by round interleaved with
``python -c pass`` (the interpreter's own start: site, the installed packages' path
hooks), so that the ratios hold while the machine's speed drifts:

- ``drkit --version`` and ``drkit --help``: the whole process;
- ``drkit backup ENV`` of a tiny database: the time from just before the process is
  started to the moment pg_dump is executed with ``--snapshot`` (what drkit does before
  the dump can start: imports, the policy, the repository, the snapshot), and the whole
  backup.  A bash script standing in for pg_dump in ``$DRKIT_PG_BIN`` writes
  ``$EPOCHREALTIME`` (no extra process) and execs the real pg_dump.

drkit runs byte-compiled, as an installed package does (``benchmarks/__init__.py``);
``--baseline DIR`` measures a second checkout (compiled too) in the same rounds.
Figures are medians in seconds, ratios are against ``python -c pass`` of the same
round; nothing here asserts a time.  ``python -X importtime -m drkit --version`` says
where the time of one start goes.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.measure import ROOT, median, scratch_dir, write_policy
from drkit.pg import LocalCluster
from drkit.pg.binaries import find_binary

#: the bash script that stands in for pg_dump: it notes when the dump itself starts
PG_DUMP_WRAPPER = """#!/bin/bash
case " $* " in *" --snapshot="*) echo "$EPOCHREALTIME" >> "{mark}" ;; esac
exec "{real}" "$@"
"""

PASS = "python -c pass"


def wall(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``args`` to completion: (its start as wall-clock time, seconds it took)."""
    started_at = time.time()
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]!r}")
    return started_at, took


def tiny_database(work: Path) -> tuple[LocalCluster, str]:
    import psycopg

    cluster = LocalCluster.create(work / "pg", fast=True)
    url = cluster.create_database("tiny")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100) i")
    return cluster, url


def pg_dump_wrapper(work: Path, mark: Path) -> Path:
    """A bin directory whose pg_dump notes its ``--snapshot`` runs in ``mark``."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(PG_DUMP_WRAPPER.format(mark=mark, real=find_binary("pg_dump")))
    script.chmod(0o755)
    return bin_dir


def measure_startup(rounds: int, checkouts: dict[str, Path]) -> dict[str, Any]:
    """Seconds per round of every measure, and their medians and ratios."""
    for checkout in checkouts.values():
        compileall.compile_dir(checkout / "drkit", quiet=2)
    runs: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(seconds)

    with scratch_dir("drkit-bench-start-") as work:
        cluster, url = tiny_database(work)
        try:
            mark = work / "pg_dump.started"
            env = dict(os.environ, DRKIT_PG_BIN=str(pg_dump_wrapper(work, mark)))
            policies = write_policy(
                work / "policies", "tiny", url, {"url": f"file://{work / 'repo'}"}
            )
            (work / "repo").mkdir()
            python = [sys.executable]
            for round_no in range(rounds):
                add(PASS, wall([*python, "-c", "pass"], work)[1])
                for label, checkout in checkouts.items():
                    drkit = [*python, "-m", "drkit"]
                    add(f"{label}: drkit --version", wall([*drkit, "--version"], checkout)[1])
                    add(f"{label}: drkit --help", wall([*drkit, "--help"], checkout)[1])
                    mark.unlink(missing_ok=True)
                    backup = [*drkit, "--policy-dir", str(policies), "backup", "tiny"]
                    started_at, took = wall(backup, checkout, env)
                    add(f"{label}: drkit backup, start to pg_dump", _first_mark(mark) - started_at)
                    add(f"{label}: drkit backup (whole, tiny database)", took)
                print(f"  startup: round {round_no + 1}/{rounds}", flush=True)
        finally:
            cluster.destroy()
    medians = {name: median(values) for name, values in runs.items()}
    ratios = {
        name: median([v / p for v, p in zip(values, runs[PASS], strict=True)])
        for name, values in runs.items()
        if name != PASS
    }
    return {"medians": medians, "ratios_to_python_c_pass": ratios, "rounds": runs}


def _first_mark(mark: Path) -> float:
    lines = mark.read_text().split() if mark.exists() else []
    if not lines:
        raise SystemExit("pg_dump was never started with --snapshot: is the backup logical?")
    return float(lines[0])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another drkit checkout, measured alike"
    )
    opts = parser.parse_args(argv)
    checkouts = {"this": ROOT}
    if opts.baseline is not None:
        checkouts["baseline"] = opts.baseline.resolve()
    result = measure_startup(opts.rounds, checkouts)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
