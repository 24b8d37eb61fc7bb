"""A base backup never waits without limit: broken WAL archiving fails it, in bounded time,
with the archiver's own error.

``pg_basebackup -X none`` asks the server to wait until the backup's WAL is archived
before it ends; with a failing ``archive_command`` the server waits forever, and so did
``drkit backup --physical`` (a scheduled job hanging in silence).  drkit watches the
wait and ends it after ``DRKIT_ARCHIVE_WAIT`` seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import listed_ids


def test_a_base_backup_with_broken_archiving_fails_with_the_archivers_error(
    local_cluster: object,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    file_repo: RepoTarget,
) -> None:
    cluster = local_cluster(  # type: ignore[operator]
        {
            "archive_mode": "on",
            "archive_command": "false",  # archiving is broken: every segment fails
            "logging_collector": "on",
            "log_directory": "log",
            "log_min_messages": "log",
        }
    )
    policy_dir = make_policy("prod", cluster.dsn(), file_repo)
    result = run_drkit(
        "backup",
        "prod",
        "--physical",
        policy_dir=policy_dir,
        env={"DRKIT_ARCHIVE_WAIT": "3"},
        timeout=120,  # a hang fails the test here
    )
    assert result.code == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = lines[0]
    assert "archiv" in line and "within 3s" in line, line
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT last_failed_wal FROM pg_stat_archiver").fetchone()
    assert row is not None and row[0] and str(row[0]) in line, line  # the archiver's last error
    assert "archive command failed with exit code 1" in line, line  # its line in the server log
    assert listed_ids(run_drkit, policy_dir) == []
    assert file_repo.root is not None
    assert not any(p.name == "manifest.json" for p in Path(file_repo.root).rglob("*"))
    # the server is not left inside a backup: its walsender went with pg_basebackup
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            senders = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
            ).fetchone()
        if senders == (0,) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert senders == (0,)
