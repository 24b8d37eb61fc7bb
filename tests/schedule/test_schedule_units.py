"""Scheduler logic without a daemon process: cron meaning, periods, /healthz and /status,
metric families, drill-report reading, the jobs each schedule entry runs."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drkit.catalog import make_backup_id, write_manifest
from drkit.restore import DatabaseExposure, parse_drill_report
from drkit.schedule import JOBS, MISFIRE_GRACE, cron_period, next_runs, scrub
from drkit.schedule.daemon import SchedulerDaemon
from drkit.schedule.metrics import METRIC_NAMES, BackupSummary, CatalogSnapshot
from drkit.storage.repository import Repository
from tests import builders
from tests.builders import build_manifest

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("field", "weekdays"),  # cron numbering: 0 and 7 are Sunday
    [
        ("0", {7}),
        ("7", {7}),
        ("1", {1}),
        ("1-5", {1, 2, 3, 4, 5}),
        ("*/2", {7, 2, 4, 6}),
        ("5-7", {5, 6, 7}),
        ("sun,wed", {7, 3}),
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("*", {1, 2, 3, 4, 5, 6, 7}),
    ],
)
def test_day_of_week_means_what_it_means_in_crontab(field: str, weekdays: set[int]) -> None:
    runs = next_runs(f"0 3 * * {field}", "Europe/Rome", 21, NOW)
    assert {r.isoweekday() for r in runs} == weekdays
    assert all((r.hour, r.minute) == (3, 0) for r in runs)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 7), min_size=1, max_size=8))
def test_day_of_week_lists_match_crontab(days: set[int]) -> None:
    field = ",".join(str(d) for d in sorted(days))
    expected = {7 if d in (0, 7) else d for d in days}
    runs = next_runs(f"15 1 * * {field}", "UTC", 3 * len(expected), NOW)
    assert {r.isoweekday() for r in runs} == expected


def test_a_restricted_day_of_month_or_of_week_runs_on_either_as_in_crontab() -> None:
    """cron(5): when both day fields are restricted, a day matching either runs the job
    (``0 2 1 * 1``: every Monday and every 1st), never only a 1st that is a Monday."""
    runs = next_runs("0 2 1 * 1", "Europe/Rome", 4, NOW)  # NOW: Friday 27 November
    assert [r.strftime("%m-%d %H:%M") for r in runs] == [
        "11-30 02:00",
        "12-01 02:00",
        "12-07 02:00",
        "12-14 02:00",
    ]
    assert cron_period("0 2 1 * 1", "UTC", NOW) == timedelta(days=7)


def test_periods() -> None:
    assert cron_period("* * * * *", "UTC", NOW) == timedelta(minutes=1)
    assert cron_period("0 2 * * 1-5", "UTC", NOW) == timedelta(days=3)
    assert cron_period("0 5 1 * *", "UTC", NOW) == timedelta(days=31)
    assert cron_period("0 3 * * 0", "Europe/Rome", NOW) >= timedelta(days=7)


def test_next_runs_are_in_the_policy_timezone() -> None:
    runs = next_runs("0 2 * * *", "Europe/Rome", 3, NOW)
    assert [r.astimezone(UTC).hour for r in runs] == [1, 1, 1]  # 02:00 CET
    summer = next_runs("0 2 * * *", "Europe/Rome", 1, datetime(2026, 7, 1, tzinfo=UTC))
    assert summer[0].astimezone(UTC).hour == 0  # 02:00 CEST


def test_schedule_show_returns_its_document(tmp_path: Path) -> None:
    """``schedule show --json`` writes what the core returns: one model, every key set
    (nothing a default would add or leave out)."""
    from drkit.documents import dump
    from drkit.schedule import ScheduleShowDocument, show_schedule

    write_policy(tmp_path / "policies", "prod", {"drill": "0 5 * * 1", "timezone": "UTC"})
    shown = show_schedule(["prod"], tmp_path / "policies", count=2)
    assert isinstance(shown, ScheduleShowDocument)
    (job,) = dump(shown)["jobs"]
    assert set(job) == {"env", "job", "cron", "timezone", "next_runs", "period_seconds"}
    assert (job["env"], job["job"], job["cron"], job["timezone"]) == (
        "prod",
        "drill",
        "0 5 * * 1",
        "UTC",
    )
    assert len(job["next_runs"]) == 2 and job["period_seconds"] == 7 * 86400


def write_policy(directory: Path, env: str, schedule: dict[str, str]) -> None:
    builders.write_policy(
        directory,
        env,
        "postgresql://u:sekret@127.0.0.1:1/app",
        {"url": f"file://{directory.parent}/repo"},
        rank=1,
        schedule=schedule,
    )


def loaded_daemon(tmp_path: Path, schedule: dict[str, str]) -> SchedulerDaemon:
    write_policy(tmp_path / "policies", "prod", schedule)
    daemon = SchedulerDaemon(["prod"], tmp_path / "policies", port=0)
    daemon._apply(daemon.load())
    return daemon


def test_status_never_run_turns_overdue(tmp_path: Path) -> None:
    daemon = loaded_daemon(tmp_path, {"logical_backup": "0 2 * * *", "timezone": "UTC"})
    state = daemon.jobs[("prod", "logical_backup")]
    start = state.baseline
    doc = daemon.status(start + timedelta(hours=1))
    assert doc["ok"] is True and doc["status"] == "ok"
    late = start + state.period + MISFIRE_GRACE + timedelta(seconds=1)
    doc = daemon.status(late)
    assert doc["ok"] is False
    assert doc["problems"][0].startswith("prod/logical_backup: overdue (never succeeded")
    assert doc["jobs"][0]["status"] == "overdue"


def test_status_failure_and_recovery(tmp_path: Path) -> None:
    daemon = loaded_daemon(tmp_path, {"logical_backup": "0 2 * * *", "prune": "30 4 * * *"})
    backup = daemon.jobs[("prod", "logical_backup")]
    t0 = backup.baseline
    backup.record("failure", t0, t0 + timedelta(seconds=3), "cannot connect to 127.0.0.1:1/app")
    doc = daemon.status(t0 + timedelta(minutes=1))
    assert doc["ok"] is False and doc["jobs"][0]["status"] == "failing"
    assert doc["problems"] == [
        "prod/logical_backup: last run failed: cannot connect to 127.0.0.1:1/app"
    ]
    backup.record("success", t0, t0 + timedelta(minutes=5), None)
    daemon.jobs[("prod", "prune")].record("success", t0, t0 + timedelta(minutes=5), None)
    assert daemon.status(t0 + timedelta(minutes=6))["ok"] is True
    # a day later the daily backup is due, plus an hour of grace: then overdue
    assert daemon.status(t0 + timedelta(days=1, minutes=5, seconds=-1) + MISFIRE_GRACE)["ok"]
    assert not daemon.status(t0 + timedelta(days=1, minutes=6) + MISFIRE_GRACE)["ok"]


def test_status_without_jobs_names_the_problem(tmp_path: Path) -> None:
    daemon = loaded_daemon(tmp_path, {"timezone": "UTC"})
    doc = daemon.status()
    assert doc["ok"] is False and "no job is scheduled" in doc["problems"][0]


def test_healthz_is_liveness_a_failed_job_never_turns_it_503(tmp_path: Path) -> None:
    """A container runtime restarts what /healthz calls unhealthy: a failing job (the
    database is down, a drill failed) must not trigger that; a stopped scheduler must."""
    write_policy(tmp_path / "policies", "prod", {"drill": "* * * * *", "timezone": "UTC"})
    daemon = SchedulerDaemon(["prod"], tmp_path / "policies", bind="127.0.0.1", port=0)
    assert daemon.health()[0] == 503  # not started: nothing schedules
    daemon.start()
    try:
        daemon.run_job("prod", "drill")  # the database (port 1) refuses connections
        assert daemon.jobs[("prod", "drill")].last_status == "failure"
        base = f"http://127.0.0.1:{daemon.port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:  # noqa: S310
            assert response.status == 200
            alive = json.loads(response.read())
        assert alive["status"] == "alive" and "problems" not in alive
        with urllib.request.urlopen(f"{base}/status", timeout=10) as response:  # noqa: S310
            assert response.status == 200
            status = json.loads(response.read())
        assert status["ok"] is False and status["jobs"][0]["status"] == "failing"
        assert "127.0.0.1:1" in status["problems"][0] and "sekret" not in json.dumps(status)
        daemon._scheduler.shutdown(wait=True)  # the scheduler dies, the HTTP thread lives on
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=10)  # noqa: S310
            raise AssertionError("/healthz answered 200 with its scheduler stopped")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert json.loads(exc.read())["scheduler"] == "stopped"
    finally:
        daemon.shutdown()


def test_restart_seeds_last_success_from_the_catalog(tmp_path: Path) -> None:
    daemon = loaded_daemon(tmp_path, {"logical_backup": "0 2 * * *"})
    started = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    repo = Repository.for_policy(daemon.policies["prod"])
    obj = repo.store(f"backups/{make_backup_id(started, 'logical')}/app.dump", io.BytesIO(b"d"))
    write_manifest(
        repo,
        build_manifest(
            backup_id=make_backup_id(started, "logical"),
            at=started,
            duration=timedelta(minutes=5),
            consistent_at=started,
            objects=[obj],
        ),
    )
    daemon.refresh_catalog("prod")
    state = daemon.jobs[("prod", "logical_backup")]
    assert state.last_success == started + timedelta(minutes=5)
    # a week-old newest backup: overdue at once, right after the restart
    doc = daemon.status(NOW)
    assert not doc["ok"] and "last success 2026-11-20T01:05:00Z" in doc["problems"][0]


def test_metrics_families_and_names(tmp_path: Path) -> None:
    daemon = loaded_daemon(tmp_path, {"logical_backup": "0 2 * * *", "drill": "0 5 * * 1"})
    finished = datetime(2026, 11, 27, 1, 5, tzinfo=UTC)
    snapshot = CatalogSnapshot("prod", NOW)
    snapshot.newest["logical"] = BackupSummary("x", finished, 300.0, 1234, finished)
    snapshot.counts["logical"] = 1
    snapshot.databases = {"app": DatabaseExposure("app", None, finished)}
    daemon.catalogs["prod"] = snapshot
    text = generate_latest(daemon.registry).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    key = ("drkit_backup_last_success_timestamp_seconds", (("env", "prod"), ("kind", "logical")))
    assert samples[key] == finished.timestamp()
    runs = (
        "drkit_job_runs_total",
        (("drkit_job", "logical_backup"), ("env", "prod"), ("status", "failure")),
    )
    assert samples[runs] == 0
    assert samples[("drkit_drill_expected_interval_seconds", (("env", "prod"),))] == 604800
    assert samples[("drkit_rpo_exposure_seconds", (("env", "prod"),))] > 0
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert exported <= METRIC_NAMES
    assert "sekret" not in text


def test_drill_report_fields() -> None:
    doc = {
        "verdict": "FAIL",
        "finished_at": "2026-11-23T05:12:00Z",
        "rto": {"total": 720.5, "phases": {"fetch": 20.0, "restore": 650.5, "validate": 50.0}},
        "rpo": {"achieved": 11000.0, "objective": 3600},
    }
    drill = parse_drill_report(doc, "d1", NOW)
    assert drill.passed is False
    assert drill.finished_at == datetime(2026, 11, 23, 5, 12, tzinfo=UTC)
    assert drill.rto == {"fetch": 20.0, "restore": 650.5, "validate": 50.0, "total": 720.5}
    assert drill.rpo == 11000.0
    assert parse_drill_report({}, "d2", NOW).passed is None


def test_every_schedule_entry_has_a_job() -> None:
    """Each schedule key of a policy names a job the daemon can run (no lookup by name)."""
    from drkit.config import ScheduleConfig

    entries = {name for name in ScheduleConfig.model_fields if name != "timezone"}
    assert entries == set(JOBS)
    assert all(callable(job) for job in JOBS.values())


def test_scrub_masks_passwords() -> None:
    assert scrub("x postgresql://u:p4ss@h/db y\nsecond") == "x postgresql://u:***@h/db y"
    assert scrub("host=h password=p4ss") == "host=h password=***"


def test_a_failing_job_is_recorded_not_raised(tmp_path: Path) -> None:
    daemon = loaded_daemon(tmp_path, {"logical_backup": "* * * * *"})
    daemon.run_job("prod", "logical_backup")  # the database (port 1) refuses connections
    state = daemon.jobs[("prod", "logical_backup")]
    assert state.runs == {"success": 0, "failure": 1, "skipped": 0, "missed": 0}
    assert state.last_error is not None and "127.0.0.1:1" in state.last_error
    assert "sekret" not in state.last_error
    assert daemon.status()["ok"] is False


def scheduled_fires(trigger: Any, start: datetime, end: datetime) -> list[datetime]:
    """The runs APScheduler 3 starts between ``start`` and ``end``, asking ``trigger`` as
    its main loop does: the first fire time, then after each run the next after it."""
    fires: list[datetime] = []
    due = trigger.get_next_fire_time(None, start)
    now = start
    while due is not None and now <= end:
        if due <= now:
            fires.append(due)
            due = trigger.get_next_fire_time(due, now)
        else:
            now += timedelta(minutes=1)
    return fires


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 2 * * *", ["10-25 02:00+0200"]),  # once, not again at 02:00 CET
        ("30 2 * * *", ["10-25 02:30+0200"]),
        # a wildcard hour keeps its rhythm in elapsed time, as cron(8) runs it
        ("0 * * * *", ["10-25 02:00+0200", "10-25 02:00+0100"]),
    ],
)
def test_the_daemons_trigger_fires_once_on_the_autumn_dst_change(
    tmp_path: Path, cron: str, expected: list[str]
) -> None:
    write_policy(tmp_path / "policies", "prod", {"logical_backup": cron, "timezone": "Europe/Rome"})
    daemon = SchedulerDaemon(["prod"], tmp_path / "policies", bind="127.0.0.1", port=0)
    daemon.start()
    try:
        trigger = daemon._scheduler.get_job("prod:logical_backup").trigger
    finally:
        daemon.shutdown()
    # Sunday 25 October 2026: 03:00 CEST goes back to 02:00 CET
    fires = scheduled_fires(
        trigger, datetime(2026, 10, 24, 23, 30, tzinfo=UTC), datetime(2026, 10, 25, 2, tzinfo=UTC)
    )
    in_repeated_hour = [f.strftime("%m-%d %H:%M%z") for f in fires if f.hour == 2]
    assert in_repeated_hour == expected
    # ``schedule show`` and the overdue deadline read the same trigger
    days = {r.date() for r in next_runs(cron, "Europe/Rome", 3, datetime(2026, 10, 24, tzinfo=UTC))}
    assert len(days) == (3 if cron != "0 * * * *" else 1)


def test_apscheduler_jobs_coalesce_one_instance_an_hour_of_grace(tmp_path: Path) -> None:
    write_policy(
        tmp_path / "policies",
        "prod",
        {"logical_backup": "0 2 * * *", "prune": "30 4 * * 0", "timezone": "Europe/Rome"},
    )
    daemon = SchedulerDaemon(["prod"], tmp_path / "policies", bind="127.0.0.1", port=0)
    daemon.start()
    try:
        jobs = {job.id: job for job in daemon._scheduler.get_jobs()}
        assert set(jobs) == {"prod:logical_backup", "prod:prune"}
        for job in jobs.values():
            assert job.coalesce is True
            assert job.max_instances == 1
            assert job.misfire_grace_time >= 3600
            assert str(job.trigger.timezone) == "Europe/Rome"
        fire = jobs["prod:prune"].next_run_time
        assert fire.isoweekday() == 7 and (fire.hour, fire.minute) == (4, 30)  # Sunday
    finally:
        daemon.shutdown()


def test_runs_apscheduler_did_not_start_are_counted(tmp_path: Path) -> None:
    from apscheduler.events import (
        EVENT_JOB_MAX_INSTANCES,
        EVENT_JOB_MISSED,
        JobExecutionEvent,
        JobSubmissionEvent,
    )

    daemon = loaded_daemon(tmp_path, {"logical_backup": "0 2 * * *"})
    due = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    daemon.on_scheduler_event(
        JobExecutionEvent(EVENT_JOB_MISSED, "prod:logical_backup", "default", due)
    )
    daemon.on_scheduler_event(
        JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "prod:logical_backup", "default", [due])
    )
    runs = daemon.jobs[("prod", "logical_backup")].runs
    assert runs == {"success": 0, "failure": 0, "skipped": 1, "missed": 1}
    text = generate_latest(daemon.registry).decode()
    assert 'drkit_job_runs_total{drkit_job="logical_backup",env="prod",status="missed"} 1.0' in text


def test_metrics_read_the_drill_reports_the_drill_stores(tmp_path: Path) -> None:
    from drkit.drill.report import Check, DrillReport, store_report
    from drkit.schedule.metrics import read_catalog

    daemon = loaded_daemon(tmp_path, {"drill": "0 5 * * 1"})
    repo = Repository.for_policy(daemon.policies["prod"])
    started = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    older = DrillReport(id="20261116T040000Z-logical-aaaa", environment="prod", started_at=started)
    older.add(Check(name="connect", kind="connect", status="PASS"))
    older.finished_at = started - timedelta(days=7)
    store_report(repo, older)
    report = DrillReport(
        id="20261123T040000Z-logical-bbbb",
        environment="prod",
        started_at=started,
        finished_at=started + timedelta(minutes=12),
        phases={"fetch": 20.0, "restore": 650.0, "validation": 50.0},
        rpo_achieved=11000.0,
    )
    report.add(Check(name="row counts", kind="row_count", status="FAIL"))
    store_report(repo, report)
    snapshot = read_catalog(repo, daemon.policies["prod"])
    assert snapshot.drill is not None
    assert snapshot.drill.id == report.id and snapshot.drill.passed is False
    assert snapshot.drill.finished_at == started + timedelta(minutes=12)
    assert snapshot.drill.rto == {
        "fetch": 20.0,
        "restore": 650.0,
        "validation": 50.0,
        "total": 720.0,
    }
    assert snapshot.drill.rpo == 11000.0


def test_a_weekly_full_and_daily_incrementals_export_one_physical_interval(
    tmp_path: Path,
) -> None:
    """Both jobs are of kind physical: one expected-interval sample (never two with the
    same labels), the shorter job's, so "backup too old" alerts after two days, not eight."""
    daemon = loaded_daemon(
        tmp_path,
        {"physical_backup": "0 3 * * 0", "physical_incremental_backup": "0 3 * * 1-6"},
    )
    text = generate_latest(daemon.registry).decode()
    samples = [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "drkit_backup_expected_interval_seconds"
    ]
    assert samples == [({"env": "prod", "kind": "physical"}, 2 * 86400)]
