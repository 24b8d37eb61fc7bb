"""Concurrency: a second ``drkit backup ENV`` is refused; prune spares a running backup.

A backup is held in the middle deterministically: the policy backs up two databases and
a test session holds an ACCESS EXCLUSIVE lock on a table of the second, so ``pg_dump``
of that database waits while the first database's object already sits in the repository
— exactly the state a concurrent backup or prune must not disturb.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import listed_ids, manifests, start_drkit, verify_all, wait_for


@pytest.fixture
def second_db(pg_server: PgServer) -> Iterator[str]:
    name = f"b_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    pg_server.query(name, "CREATE TABLE blocker (id int PRIMARY KEY, v text)")
    pg_server.query(name, "INSERT INTO blocker SELECT g, md5(g::text) FROM generate_series(1,50) g")
    yield name
    pg_server.drop_database(name)


def _dump_waiting(pg_server: PgServer, dbname: str) -> bool:
    rows = pg_server.query(
        dbname,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
    )
    return bool(rows and rows[0][0] > 0)


def test_second_backup_is_refused_and_prune_spares_the_running_one(
    sample_db: tuple[str, str],
    second_db: str,
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
) -> None:
    first_db, url = sample_db
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        database={"url": url, "databases": [first_db, second_db]},
        retention={"daily": 1, "orphan_grace": "1h"},
    )
    assert file_repo.root is not None
    root = file_repo.root
    # two complete backups: prune will delete the older (same day, not the newest)
    old = run_drkit("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    time.sleep(1.1)
    kept = run_drkit("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    # a leftover of a crash long ago: prune must remove it
    stale = root / "prod" / "backups" / "20200101T000000Z-logical" / f"{first_db}.dump.zst"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"leftover")
    long_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    os.utime(stale, (long_ago, long_ago))
    time.sleep(1.1)

    blocker = psycopg.connect(pg_server.dsn(second_db))
    try:
        blocker.execute("LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
        running = start_drkit("backup", "prod", "--json", policy_dir=policy_dir)
        in_flight = wait_for(
            lambda: [
                p
                for p in (root / "prod" / "backups").glob(f"*/{first_db}.dump.zst")
                if p.parent.name not in (old, kept, "20200101T000000Z-logical")
            ],
            60,
            "the running backup's first object",
        )[0]
        running_id = in_flight.parent.name
        wait_for(lambda: _dump_waiting(pg_server, second_db), 30, "pg_dump to block")

        second = run_drkit("backup", "prod", policy_dir=policy_dir)
        assert second.code == 1, second.stderr
        assert "another logical backup of prod is running" in second.stderr
        assert f"pid {running.pid}" in second.stderr  # names the holder
        assert "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        # the refused run stored nothing and touched nothing of the running one
        backup_dirs = {p.name for p in (root / "prod" / "backups").iterdir()}
        assert backup_dirs == {old, kept, running_id, "20200101T000000Z-logical"}

        pruned = run_drkit("prune", "prod", "--json", policy_dir=policy_dir)
        assert pruned.code == 0, pruned.stderr
        assert in_flight.exists(), "prune deleted an object of the running backup"
        assert not stale.exists(), "prune left a stale leftover"
        assert not (root / "prod" / "backups" / old).exists(), "prune deleted nothing"
        assert (root / "prod" / "backups" / kept / "manifest.json").exists()
        assert running.poll() is None, "the running backup did not survive prune"
    finally:
        blocker.rollback()
        blocker.close()

    _out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    assert listed_ids(run_drkit, policy_dir) == [kept, running_id]
    done = manifests(root)[running_id]
    assert sorted(o["database"] for o in done["objects"]) == sorted([first_db, second_db])
    verified = verify_all(run_drkit, policy_dir)
    assert verified.code == 0, verified.stderr

    # the lock went with the backup: the next one runs
    assert run_drkit("backup", "prod", policy_dir=policy_dir).code == 0


def test_killed_backup_releases_its_lock_at_once(
    sample_db: tuple[str, str],
    second_db: str,
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
) -> None:
    first_db, url = sample_db
    policy_dir = make_policy(
        "prod", url, file_repo, database={"url": url, "databases": [first_db, second_db]}
    )
    blocker = psycopg.connect(pg_server.dsn(second_db))
    try:
        blocker.execute("LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
        running = start_drkit("backup", "prod", policy_dir=policy_dir)
        wait_for(lambda: _dump_waiting(pg_server, second_db), 60, "pg_dump to block")
        os.kill(running.pid, signal.SIGKILL)
        running.communicate(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    # no stale lease to break: the server dropped the lock with the connection
    deadline = time.monotonic() + 10
    while True:
        again = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
        if again.code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.code == 0, again.stderr
    assert listed_ids(run_drkit, policy_dir) == [again.json()["id"]]
    # the killed pg_dump child of the killed drkit may linger; it must not hold locks forever
    assert verify_all(run_drkit, policy_dir).code == 0
