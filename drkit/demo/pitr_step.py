"""The point-in-time part of ``drkit demo``: archiving, a base backup, an accident, PITR.

Turns WAL archiving on in the demo's cluster (``archive_command = drkit wal-push``),
takes a base backup, commits orders, notes the time, "accidentally" deletes most of
them, and recovers a new cluster to the noted time: the deleted rows are back.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from psycopg.conninfo import make_conninfo

from drkit.backup.physical import run_physical_backup
from drkit.demo.sandbox import Sandbox, Say, Step
from drkit.errors import CheckFailed, OperationError
from drkit.pg import PostgresServer
from drkit.pg.connect import connect
from drkit.restore import restore_point_in_time
from drkit.storage.repository import Repository
from drkit.wal.commands import archive_command, prepare_file_repository
from drkit.wal.keys import find_wal_key


def _query(dsn: str, sql: str) -> Any:
    with connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


def archive_and_recover(box: Sandbox, say: Say) -> None:
    """Archive WAL, take a base backup, delete rows, recover to before the delete."""
    policy = box.policy()
    cluster = box.cluster
    dsn = policy.database.url.get_secret_value()
    say("step", "continuous WAL archiving (archive_command = drkit wal-push)")
    prepare_file_repository(policy.repository.url, policy.name, cluster.os_user)
    command = archive_command(policy.name, box.policy_dir, cluster.os_user)
    cluster.write_settings({"archive_mode": "on", "archive_command": command})
    cluster.stop()
    cluster.start()
    say("ok", "archiving on; the server restarted")

    say("step", "physical base backup (pg_basebackup → zstd → repository)")
    started = time.monotonic()
    manifest = run_physical_backup(policy)
    say(
        "ok",
        f"{manifest.id}: WAL {manifest.wal_start} .. {manifest.wal_stop} on timeline "
        f"{manifest.timeline}, {manifest.size} bytes stored, {time.monotonic() - started:.1f}s",
    )

    say("step", "changes, a noted time, then an accident")
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE demo_order (id int PRIMARY KEY, item text NOT NULL)")
        conn.execute(
            "INSERT INTO demo_order SELECT g, 'item ' || g FROM generate_series(1, 1000) g"
        )
    time.sleep(1.2)
    noted: datetime = _query(dsn, "SELECT clock_timestamp()").astimezone(UTC)
    time.sleep(1.2)
    with connect(dsn) as conn:
        conn.execute("DELETE FROM demo_order WHERE id > 100")
        name = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        conn.execute("SELECT pg_switch_wal()")
    left = _query(dsn, "SELECT count(*) FROM demo_order")
    say("ok", f"1000 orders committed, time noted {noted.isoformat()}, then {1000 - left} deleted")
    repo = Repository.for_policy(policy)
    deadline = time.monotonic() + 120
    while name and find_wal_key(repo, str(name[0])) is None:
        if time.monotonic() > deadline:
            raise OperationError(
                f"demo: WAL segment {name[0]} was not archived within 120s; see the "
                f"server log {cluster.log_file}"
            )
        time.sleep(0.2)

    say("step", f"point-in-time recovery to {noted.isoformat()} into a new cluster")
    pgdata = box.root / "pitr-data"
    started = time.monotonic()
    result = restore_point_in_time(policy, noted, pgdata, archive=False, repo=repo)
    try:
        restored_dsn = make_conninfo(dsn, port=str(result.port))
        back = _query(restored_dsn, "SELECT count(*) FROM demo_order")
        if back != 1000:
            raise CheckFailed(f"demo: the recovered server shows {back} orders, expected 1000")
        archiving = _query(restored_dsn, "SELECT current_setting('archive_mode')")
        if archiving != "off":  # a restored copy never archives into production's repository
            raise CheckFailed(f"demo: the recovered server has archive_mode = {archiving}")
        say(
            "ok",
            f"recovered to {result.reached_at.isoformat() if result.reached_at else '?'} on "
            f"timeline {result.timeline}: all 1000 orders are back (the live database has "
            f"{left}), {time.monotonic() - started:.1f}s; it does not archive (archive_mode "
            f"off), production's timeline stays {result.followed.timeline if result.followed else 1}",
        )
        box.report["pitr"] = {
            "backup_id": manifest.id,
            "target": result.target,
            "reached_at": (
                result.reached_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
                if result.reached_at
                else None
            ),
            "timeline": result.timeline,
            "archive_mode": archiving,
            "orders_live": left,
            "orders_recovered": back,
            "ok": True,
        }
    finally:
        recovered = PostgresServer(
            pgdata, port=result.port, os_user=cluster.os_user, bin_dir=cluster.bin_dir
        )
        recovered.stop("fast", 90)


STEP = Step(
    "continuous WAL archiving → physical base backup → point-in-time recovery to a noted "
    "moment before an accidental delete, into a new cluster",
    archive_and_recover,
)
