"""WAL streaming throughput: how fast ``drkit wal-receive`` catches up with a backlog.

    python -m benchmarks.bench_stream --segments 32

On a fresh cluster (16 MB segments): the slot ``drkit_prod`` is created first, so the
server keeps what follows; a backlog of ``--segments`` segments is written by real
inserts with nobody streaming; then the receiver (pg_receivewal and the store of each
finished segment through wal-push's own function) starts, and the time is measured
until the backlog's last segment is in the repository.  To file:// and to S3 (moto),
``--rounds`` times each; prints segments/s (medians).  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import psycopg

from benchmarks import measure
from benchmarks.measure import median, moto_server, scratch_dir
from drkit.config import load_policy
from drkit.pg import LocalCluster
from drkit.storage import Repository
from drkit.wal import find_wal_key, receive_wal


def build_backlog(root: Path, segments: int) -> tuple[LocalCluster, str]:
    """A cluster whose slot holds ``segments`` finished segments nobody has streamed;
    the name of the last one."""
    cluster = LocalCluster.create(
        root / "pg",
        settings={
            "max_wal_size": f"{(segments + 8) * 32}MB",
            "max_slot_wal_keep_size": f"{(segments + 8) * 32}MB",
            "checkpoint_timeout": "1h",
        },
        fast=True,
    )
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot('drkit_prod', true)")
        conn.execute("CREATE TABLE filler (id bigint, payload text)")
        first = _segno(conn)
        while _segno(conn) < first + segments:
            conn.execute(
                "INSERT INTO filler SELECT g, md5(g::text) || md5((g * 7)::text) "
                "FROM generate_series(1, 120000) g"
            )
        row = conn.execute(
            "SELECT pg_walfile_name(pg_current_wal_lsn()), pg_switch_wal()"
        ).fetchone()
    assert row is not None
    return cluster, str(row[0])


def _segno(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    assert row is not None
    return int(str(row[0])[8:], 16)


def run_stream(segments: int, repository: dict[str, object] | None) -> tuple[int, float]:
    """(segments, seconds) for one catch-up, to ``repository`` (None: a file:// one)."""
    with scratch_dir("drkit-bench-stream-") as root:
        cluster, last = build_backlog(root, segments)
        try:
            if repository is None:
                (root / "repo").mkdir()
                repository = {"url": f"file://{root / 'repo'}"}
            measure.write_policy(
                root / "policies",
                "prod",
                cluster.dsn(),
                {**repository, "compression": {"algorithm": "zstd", "level": 3}},
                environment="prod",
                wal_streaming={"partial_interval": "5s"},
            )
            policy = load_policy("prod", root / "policies")
            repo = Repository.for_wal(policy)
            stop = threading.Event()
            failed: list[BaseException] = []

            def receive() -> None:
                try:
                    receive_wal(policy, spool=root / "spool", stop=stop)
                except BaseException as exc:  # reported below
                    failed.append(exc)

            thread = threading.Thread(target=receive)
            started = time.monotonic()
            thread.start()
            while find_wal_key(repo, last) is None:
                if failed or not thread.is_alive():
                    raise SystemExit(f"wal-receive failed: {failed[0] if failed else 'ended'}")
                time.sleep(0.05)
            seconds = time.monotonic() - started
            stop.set()
            thread.join(60)
            return segments, seconds
        finally:
            cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"file://": [], "s3 (moto)": []}
    with moto_server() as moto:
        for _ in range(args.rounds):
            n, seconds = run_stream(args.segments, None)
            rates["file://"].append(n / seconds)
            if not args.skip_s3:
                n, seconds = run_stream(args.segments, moto.repository("stream"))
                rates["s3 (moto)"].append(n / seconds)
    result = {name: round(median(values), 1) for name, values in rates.items() if values}
    if args.json:
        print(json.dumps({"segments": args.segments, "segments_per_second": result}))
        return
    for name, rate in result.items():
        print(f"wal-receive → {name:<10} {rate:7.1f} segments/s ({args.segments} segments)")


if __name__ == "__main__":
    main()
