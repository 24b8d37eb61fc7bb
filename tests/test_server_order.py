"""``latest`` follows the server, end to end through the real CLI.

``restore ENV latest`` restores the newest *logical* backup when a base backup is newer
(the shipped prod schedule's Sunday base backup).
"""

from __future__ import annotations

import uuid

import psycopg

from tests.conftest import DrkitRunner, PgServer, PolicyWriter, RepoTarget
from tests.reliability.helpers import publish_base_backup_manifest


def rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM item").fetchone()
    return int(row[0]) if row else -1


def test_restore_latest_is_the_newest_logical_backup_when_a_base_backup_is_newer(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
) -> None:
    name, url = database
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id int PRIMARY KEY)")
        conn.execute("INSERT INTO item SELECT generate_series(1, 42)")
    policy_dir = make_policy("prod", url, file_repo)
    made = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    logical = made.json()["id"]
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO item VALUES (43)")  # the base backup is further on
    base = publish_base_backup_manifest(policy_dir, pg_server.dsn(name))

    target = f"r_{uuid.uuid4().hex[:8]}"
    try:
        restored = run_drkit(
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
    refused = run_drkit("restore", "prod", base, policy_dir=policy_dir)
    assert refused.code == 2 and "--point-in-time" in refused.stderr, refused.stderr
    # verify takes both kinds: its latest is the base backup
    verified = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
    assert [v["id"] for v in verified.json()["backups"]] == [base]
