"""The scheduler's jobs, run the way APScheduler runs them (``run_job``) against a real
database and repository: backup, prune, drill and sanitize, with the environment lock taken."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from drkit.backup.logical import run_logical_backup
from drkit.catalog import list_backups
from drkit.config import load_policy
from drkit.errors import PolicyError
from drkit.schedule import lock_key
from drkit.schedule.daemon import SchedulerDaemon
from drkit.storage import Repository
from tests.fix_cli import Env, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "sanitize_rules" / "prod-to-staging.yaml"


def test_backup_prune_and_drill_jobs(
    pg_server: PgServer,
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
) -> None:
    name, url = database
    pg_server.query(name, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        schedule={
            "logical_backup": "0 2 * * *",
            "prune": "30 4 * * *",
            "drill": "0 5 * * 1",
            "timezone": "Europe/Rome",
        },
        objectives={"rpo": "1h", "rto": "30m"},
    )
    daemon = SchedulerDaemon(["prod"], policy_dir, port=0)
    daemon._apply(daemon.load())
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    try:
        run_logical_backup(load_policy("prod", policy_dir))  # an older backup to prune
        daemon.run_job("prod", "logical_backup")
        assert len(list_backups(repo)) == 2
        daemon.run_job("prod", "prune")  # nothing configured: only the newest stays
        (kept,) = list_backups(repo)
        daemon.run_job("prod", "drill")
        for job in ("logical_backup", "prune", "drill"):
            state = daemon.jobs[("prod", job)]
            assert state.last_status == "success", (job, state.last_error)
        assert daemon.locks["prod"].held
        doc = daemon.status()
        assert doc["ok"] is True, doc
        text = generate_latest(daemon.registry).decode()
        assert 'drkit_drill_last_verdict{env="prod"} 1.0' in text
        assert 'drkit_drill_rto_total_seconds{env="prod"}' in text
        assert 'phase="total"' not in text
        assert (
            'drkit_job_runs_total{drkit_job="logical_backup",env="prod",status="success"} 1.0'
            in text
        )
        assert 'drkit_backups_stored{env="prod",kind="logical"} 1.0' in text
        assert [m.id for m in list_backups(repo)] == [kept.id]
    finally:
        daemon.shutdown()
    assert not daemon.locks["prod"].held


def test_the_sanitize_job_refreshes_staging_from_prod_with_the_shipped_rules(
    envs: Env, make_policy: PolicyWriter, file_repo: RepoTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``schedule.sanitize`` in staging's policy: the daemon copies prod through the
    shipped rules under staging's lock, counts the run, and the next day's run replaces
    the copy it made (a refresh that worked once only would be no schedule)."""
    monkeypatch.setenv("DRKIT_SANITIZE_SALT", "salt-for-the-schedule-test-51c2")
    staging_db = envs.dsts["staging"]
    envs.pg.create_database(staging_db)  # staging runs: the daemon's lock lives in it
    make_policy(
        "staging",
        envs.pg.url(staging_db),
        file_repo,
        schedule={
            "sanitize": {"cron": "0 4 * * *", "source": "prod", "rules": str(SHIPPED_RULES)},
            "timezone": "Europe/Rome",
        },
    )
    daemon = SchedulerDaemon(["staging"], envs.policy_dir, port=0)
    daemon._apply(daemon.load())
    users_sql = (
        "SELECT count(*), count(*) FILTER (WHERE email = 'user_' || id || '@example.com') "
        'FROM "user"'
    )
    try:
        for _day in (1, 2):
            daemon.run_job("staging", "sanitize")
            state = daemon.jobs[("staging", "sanitize")]
            assert state.last_status == "success", state.last_error
            ((src_users, _),) = envs.pg.query(envs.src_name, users_sql)
            ((users, masked),) = envs.pg.query(staging_db, users_sql)
            assert users == src_users > 0
            assert masked == users  # the rules' pseudonym on every row, no address copied
            # the copy replaced the database the scheduler's lock lives in: the lock is
            # held again, on the server, in the database staging is now
            assert envs.pg.query(
                staging_db,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = %s "
                "AND (l.classid::bigint, l.objid::int) = (%s, %s)",
                [staging_db, *lock_key("staging")],
            ) == [(1,)]
        assert daemon.locks["staging"].held
        text = generate_latest(daemon.registry).decode()
        assert (
            'drkit_job_runs_total{drkit_job="sanitize",env="staging",status="success"} 2.0' in text
        )
    finally:
        daemon.shutdown()
    assert not daemon.locks["staging"].held


def test_a_scheduled_sanitize_names_its_source_and_a_valid_cron(tmp_path: Path) -> None:
    base = {"environment": "staging", "database": {"url": "postgresql://a@h/db"}}
    base["repository"] = {"url": "file:///tmp/repo"}
    for sanitize, message in (
        ({"cron": "0 4 * * *"}, r"schedule\.sanitize\.source: .*required"),
        ({"cron": "61 4 * * *", "source": "prod"}, r"schedule.*sanitize.*does not parse"),
        ("0 4 * * *", r"schedule\.sanitize"),
    ):
        (tmp_path / "staging.yaml").write_text(
            yaml.safe_dump({**base, "schedule": {"sanitize": sanitize}})
        )
        with pytest.raises(PolicyError, match=message):
            load_policy("staging", tmp_path)
