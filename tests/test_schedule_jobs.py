"""The scheduler's jobs, run the way APScheduler runs them (``run_job``) against a real
database and repository: backup, prune and drill, with the environment lock taken."""

from __future__ import annotations

from prometheus_client import generate_latest

from drkit.backup.catalog import list_backups
from drkit.backup.logical import run_logical_backup
from drkit.config import load_policy
from drkit.schedule.daemon import SchedulerDaemon
from drkit.storage import Repository
from tests.conftest import PgServer, PolicyWriter, RepoTarget


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
