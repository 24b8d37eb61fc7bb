"""What the scheduler knows, as Prometheus metrics.

Two sources, so the values are right after a restart too:

* the repository catalog of each environment (:func:`read_catalog`, from the catalog
  view :class:`drkit.restore.window.CatalogView`): newest backup of each kind, newest
  archived WAL, how far the WAL archive reaches (gaps, another cluster's segments),
  newest drill report — re-read at start, after every job and every minute;
* the daemon's own job runs (:class:`JobState`): counters, last status, last success.

Each metric is one row of :data:`METRICS` (name, help, labels, and the samples a
:class:`MetricsView` gives it): adding a metric is adding a row.  :class:`DrkitCollector`
turns a snapshot of both sources into metric families at scrape time, so
``drkit_rpo_exposure_seconds`` grows between scrapes as it should; it is the same
computation as ``drkit status``'s (:func:`drkit.restore.window.rpo_exposure`).  Every
name the daemon can export is in :data:`METRIC_NAMES`; ``tests/schedule/test_monitoring.py``
checks the alert rules use only those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drkit.schedule.jobs import JOBS, RUN_STATUSES, JobState

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.restore import DatabaseExposure, DrillSummary, WalReach
    from drkit.storage import Repository
    from drkit.wal import SlotLag


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
    #: the last stored drill reports, oldest first (the status page's chart)
    drills: list[dict[str, Any]] = field(default_factory=list)
    slot: SlotLag | None = None  # None: WAL streaming is off

    def newest_made(self, makes: str | None) -> datetime | None:
        """When the newest of what a job makes finished: a backup of that kind, or a
        drill that passed (a job's last success after a restart)."""
        if makes in self.newest:
            return self.newest[makes].finished_at
        if makes == "drill" and self.drill and self.drill.passed:
            return self.drill.finished_at
        return None


def read_catalog(
    repo: Repository,
    policy: Policy,
    now: datetime | None = None,
    previous: CatalogSnapshot | None = None,
) -> CatalogSnapshot:
    """Everything the metrics and the status page need from one environment's
    repository (``previous``: the last snapshot, whose drill reports are kept while the
    newest drill is the same, so they are not read again every refresh)."""
    from drkit.restore import CatalogView

    snapshot = CatalogSnapshot(repo.env, now or datetime.now(UTC))
    view = CatalogView(policy, repo)
    snapshot.databases = view.databases
    snapshot.wal = view.wal
    snapshot.slot = view.slot
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
    kept = previous.drills if previous is not None else []
    if snapshot.drill is None:
        snapshot.drills = []
    elif kept and kept[-1].get("id") == snapshot.drill.id:
        snapshot.drills = kept
    else:
        snapshot.drills = view.drill_history
    return snapshot


# ---------------------------------------------------------------------------
# The daemon side
# ---------------------------------------------------------------------------


@dataclass
class MetricsView:
    """A consistent snapshot of everything the collector exports."""

    policies: list[Policy]
    jobs: list[JobState]
    catalogs: dict[str, CatalogSnapshot]
    locks: dict[str, bool]
    now: datetime


# ---------------------------------------------------------------------------
# The metrics: one row each
# ---------------------------------------------------------------------------

#: one sample: its label values (in the row's label order) and its value
Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class MetricRow:
    """One exported metric: its name, help text, labels, and the samples a
    :class:`MetricsView` gives it (none: the metric is absent from the scrape)."""

    name: str
    help: str
    labels: tuple[str, ...]
    samples: Callable[[MetricsView], Iterable[Sample]]
    counter: bool = False  # exported with the ``_total`` suffix

    @property
    def exported_name(self) -> str:
        return f"{self.name}_total" if self.counter else self.name

    def family(self, view: MetricsView) -> Metric:
        kind = CounterMetricFamily if self.counter else GaugeMetricFamily
        family = kind(self.name, self.help, labels=list(self.labels))
        for labels, value in self.samples(view):
            family.add_metric(list(labels), value)
        return family


def _ts(value: datetime) -> float:
    return value.timestamp()


def _flag(value: object) -> float:
    return 1.0 if value else 0.0


def per_env(
    value: Callable[[Policy, MetricsView], float | None],
) -> Callable[[MetricsView], Iterable[Sample]]:
    """Samples labelled ``env``, one per policy whose ``value`` is not None."""

    def samples(view: MetricsView) -> Iterator[Sample]:
        for policy in view.policies:
            if (number := value(policy, view)) is not None:
                yield (policy.name,), number

    return samples


def per_catalog(
    values: Callable[[CatalogSnapshot, datetime], Iterable[Sample]],
) -> Callable[[MetricsView], Iterable[Sample]]:
    """Samples labelled ``env`` then the labels ``values`` gives, for each policy whose
    catalog has been read."""

    def samples(view: MetricsView) -> Iterator[Sample]:
        for policy in view.policies:
            catalog = view.catalogs.get(policy.name)
            if catalog is not None:
                for labels, number in values(catalog, view.now):
                    yield (policy.name, *labels), number

    return samples


def per_job(value: Callable[[JobState], float | None]) -> Callable[[MetricsView], Iterable[Sample]]:
    """Samples labelled ``env`` and ``drkit_job``, one per scheduled job whose ``value``
    is not None."""

    def samples(view: MetricsView) -> Iterator[Sample]:
        for job in view.jobs:
            if (number := value(job)) is not None:
                yield (job.env, job.job), number

    return samples


def one(value: float | None) -> list[Sample]:
    """A catalog's single sample (none when ``value`` is None)."""
    return [] if value is None else [((), value)]


def _drill(catalog: CatalogSnapshot, value: Callable[[DrillSummary], float | None]) -> list[Sample]:
    return [] if catalog.drill is None else one(value(catalog.drill))


def _wal(catalog: CatalogSnapshot, value: Callable[[WalReach], float]) -> list[Sample]:
    return [] if catalog.wal is None else one(value(catalog.wal))


def backup_intervals(view: MetricsView) -> Iterator[Sample]:
    """One sample per kind: the shortest of its jobs' longest gaps (a weekly full and
    daily incrementals are both physical; together they never leave a longer gap)."""
    intervals: dict[tuple[str, str], float] = {}
    from drkit.catalog import KINDS

    for job in view.jobs:
        kind = JOBS[job.job].makes if job.job in JOBS else None
        if kind in KINDS:
            key = (job.env, kind)
            seconds = job.period.total_seconds()
            intervals[key] = min(intervals.get(key, seconds), seconds)
    yield from sorted(intervals.items())


def drill_intervals(view: MetricsView) -> Iterator[Sample]:
    for job in view.jobs:
        if job.job in JOBS and JOBS[job.job].makes == "drill":
            yield (job.env,), job.period.total_seconds()


def job_runs(view: MetricsView) -> Iterator[Sample]:
    for job in view.jobs:
        for status in RUN_STATUSES:
            yield (job.env, job.job, status), float(job.runs.get(status, 0))


def _slot(catalog: CatalogSnapshot, value: Callable[[SlotLag], float | None]) -> list[Sample]:
    """A streaming environment's slot sample (none without streaming or when unknown)."""
    return [] if catalog.slot is None else one(value(catalog.slot))


def _rpo_exposure(catalog: CatalogSnapshot, now: datetime) -> list[Sample]:
    from drkit.restore import rpo_exposure

    return one(rpo_exposure(catalog.databases, now))  # absent: some database has nothing


ENV = ("env",)
ENV_KIND = ("env", "kind")
#: ``drkit_job``, never ``job``: that label is Prometheus's own (the scrape job), and
#: exporting one would force ``honor_labels`` on every scrape config
ENV_JOB = ("env", "drkit_job")

#: every metric the daemon exports, in the order of a scrape
METRICS: tuple[MetricRow, ...] = (
    MetricRow(
        "drkit_backup_last_success_timestamp_seconds",
        "When the newest complete backup of this kind finished (Unix time).",
        ENV_KIND,
        per_catalog(lambda c, _: [((k,), _ts(b.finished_at)) for k, b in sorted(c.newest.items())]),
    ),
    MetricRow(
        "drkit_backup_last_duration_seconds",
        "Duration of the newest complete backup of this kind.",
        ENV_KIND,
        per_catalog(lambda c, _: [((k,), b.duration) for k, b in sorted(c.newest.items())]),
    ),
    MetricRow(
        "drkit_backup_last_size_bytes",
        "Stored size of the newest complete backup of this kind.",
        ENV_KIND,
        per_catalog(lambda c, _: [((k,), float(b.size)) for k, b in sorted(c.newest.items())]),
    ),
    # not ``_count``: that suffix belongs to histograms and summaries (promtool check metrics)
    MetricRow(
        "drkit_backups_stored",
        "Complete backups in the repository.",
        ENV_KIND,
        per_catalog(lambda c, _: [((k,), float(n)) for k, n in sorted(c.counts.items())]),
    ),
    MetricRow(
        "drkit_backup_expected_interval_seconds",
        "Longest gap between two scheduled backups of this kind.",
        ENV_KIND,
        backup_intervals,
    ),
    MetricRow(
        "drkit_wal_archiving_enabled",
        "1 when the policy archives WAL.",
        ENV,
        per_env(lambda p, _: _flag(p.wal_archiving)),
    ),
    MetricRow(
        "drkit_wal_last_archived_timestamp_seconds",
        "When the newest WAL file reached the repository (Unix time).",
        ENV,
        per_catalog(lambda c, _: one(_ts(c.wal_last) if c.wal_last is not None else None)),
    ),
    MetricRow(
        "drkit_wal_segments_beyond_gap",
        "WAL segments archived past the first missing one on the followed timeline "
        "(0: no gap); restore latest stops at the gap.",
        ENV,
        per_catalog(lambda c, _: _wal(c, lambda w: float(w.beyond_gap))),
    ),
    MetricRow(
        "drkit_wal_foreign_segments",
        "WAL segments at the end of the archive that another cluster wrote.",
        ENV,
        per_catalog(lambda c, _: _wal(c, lambda w: float(len(w.foreign)))),
    ),
    MetricRow(
        "drkit_wal_slot_lag_bytes",
        "WAL the streaming slot drkit_ENV is behind (wal_streaming): not yet received while "
        "wal-receive streams, else held on the server for the slot.",
        ENV,
        per_catalog(lambda c, _: _slot(c, lambda s: s.lag_bytes)),
    ),
    MetricRow(
        "drkit_wal_slot_lag_seconds",
        "How long the WAL held for the streaming slot has waited: the server's write lag "
        "while wal-receive streams, else the age of the newest WAL it stored.",
        ENV,
        per_catalog(lambda c, _: _slot(c, lambda s: s.lag_seconds)),
    ),
    MetricRow(
        "drkit_wal_slot_active",
        "1 while wal-receive streams from the slot; 0 when it does not or the slot is gone "
        "(absent while the server cannot be reached).",
        ENV,
        per_catalog(lambda c, _: _slot(c, lambda s: _flag(s.active) if s.reached else None)),
    ),
    MetricRow(
        "drkit_rpo_exposure_seconds",
        "Age of the newest point a restore can reach: the data at risk now.",
        ENV,
        per_catalog(_rpo_exposure),
    ),
    MetricRow(
        "drkit_objective_rpo_seconds",
        "The policy's RPO objective.",
        ENV,
        per_env(lambda p, _: p.objectives.rpo_seconds),
    ),
    MetricRow(
        "drkit_objective_rto_seconds",
        "The policy's RTO objective.",
        ENV,
        per_env(lambda p, _: p.objectives.rto_seconds),
    ),
    MetricRow(
        "drkit_drill_rto_seconds",
        "Time each phase of the last drill took (phases may overlap; the total is "
        "drkit_drill_rto_total_seconds).",
        ("env", "phase"),
        per_catalog(
            lambda c, _: [
                ((phase,), seconds)
                for phase, seconds in sorted(c.drill.rto.items() if c.drill else ())
                if phase != "total"  # its own metric, so a sum over phases counts once
            ]
        ),
    ),
    MetricRow(
        "drkit_drill_rto_total_seconds",
        "RTO measured by the last drill: its start until the restored data was validated.",
        ENV,
        per_catalog(lambda c, _: _drill(c, lambda d: d.rto.get("total"))),
    ),
    MetricRow(
        "drkit_drill_rpo_seconds",
        "RPO achieved by the last drill.",
        ENV,
        per_catalog(lambda c, _: _drill(c, lambda d: d.rpo)),
    ),
    MetricRow(
        "drkit_drill_last_verdict",
        "1 when the last drill passed, 0 when not.",
        ENV,
        per_catalog(
            lambda c, _: _drill(c, lambda d: None if d.passed is None else _flag(d.passed))
        ),
    ),
    MetricRow(
        "drkit_drill_last_timestamp_seconds",
        "When the last drill finished.",
        ENV,
        per_catalog(lambda c, _: _drill(c, lambda d: _ts(d.finished_at))),
    ),
    MetricRow(
        "drkit_drill_expected_interval_seconds",
        "Longest gap between two scheduled drills.",
        ENV,
        drill_intervals,
    ),
    MetricRow(
        "drkit_job_runs",
        "Runs of scheduled jobs by outcome.",
        ("env", "drkit_job", "status"),
        job_runs,
        counter=True,
    ),
    MetricRow(
        "drkit_job_last_run_success",
        "1 when the job's last run succeeded.",
        ENV_JOB,
        per_job(
            lambda j: (
                _flag(j.last_status == "success")
                if j.last_status in ("success", "failure")
                else None
            )
        ),
    ),
    MetricRow(
        "drkit_job_last_run_timestamp_seconds",
        "When the job last ran.",
        ENV_JOB,
        per_job(lambda j: _ts(j.last_started) if j.last_started is not None else None),
    ),
    MetricRow(
        "drkit_job_last_success_timestamp_seconds",
        "When the job last succeeded.",
        ENV_JOB,
        per_job(lambda j: _ts(j.last_success) if j.last_success is not None else None),
    ),
    MetricRow(
        "drkit_job_last_duration_seconds",
        "Duration of the job's last run.",
        ENV_JOB,
        per_job(lambda j: j.last_duration),
    ),
    MetricRow(
        "drkit_job_running",
        "1 while the job runs.",
        ENV_JOB,
        per_job(lambda j: _flag(j.running_since)),
    ),
    MetricRow(
        "drkit_scheduler_lock_held",
        "1 when this scheduler holds the environment's lock (runs its jobs).",
        ENV,
        per_env(lambda p, v: _flag(v.locks.get(p.name))),
    ),
    MetricRow(
        "drkit_catalog_last_refresh_success",
        "1 when the last read of the repository catalog worked.",
        ENV,
        per_catalog(lambda c, _: one(0.0 if c.error else 1.0)),
    ),
    MetricRow(
        "drkit_catalog_last_refresh_timestamp_seconds",
        "When the repository catalog was last read.",
        ENV,
        per_catalog(lambda c, _: one(_ts(c.refreshed_at))),
    ),
)

#: every name a scrape can show (counters with their ``_total``)
METRIC_NAMES = frozenset(row.exported_name for row in METRICS)


def build_metrics(view: MetricsView) -> list[Metric]:
    return [row.family(view) for row in METRICS]


class DrkitCollector(Collector):
    """A prometheus_client collector over a callable that snapshots the daemon's state."""

    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from build_metrics(self._view())

    def describe(self) -> Iterable[Metric]:
        return []
