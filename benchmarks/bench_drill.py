"""The restore drill's own overhead against the restore it measures.

    python -m benchmarks.bench_drill --size-mb 1024 --rounds 2     # a 1 GB database

Goal (issue 6): everything a drill does besides the restore itself — starting the
scratch cluster, validation (row counts of every table, SQL checks, pg_amcheck), tearing
it down, writing the report — costs at most 15% of the restore time on a 1 GB database.

One throwaway cluster holds the sample database (``--rows`` of SentriKat sample data,
grown to ``--size-mb`` with archive copies of its two log tables, indexes included);
one logical backup goes to a file:// repository.  Then, alternating, ``rounds`` times:

- **restore**: ``drkit restore`` of that backup into a fresh database on a second cluster
  set up like a drill's scratch cluster (same settings, fsync on) — the restore itself;
- **drill**: ``drkit drill`` (its own scratch cluster), timed from the outside, with its
  phases read from the JSON report.

Reported (medians): overhead = drill wall time − (fetch + pg_restore phases), as a
share of (fetch + pg_restore); and the drill's wall time against the plain restore.
The numbers are what they are on this machine; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from benchmarks._measure import median, run, timed
from drkit.drill.runner import SCRATCH_SETTINGS
from drkit.pg.cluster import LocalCluster, chown_tree, cluster_os_user
from drkit.sample import load_sample


def write_policy(policy_dir: Path, db_url: str, repo: Path) -> Path:
    policy_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "environment": "prod",
        "database": {"url": db_url},
        "repository": {"url": f"file://{repo}"},
        "objectives": {"rpo": "24h", "rto": "4h"},
        "drill": {
            "checks": {
                "sql": [{"name": "vulns", "query": "SELECT count(*) > 0 FROM vulnerability"}]
            }
        },
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return policy_dir


def database_size(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def grow(url: str, target: int) -> int:
    """Add archive copies of the log tables (with their indexes) until ``target`` bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        n = 0
        while database_size(conn) < target:
            n += 1
            for table in ("alert_log", "sync_log"):
                copy = sql.Identifier(f"{table}_archive_{n}")
                source = sql.Identifier(table)
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(copy, source)
                )
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(copy, source))
        return database_size(conn)


def drkit(policy_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode not in (0, 3):
        raise SystemExit(f"drkit {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="drkit-bench-drill-"))
    work.chmod(0o755)
    source = LocalCluster.create(work / "src", settings={"max_wal_size": "4GB"}, fast=True)
    target: LocalCluster | None = None
    try:
        url = source.create_database("bench")
        load_time = timed(lambda: load_sample(url, opts.rows))
        size = grow(url, opts.size_mb * 2**20)
        print(f"loaded {opts.rows} rows ({size / 2**20:.0f} MiB) in {load_time:.0f}s", flush=True)
        repo = work / "repo"
        repo.mkdir()
        chown_tree(repo, cluster_os_user())
        policy_dir = write_policy(work / "policies", url, repo)
        backup = json.loads(drkit(policy_dir, "backup", "prod", "--json"))
        print(f"backup {backup['id']}: {backup['size'] / 2**20:.0f} MiB stored", flush=True)

        target = LocalCluster.create(work / "target", settings=SCRATCH_SETTINGS)
        restores: list[float] = []
        drills: list[dict[str, Any]] = []
        for round_no in range(opts.rounds):
            name = f"r_{uuid.uuid4().hex[:8]}"
            dsn = target.dsn(name)
            restores.append(
                timed(
                    lambda dsn=dsn: run(  # type: ignore[misc]
                        [
                            sys.executable,
                            "-m",
                            "drkit",
                            "--policy-dir",
                            str(policy_dir),
                            "restore",
                            "prod",
                            "latest",
                            "--target-db",
                            dsn,
                        ]
                    )
                )
            )
            target.drop_database(name)
            started = time.perf_counter()
            doc = json.loads(drkit(policy_dir, "drill", "prod", "--json"))
            doc["wall"] = time.perf_counter() - started
            drills.append(doc)
            phases = doc["rto"]["phases"]
            print(
                f"round {round_no + 1}: restore {restores[-1]:.1f}s; drill {doc['wall']:.1f}s "
                f"({doc['verdict']}; "
                + ", ".join(f"{p} {s:.1f}s" for p, s in phases.items())
                + f"; teardown {doc['cleanup'].get('seconds', 0):.1f}s)",
                flush=True,
            )

        restore_itself = [
            d["rto"]["phases"]["fetch"] + d["rto"]["phases"]["restore"] for d in drills
        ]
        overhead = [d["wall"] - r for d, r in zip(drills, restore_itself, strict=True)]
        phase_medians = {
            p: round(median([d["rto"]["phases"][p] for d in drills]), 2)
            for p in drills[0]["rto"]["phases"]
        }
        result = {
            "rows": opts.rows,
            "database_bytes": size,
            "rounds": opts.rounds,
            "drkit_restore_seconds": round(median(restores), 2),
            "drill_wall_seconds": round(median([d["wall"] for d in drills]), 2),
            "drill_phases_seconds": phase_medians,
            "drill_restore_itself_seconds": round(median(restore_itself), 2),
            "drill_overhead_seconds": round(median(overhead), 2),
            "overhead_share_of_restore": round(median(overhead) / median(restore_itself), 3),
            "drill_vs_plain_restore": round(
                median([d["wall"] for d in drills]) / median(restores), 3
            ),
            "target_overhead_share": 0.15,
        }
        if opts.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"\n{opts.rows} rows, {size / 2**30:.2f} GiB, medians of {opts.rounds} rounds\n"
                f"  drkit restore (fetch + pg_restore, streamed):   "
                f"{result['drkit_restore_seconds']}s\n"
                f"  drill wall time:                                {result['drill_wall_seconds']}s\n"
                f"  drill phases:                                   {phase_medians}\n"
                f"  drill overhead (wall − fetch − pg_restore):     "
                f"{result['drill_overhead_seconds']}s = "
                f"{result['overhead_share_of_restore'] * 100:.1f}% of the restore "
                f"(target ≤ 15%)\n"
                f"  drill wall / plain drkit restore:               "
                f"{result['drill_vs_plain_restore']}×"
            )
    finally:
        if target is not None:
            target.destroy()
        source.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
