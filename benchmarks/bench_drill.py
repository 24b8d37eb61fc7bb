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
``measure_drill`` is what ``python -m benchmarks`` calls.  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import measure
from benchmarks.measure import drkit, median, scratch_dir
from drkit.demo.sample import load_sample
from drkit.drill.logical import SCRATCH_SETTINGS
from drkit.pg import LocalCluster, chown_tree, cluster_os_user


def write_policy(policy_dir: Path, db_url: str, repo: Path) -> Path:
    return measure.write_policy(
        policy_dir,
        "prod",
        db_url,
        {"url": f"file://{repo}"},
        environment="prod",
        objectives={"rpo": "24h", "rto": "4h"},
        drill={
            "checks": {
                "sql": [{"name": "vulns", "query": "SELECT count(*) > 0 FROM vulnerability"}]
            }
        },
    )


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


def measure_drill(rows: int, size_mb: int, rounds: int) -> dict[str, Any]:
    """Medians over ``rounds`` of a plain restore and a drill of the same backup."""
    with scratch_dir("drkit-bench-drill-") as work:
        source = LocalCluster.create(work / "src", settings={"max_wal_size": "4GB"}, fast=True)
        target: LocalCluster | None = None
        try:
            url = source.create_database("bench")
            load_sample(url, rows)
            size = grow(url, size_mb * 2**20)
            repo = work / "repo"
            repo.mkdir()
            chown_tree(repo, cluster_os_user())
            policy_dir = write_policy(work / "policies", url, repo)
            drkit(policy_dir, "backup", "prod")

            target = LocalCluster.create(work / "target", settings=SCRATCH_SETTINGS)
            restores: list[float] = []
            drills: list[dict[str, Any]] = []
            for round_no in range(rounds):
                name = f"r_{uuid.uuid4().hex[:8]}"
                sample, _ = drkit(
                    policy_dir, "restore", "prod", "latest", "--target-db", target.dsn(name)
                )
                restores.append(sample.seconds)
                target.drop_database(name)
                sample, out = drkit(policy_dir, "drill", "prod", "--json", ok=(0, 3))
                doc = json.loads(out)
                doc["wall"] = sample.seconds
                drills.append(doc)
                print(f"  drill: round {round_no + 1}/{rounds} ({doc['verdict']})", flush=True)
        finally:
            if target is not None:
                target.destroy()
            source.destroy()

    restore_itself = [d["rto"]["phases"]["fetch"] + d["rto"]["phases"]["restore"] for d in drills]
    overhead = [d["wall"] - r for d, r in zip(drills, restore_itself, strict=True)]
    return {
        "rows": rows,
        "database_bytes": size,
        "rounds": rounds,
        "drkit_restore_seconds": median(restores),
        "drill_wall_seconds": median([d["wall"] for d in drills]),
        "drill_phases_seconds": {
            p: median([d["rto"]["phases"][p] for d in drills]) for p in drills[0]["rto"]["phases"]
        },
        "drill_restore_itself_seconds": median(restore_itself),
        "drill_overhead_seconds": median(overhead),
        "overhead_share_of_restore": median(overhead) / median(restore_itself),
        "drill_vs_plain_restore": median([d["wall"] for d in drills]) / median(restores),
        "target_overhead_share": 0.15,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    print(json.dumps(measure_drill(opts.rows, opts.size_mb, opts.rounds), indent=2))


if __name__ == "__main__":
    main()
