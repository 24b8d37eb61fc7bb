"""The point-in-time part of ``drkit demo``: archiving, a base backup, an accident, the
search for it, PITR.

Turns WAL archiving on in the demo's cluster (``archive_command = drkit wal-push``),
creates the orders table, takes a base backup (its relation catalog knows the table),
commits orders, "accidentally" deletes most of them, finds that transaction with
``drkit wal-search`` (as an operator would: by the table, in the archived WAL), and
recovers a new cluster to just before it (``--target-xid X --exclusive``): the deleted
rows are back.
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any

from psycopg.conninfo import make_conninfo

from drkit.backup import run_physical_backup
from drkit.demo.document import DemoPitr, DemoWalSearch
from drkit.demo.sandbox import Sandbox, Say, Step
from drkit.documents import dump
from drkit.errors import CheckFailed, OperationError
from drkit.pg import PostgresServer, connect
from drkit.restore import RecoveryTarget, restore_point_in_time, search_table
from drkit.storage import Repository
from drkit.wal import archive_command, find_wal_key, prepare_file_repository


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
    with connect(dsn) as conn:
        conn.execute("CREATE TABLE demo_order (id int PRIMARY KEY, item text NOT NULL)")

    say("step", "physical base backup (pg_basebackup → zstd → repository)")
    started = time.monotonic()
    manifest = run_physical_backup(policy)
    say(
        "ok",
        f"{manifest.id}: WAL {manifest.wal_start} .. {manifest.wal_stop} on timeline "
        f"{manifest.timeline}, {manifest.size} bytes stored, {time.monotonic() - started:.1f}s",
    )

    say("step", "orders committed, then an accident")
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO demo_order SELECT g, 'item ' || g FROM generate_series(1, 1000) g"
        )
        conn.execute("DELETE FROM demo_order WHERE id > 100")
        name = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()
        conn.execute("SELECT pg_switch_wal()")
    left = _query(dsn, "SELECT count(*) FROM demo_order")
    say("ok", f"1000 orders committed, then {1000 - left} deleted")
    repo = Repository.for_policy(policy)
    deadline = time.monotonic() + 120
    while name and find_wal_key(repo, str(name[0])) is None:
        if time.monotonic() > deadline:
            raise OperationError(
                f"demo: WAL segment {name[0]} was not archived within 120s; see the "
                f"server log {cluster.log_file}"
            )
        time.sleep(0.2)

    say("step", "finding the accident: drkit wal-search prod --table public.demo_order --op delete")
    started = time.monotonic()
    found = search_table(repo, "public.demo_order", op="delete")
    deletes = [t for t in found.transactions if t.operations.get("delete") == 1000 - left]
    if len(found.transactions) != 1 or not deletes:
        raise CheckFailed(
            f"demo: wal-search found {[dump(t.document()) for t in found.transactions]}, expected "
            f"one transaction deleting {1000 - left} orders"
        )
    accident = deletes[0]
    say(
        "ok",
        f"transaction {accident.xid} deleted {accident.operations['delete']} rows at "
        f"{accident.committed_at.isoformat()} ({found.segments} WAL segments searched, "
        f"{time.monotonic() - started:.1f}s); restore just before it: {accident.restore_flags}",
    )

    target = RecoveryTarget("xid", xid=accident.xid, inclusive=False)
    say("step", f"point-in-time recovery to {target.describe()} into a new cluster")
    pgdata = box.root / "pitr-data"
    started = time.monotonic()
    result = restore_point_in_time(policy, None, pgdata, archive=False, repo=repo, point=target)
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
        box.pitr = DemoPitr(
            backup_id=manifest.id,
            target=result.target,
            reached_at=(
                result.reached_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
                if result.reached_at
                else None
            ),
            timeline=result.timeline,
            archive_mode=archiving,
            orders_live=left,
            orders_recovered=back,
            wal_search=DemoWalSearch(
                xid=accident.xid,
                committed_at=accident.document().committed_at,
                operations=accident.operations,
                restore_flags=accident.restore_flags,
                segments=found.segments,
            ),
            ok=True,
        )
    finally:
        recovered = PostgresServer(
            pgdata, port=result.port, os_user=cluster.os_user, bin_dir=cluster.bin_dir
        )
        recovered.stop("fast", 90)


STEP = Step(
    "continuous WAL archiving → physical base backup → an accidental delete found with "
    "wal-search → point-in-time recovery to just before it, into a new cluster",
    archive_and_recover,
)
