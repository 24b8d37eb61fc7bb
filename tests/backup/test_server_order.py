"""``latest`` and retention follow the server, end to end through the real CLI.

A backup taken while drkit's host clock was 30 days ahead carries an id and a start
time a month in the future.  It must not become ``latest`` (restoring 1 row of 500),
``prune`` must not delete the real, newer backups for it, and ``backups``, ``status``
and ``check`` must flag it.  And ``restore ENV latest`` restores the newest *logical*
backup when a base backup is newer (the shipped prod schedule's Sunday base backup).

The wrong host clock is the real one shifted in this process only: drkit's backup code
runs in-process with its module's ``datetime`` replaced (no libfaketime here), so the
id, ``started_at`` and the measured skew come out as a wrong clock makes them; the
server, the dump and the repository are real.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import psycopg
import pytest

from drkit.catalog import Manifest
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import publish_base_backup_manifest

MONTH = timedelta(days=30)


def backup_with_host_clock(
    policy_dir: Path, skew: timedelta, monkeypatch: pytest.MonkeyPatch
) -> Manifest:
    """``drkit backup prod`` with this host's clock ``skew`` off."""
    from drkit.backup import logical
    from drkit.config import load_policy

    class WrongClock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + skew

    with monkeypatch.context() as patch:
        patch.setattr(logical, "datetime", WrongClock)
        return logical.run_logical_backup(load_policy("prod", policy_dir))


def rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM item").fetchone()
    return int(row[0]) if row else -1


def test_a_backup_taken_with_the_host_clock_a_month_ahead_is_neither_latest_nor_kept(
    database: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, url = database
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id int PRIMARY KEY)")
        conn.execute("INSERT INTO item VALUES (1)")
    policy_dir = make_policy("prod", url, repo_target, retention={"daily": 1})
    ahead = backup_with_host_clock(policy_dir, MONTH, monkeypatch)
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO item SELECT generate_series(2, 500)")
    made = run_cli("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    real = made.json()["id"]
    assert ahead.id > real and ahead.started_at > datetime.now(ahead.started_at.tzinfo) + MONTH / 2

    listed = run_cli("backups", "prod", "--json", policy_dir=policy_dir)
    assert listed.code == 0, listed.stderr
    backups = listed.json()["backups"]
    assert [b["id"] for b in backups] == [real, ahead.id]  # newest first, by the server
    assert backups[1]["clock_skewed"] is True
    assert backups[1]["clock_skew_seconds"] == pytest.approx(-MONTH.total_seconds(), abs=120)
    assert backups[0]["clock_skewed"] is False and abs(backups[0]["clock_skew_seconds"]) < 60
    assert backups[0]["system_identifier"] == backups[1]["system_identifier"]
    human = run_cli("backups", "prod", policy_dir=policy_dir)
    assert "host clock 30d ahead of server" in human.stdout, human.stdout
    assert "warning: 1 backup(s) taken while drkit's host clock was off" in human.stdout

    target = f"r_{uuid.uuid4().hex[:8]}"
    try:
        restored = run_cli(
            "restore",
            "prod",
            "latest",
            "--target-db",
            pg_server.url(target),
            "--json",
            policy_dir=policy_dir,
        )
        assert restored.code == 0, restored.stderr
        assert restored.json()["backup_id"] == real
        assert rows(pg_server.dsn(target)) == 500
    finally:
        pg_server.drop_database(target)

    status = run_cli("status", "prod", "--json", policy_dir=policy_dir).json()
    assert status["clock_skewed_backups"] == [ahead.id]
    assert status["backups"]["logical"]["id"] == real
    assert any(ahead.id in line and "30d ahead" in line for line in status["attention"])

    checked = run_cli("check", "prod", policy_dir=policy_dir)
    assert checked.code == 0, checked.stderr + checked.stdout
    assert "PASS clock: this host's clock is within" in checked.stdout
    assert "WARN backup clocks: 1 backup(s) taken while" in checked.stdout

    pruned = run_cli("prune", "prod", policy_dir=policy_dir)
    assert pruned.code == 0, pruned.stderr
    after = run_cli("backups", "prod", "--json", policy_dir=policy_dir).json()["backups"]
    assert [b["id"] for b in after] == [real]


def test_restore_latest_is_the_newest_logical_backup_when_a_base_backup_is_newer(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
) -> None:
    name, url = database
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id int PRIMARY KEY)")
        conn.execute("INSERT INTO item SELECT generate_series(1, 42)")
    policy_dir = make_policy("prod", url, file_repo)
    made = run_cli("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    logical = made.json()["id"]
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO item VALUES (43)")  # the base backup is further on
    base = publish_base_backup_manifest(policy_dir, pg_server.dsn(name))

    target = f"r_{uuid.uuid4().hex[:8]}"
    try:
        restored = run_cli(
            "restore",
            "prod",
            "latest",
            "--target-db",
            pg_server.url(target),
            "--json",
            policy_dir=policy_dir,
        )
        assert restored.code == 0, restored.stderr
        assert restored.json()["backup_id"] == logical
        assert rows(pg_server.dsn(target)) == 42
    finally:
        pg_server.drop_database(target)
    # an explicit physical id is still refused, saying what to do instead
    refused = run_cli("restore", "prod", base, policy_dir=policy_dir)
    assert refused.code == 2 and "--point-in-time" in refused.stderr, refused.stderr
    # verify takes both kinds: its latest is the base backup
    verified = run_cli("verify", "prod", "latest", "--json", policy_dir=policy_dir)
    assert [v["id"] for v in verified.json()["backups"]] == [base]
