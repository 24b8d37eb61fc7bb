"""``drkit wal-search`` over a large archive: how long finding a table's transactions takes.

    python -m benchmarks.bench_walsearch --gb 1 --rounds 3

Goal (issue 24): 1 GB of archived WAL searched in under a minute on this machine.

One throwaway cluster archives into a file:// repository through ``drkit wal-push``
(async mode); a base backup records the relation catalog; then about ``--gb`` of WAL is
written by real inserts, updates and deletes, nearly all on a noise table and a few on
the searched table (their transaction IDs recorded), the last segment switched out and
archived.  Each round times ``drkit wal-search prod --table public.searched --json`` in
a fresh interpreter (wall seconds and peak RSS) and checks it found exactly the
recorded transactions.  ``measure_walsearch`` is what ``python -m benchmarks`` calls.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import measure
from benchmarks.measure import drkit, median, scratch_dir
from drkit.config import load_policy
from drkit.pg import LocalCluster, chown_tree, cluster_os_user
from drkit.storage import Repository
from drkit.wal import archive_command, find_wal_key, prepare_file_repository

SEG = 16 * 1024 * 1024


def _lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def _commit(conn: psycopg.Connection[Any], sql: str) -> int:
    with conn.transaction():
        conn.execute(sql)  # type: ignore[arg-type]
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return int(row[0])


def build_archive(root: Path, gigabytes: float) -> tuple[LocalCluster, Path, list[int], int]:
    """(the cluster, its policy directory, the searched table's transaction IDs, WAL bytes
    written)."""
    user = cluster_os_user()
    repo = root / "repo"
    repo.mkdir()
    chown_tree(repo, user)
    policy_dir = root / "policies"
    prepare_file_repository(f"file://{repo}", "prod", user)
    cluster = LocalCluster.create(
        root / "pg",
        settings={
            "archive_mode": "on",
            "archive_command": archive_command("prod", policy_dir, user),
            "max_wal_size": "2GB",
            "checkpoint_timeout": "1h",
        },
        fast=True,
    )
    measure.write_policy(
        policy_dir,
        "prod",
        cluster.dsn(),
        {"url": f"file://{repo}"},
        environment="prod",
        wal_archiving=True,
        wal_archiver={"mode": "async"},
    )
    chown_tree(policy_dir, user)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE searched (id int PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE noise (id bigint, payload text)")
        conn.execute("INSERT INTO searched SELECT g, 'x' FROM generate_series(1, 1000) g")
    drkit(policy_dir, "backup", "prod", "--physical")
    xids: list[int] = []
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        start = _lsn(conn)
        target = int(gigabytes * 1e9)
        round_no = 0
        while _lsn(conn) - start < target:
            round_no += 1
            _commit(
                conn,
                "INSERT INTO noise SELECT g, md5(g::text) || md5((g * 7)::text) "
                "FROM generate_series(1, 200000) g",
            )
            _commit(conn, f"UPDATE noise SET payload = 'u' WHERE id % 97 = {round_no % 97}")
            _commit(conn, f"DELETE FROM noise WHERE id % 89 = {round_no % 89}")
            if round_no % 5 == 0:
                xids.append(_commit(conn, f"DELETE FROM searched WHERE id = {round_no}"))
        written = _lsn(conn) - start
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()
        conn.execute("SELECT pg_switch_wal()")
        assert row is not None
        last = str(row[0])
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    deadline = time.monotonic() + 900
    while find_wal_key(repo, last) is None:  # in the repository, not in pg_stat_archiver
        if time.monotonic() > deadline:
            raise SystemExit(f"{last} was not archived within 15 minutes")
        time.sleep(1)
    return cluster, policy_dir, xids, written


def measure_walsearch(gigabytes: float, rounds: int) -> dict[str, Any]:
    with scratch_dir("drkit-bench-walsearch-") as root:
        cluster, policy_dir, xids, written = build_archive(root, gigabytes)
        seconds: list[float] = []
        rss_kib: list[int] = []
        segments = 0
        try:
            segments = _rounds(policy_dir, xids, rounds, seconds, rss_kib)
        finally:
            cluster.destroy()
    return {
        "wal_bytes": written,
        "segments": segments,
        "transactions": len(xids),
        "seconds": seconds,
        "median_seconds": median(seconds),
        "peak_rss_kib": max(rss_kib),
    }


def _rounds(
    policy_dir: Path, xids: list[int], rounds: int, seconds: list[float], rss_kib: list[int]
) -> int:
    """Time ``rounds`` searches, each checked against ``xids``; returns the segments
    each decoded."""
    segments = 0
    for round_no in range(rounds):
        sample, stdout = drkit(
            policy_dir, "wal-search", "prod", "--table", "public.searched", "--json"
        )
        doc = json.loads(stdout)
        got = [t["xid"] for t in doc["transactions"]]
        if got != xids:
            raise SystemExit(f"wal-search found {got}, the benchmark committed {xids}")
        segments = int(doc["segments"])
        seconds.append(sample.seconds)
        rss_kib.append(sample.rss_kib)
        print(f"  wal-search: round {round_no + 1}/{rounds}: {sample.seconds:.1f}s", flush=True)
    return segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="WAL to write and search (GB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = measure_walsearch(args.gb, args.rounds)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"wal-search over {report['wal_bytes'] / 1e9:.2f} GB of WAL ({report['segments']} "
        f"segments, {report['transactions']} transactions found): "
        f"{report['median_seconds']:.1f}s median of {args.rounds} "
        f"({', '.join(f'{s:.1f}' for s in report['seconds'])}), peak RSS "
        f"{report['peak_rss_kib'] / 1024:.0f} MiB (goal: under 60 s)"
    )


if __name__ == "__main__":
    main()
