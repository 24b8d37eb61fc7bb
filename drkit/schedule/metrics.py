"""What the scheduler knows, as Prometheus metrics (DESIGN.md §7).

Two sources, so the values are right after a restart too:

* the repository catalog of each environment (:func:`read_catalog`): newest backup of
  each kind, newest archived WAL, how far the WAL archive reaches (gaps, another
  cluster's segments), newest drill report — re-read at start, after every job and
  every minute;
* the daemon's own job runs (:class:`JobState`): counters, last status, last success.

:class:`DrkitCollector` turns a snapshot of both into metric families at scrape time,
so ``drkit_rpo_exposure_seconds`` grows between scrapes as it should; it is computed by
the same functions as ``drkit status``'s (drkit/status.py: :func:`~drkit.status.recoverable`,
:func:`~drkit.status.rpo_exposure`).  Every name the
daemon can export is in :data:`METRIC_NAMES`; ``tests/test_monitoring.py`` checks the
alert rules use only those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.restore import DatabaseExposure, DrillSummary, WalReach
    from drkit.storage.repository import Repository

log = logging.getLogger(__name__)

JOB_NAMES = ("logical_backup", "physical_backup", "physical_incremental_backup", "prune", "drill")
JOB_KIND = {
    "logical_backup": "logical",
    "physical_backup": "physical",
    "physical_incremental_backup": "physical",
}
RUN_STATUSES = ("success", "failure", "skipped", "missed")

METRIC_NAMES = frozenset(
    {
        "drkit_backup_last_success_timestamp_seconds",
        "drkit_backup_last_duration_seconds",
        "drkit_backup_last_size_bytes",
        "drkit_backups_stored",
        "drkit_backup_expected_interval_seconds",
        "drkit_wal_archiving_enabled",
        "drkit_wal_last_archived_timestamp_seconds",
        "drkit_wal_segments_beyond_gap",
        "drkit_wal_foreign_segments",
        "drkit_rpo_exposure_seconds",
        "drkit_objective_rpo_seconds",
        "drkit_objective_rto_seconds",
        "drkit_drill_rto_seconds",
        "drkit_drill_rto_total_seconds",
        "drkit_drill_rpo_seconds",
        "drkit_drill_last_verdict",
        "drkit_drill_last_timestamp_seconds",
        "drkit_drill_expected_interval_seconds",
        "drkit_job_runs_total",
        "drkit_job_last_run_success",
        "drkit_job_last_run_timestamp_seconds",
        "drkit_job_last_success_timestamp_seconds",
        "drkit_job_last_duration_seconds",
        "drkit_job_running",
        "drkit_scheduler_lock_held",
        "drkit_catalog_last_refresh_success",
        "drkit_catalog_last_refresh_timestamp_seconds",
    }
)


# ---------------------------------------------------------------------------
# Cron arithmetic
# ---------------------------------------------------------------------------


def next_runs(
    expr: str, timezone: str, count: int = 3, now: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fire times of a five-field cron expression, in ``timezone``."""
    from drkit.schedule.cron import cron_trigger

    trigger = cron_trigger(expr, timezone)
    current = now or datetime.now(UTC)
    out: list[datetime] = []
    previous = None
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            break
        out.append(fire)
        previous = fire
        # ``now`` in UTC: with a local ``now`` APScheduler repeats the ambiguous hour of
        # an autumn DST change forever
        current = fire.astimezone(UTC) + timedelta(microseconds=1)
    return out


def cron_period(expr: str, timezone: str, now: datetime | None = None) -> timedelta:
    """The longest gap between two consecutive runs of ``expr`` over the coming year.

    ``0 2 * * 1-5`` gives three days (Friday to Monday), ``0 2 * * *`` 25 hours around
    the autumn DST change, ``* * * * *`` a minute.  A job is overdue when its last
    success is older than this plus the misfire grace.
    """
    from drkit.schedule.cron import cron_trigger

    trigger = cron_trigger(expr, timezone)
    start = (now or datetime.now(UTC)).astimezone(UTC)
    horizon = start + timedelta(days=400)
    previous = trigger.get_next_fire_time(None, start)
    longest = timedelta(0)
    for _ in range(2000):
        if previous is None or previous > horizon:
            break
        after = previous.astimezone(UTC) + timedelta(microseconds=1)  # UTC: see next_runs
        fire = trigger.get_next_fire_time(previous, after)
        if fire is None:
            break
        longest = max(longest, fire.astimezone(UTC) - previous.astimezone(UTC))
        previous = fire
    return longest or timedelta(days=366)


# ---------------------------------------------------------------------------
# The repository side
# ---------------------------------------------------------------------------


@dataclass
class BackupSummary:
    id: str
    finished_at: datetime
    duration: float
    size: int
    restorable_at: datetime


@dataclass
class CatalogSnapshot:
    env: str
    refreshed_at: datetime
    error: str | None = None
    newest: dict[str, BackupSummary] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    wal_last: datetime | None = None
    drill: DrillSummary | None = None
    #: each policy database's newest recoverable point
    databases: dict[str, DatabaseExposure] = field(default_factory=dict)
    wal: WalReach | None = None  # None: WAL archiving is off


def read_catalog(repo: Repository, policy: Policy, now: datetime | None = None) -> CatalogSnapshot:
    """Everything the metrics need from one environment's repository."""
    from drkit.restore import CatalogView

    snapshot = CatalogSnapshot(repo.env, now or datetime.now(UTC))
    view = CatalogView(policy, repo)
    snapshot.databases = view.databases
    snapshot.wal = view.wal
    snapshot.counts = view.counts
    snapshot.newest = {
        kind: BackupSummary(
            manifest.id,
            manifest.finished_by_server,  # a host clock ahead must not hide a stale backup
            manifest.duration,
            manifest.size,
            manifest.restorable_at,
        )
        for kind, manifest in view.newest.items()
    }
    if view.wal_last is not None:
        snapshot.wal_last = view.wal_last.modified
    snapshot.drill = view.drill_summary
    return snapshot


# ---------------------------------------------------------------------------
# The daemon side
# ---------------------------------------------------------------------------


@dataclass
class JobState:
    """One scheduled job of one environment, as the daemon has seen it run."""

    env: str
    job: str
    cron: str
    timezone: str
    period: timedelta
    baseline: datetime
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    running_since: datetime | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_success: datetime | None = None
    last_duration: float | None = None
    #: local wall-clock minute of the last fire (see SchedulerDaemon.run_job)
    last_wall_minute: datetime | None = None

    def record(self, status: str, started: datetime, finished: datetime, error: str | None) -> None:
        self.runs[status] = self.runs.get(status, 0) + 1
        self.last_started = started
        self.last_finished = finished
        self.last_status = status
        self.last_duration = (finished - started).total_seconds()
        if status == "success":
            self.last_success = finished
            self.last_error = None
        elif status == "failure":
            self.last_error = error


@dataclass
class MetricsView:
    """A consistent snapshot of everything the collector exports."""

    policies: list[Policy]
    jobs: list[JobState]
    catalogs: dict[str, CatalogSnapshot]
    locks: dict[str, bool]
    now: datetime


def _ts(value: datetime) -> float:
    return value.timestamp()


def build_metrics(view: MetricsView) -> list[Metric]:
    from drkit.restore import rpo_exposure

    g = GaugeMetricFamily
    last_success = g(
        "drkit_backup_last_success_timestamp_seconds",
        "When the newest complete backup of this kind finished (Unix time).",
        labels=["env", "kind"],
    )
    last_duration = g(
        "drkit_backup_last_duration_seconds",
        "Duration of the newest complete backup of this kind.",
        labels=["env", "kind"],
    )
    last_size = g(
        "drkit_backup_last_size_bytes",
        "Stored size of the newest complete backup of this kind.",
        labels=["env", "kind"],
    )
    # not ``_count``: that suffix belongs to histograms and summaries (promtool check metrics)
    count = g("drkit_backups_stored", "Complete backups in the repository.", labels=["env", "kind"])
    expected = g(
        "drkit_backup_expected_interval_seconds",
        "Longest gap between two scheduled backups of this kind.",
        labels=["env", "kind"],
    )
    wal_enabled = g(
        "drkit_wal_archiving_enabled", "1 when the policy archives WAL.", labels=["env"]
    )
    wal_last = g(
        "drkit_wal_last_archived_timestamp_seconds",
        "When the newest WAL file reached the repository (Unix time).",
        labels=["env"],
    )
    wal_gap = g(
        "drkit_wal_segments_beyond_gap",
        "WAL segments archived past the first missing one on the followed timeline "
        "(0: no gap); restore latest stops at the gap.",
        labels=["env"],
    )
    wal_foreign = g(
        "drkit_wal_foreign_segments",
        "WAL segments at the end of the archive that another cluster wrote.",
        labels=["env"],
    )
    exposure = g(
        "drkit_rpo_exposure_seconds",
        "Age of the newest point a restore can reach: the data at risk now.",
        labels=["env"],
    )
    obj_rpo = g("drkit_objective_rpo_seconds", "The policy's RPO objective.", labels=["env"])
    obj_rto = g("drkit_objective_rto_seconds", "The policy's RTO objective.", labels=["env"])
    drill_rto = g(
        "drkit_drill_rto_seconds",
        "Time each phase of the last drill took (phases may overlap; the total is "
        "drkit_drill_rto_total_seconds).",
        labels=["env", "phase"],
    )
    drill_rto_total = g(
        "drkit_drill_rto_total_seconds",
        "RTO measured by the last drill: its start until the restored data was validated.",
        labels=["env"],
    )
    drill_rpo = g("drkit_drill_rpo_seconds", "RPO achieved by the last drill.", labels=["env"])
    drill_verdict = g(
        "drkit_drill_last_verdict", "1 when the last drill passed, 0 when not.", labels=["env"]
    )
    drill_ts = g(
        "drkit_drill_last_timestamp_seconds", "When the last drill finished.", labels=["env"]
    )
    drill_expected = g(
        "drkit_drill_expected_interval_seconds",
        "Longest gap between two scheduled drills.",
        labels=["env"],
    )
    runs = CounterMetricFamily(
        "drkit_job_runs", "Runs of scheduled jobs by outcome.", labels=["env", "job", "status"]
    )
    job_ok = g(
        "drkit_job_last_run_success", "1 when the job's last run succeeded.", labels=["env", "job"]
    )
    job_last = g(
        "drkit_job_last_run_timestamp_seconds", "When the job last ran.", labels=["env", "job"]
    )
    job_success = g(
        "drkit_job_last_success_timestamp_seconds",
        "When the job last succeeded.",
        labels=["env", "job"],
    )
    job_duration = g(
        "drkit_job_last_duration_seconds", "Duration of the job's last run.", labels=["env", "job"]
    )
    job_running = g("drkit_job_running", "1 while the job runs.", labels=["env", "job"])
    lock_held = g(
        "drkit_scheduler_lock_held",
        "1 when this scheduler holds the environment's lock (runs its jobs).",
        labels=["env"],
    )
    refresh_ok = g(
        "drkit_catalog_last_refresh_success",
        "1 when the last read of the repository catalog worked.",
        labels=["env"],
    )
    refresh_ts = g(
        "drkit_catalog_last_refresh_timestamp_seconds",
        "When the repository catalog was last read.",
        labels=["env"],
    )

    for policy in view.policies:
        env = policy.name
        wal_enabled.add_metric([env], 1.0 if policy.wal_archiving else 0.0)
        if (rpo := policy.objectives.rpo_seconds) is not None:
            obj_rpo.add_metric([env], rpo)
        if (rto := policy.objectives.rto_seconds) is not None:
            obj_rto.add_metric([env], rto)
        lock_held.add_metric([env], 1.0 if view.locks.get(env) else 0.0)
        catalog = view.catalogs.get(env)
        if catalog is None:
            continue
        refresh_ok.add_metric([env], 0.0 if catalog.error else 1.0)
        refresh_ts.add_metric([env], _ts(catalog.refreshed_at))
        for kind, backup in sorted(catalog.newest.items()):
            last_success.add_metric([env, kind], _ts(backup.finished_at))
            last_duration.add_metric([env, kind], backup.duration)
            last_size.add_metric([env, kind], float(backup.size))
        for kind, n in sorted(catalog.counts.items()):
            count.add_metric([env, kind], float(n))
        if catalog.wal_last is not None:
            wal_last.add_metric([env], _ts(catalog.wal_last))
        if catalog.wal is not None:
            wal_gap.add_metric([env], float(catalog.wal.beyond_gap))
            wal_foreign.add_metric([env], float(len(catalog.wal.foreign)))
        seconds = rpo_exposure(catalog.databases, view.now)
        if seconds is not None:  # absent: some database has nothing restorable
            exposure.add_metric([env], seconds)
        if catalog.drill is not None:
            drill = catalog.drill
            drill_ts.add_metric([env], _ts(drill.finished_at))
            if drill.passed is not None:
                drill_verdict.add_metric([env], 1.0 if drill.passed else 0.0)
            for phase, seconds in sorted(drill.rto.items()):
                if phase == "total":  # its own metric, so a sum over phases counts once
                    drill_rto_total.add_metric([env], seconds)
                else:
                    drill_rto.add_metric([env, phase], seconds)
            if drill.rpo is not None:
                drill_rpo.add_metric([env], drill.rpo)

    # one sample per kind: the shortest of its jobs' longest gaps (a weekly full and daily
    # incrementals are both physical; together they never leave a longer gap than that)
    intervals: dict[tuple[str, str], float] = {}
    for job in view.jobs:
        if job.job in JOB_KIND:
            key = (job.env, JOB_KIND[job.job])
            seconds = job.period.total_seconds()
            intervals[key] = min(intervals.get(key, seconds), seconds)
    for (env, kind), seconds in sorted(intervals.items()):
        expected.add_metric([env, kind], seconds)
    for job in view.jobs:
        labels = [job.env, job.job]
        if job.job == "drill":
            drill_expected.add_metric([job.env], job.period.total_seconds())
        for status in RUN_STATUSES:
            runs.add_metric([*labels, status], float(job.runs.get(status, 0)))
        job_running.add_metric(labels, 1.0 if job.running_since else 0.0)
        if job.last_status in ("success", "failure"):
            job_ok.add_metric(labels, 1.0 if job.last_status == "success" else 0.0)
        if job.last_started is not None:
            job_last.add_metric(labels, _ts(job.last_started))
        if job.last_success is not None:
            job_success.add_metric(labels, _ts(job.last_success))
        if job.last_duration is not None:
            job_duration.add_metric(labels, job.last_duration)

    return [
        last_success,
        last_duration,
        last_size,
        count,
        expected,
        wal_enabled,
        wal_last,
        wal_gap,
        wal_foreign,
        exposure,
        obj_rpo,
        obj_rto,
        drill_rto,
        drill_rto_total,
        drill_rpo,
        drill_verdict,
        drill_ts,
        drill_expected,
        runs,
        job_ok,
        job_last,
        job_success,
        job_duration,
        job_running,
        lock_held,
        refresh_ok,
        refresh_ts,
    ]


class DrkitCollector(Collector):
    """A prometheus_client collector over a callable that snapshots the daemon's state."""

    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from build_metrics(self._view())

    def describe(self) -> Iterable[Metric]:
        return []
