"""What a restore can reach from one repository: the catalog view.

One place answers, for an environment's repository (read from the repository only: no
database login, so it works when the database is the thing that is gone):

* the newest backup of each kind, and how many are stored;
* the newest archived WAL file;
* how far ``restore --point-in-time latest`` gets through the WAL archive
  (:func:`wal_reach`): the gap that stops it, the segments another cluster wrote;
* the recoverable window (:func:`recoverable_window`);
* each policy database's newest recoverable point, and the RPO exposure they give
  (:func:`rpo_exposure`);
* the drill reports stored under ``drills/`` (:func:`latest_report`, :func:`past_reports`);
* with ``wal_streaming``, the replication slot's lag (:attr:`CatalogView.slot`), the one
  answer read from the database server.

:class:`CatalogView` reads each answer once, when first asked.  ``drkit status``
(:mod:`drkit.status`) judges and renders it, the scheduler's ``/metrics``
(:mod:`drkit.schedule.metrics`) exports it, a drill reads its history and the newest
recoverable point from it, and ``prune`` reports the window that remains with
:func:`~drkit.catalog.manifests.restorable_span`, the backup part of the same window.

The view lives beside the recovery planner because the WAL's share of the window is
where ``restore latest`` stops: :func:`wal_reach` runs that very plan
(:func:`drkit.restore.pitr.plan_recovery`), so status, metrics and restore cannot
disagree.  Drill reports are read as the JSON documents the drill stores, so this
module knows nothing of how a drill runs (and a drill may use it).

RPO exposure is measured per database of the policy, from the backups that hold it (a
partial ``drkit backup ENV --database shop`` refreshes ``shop`` only); the environment's
exposure is the worst of them, and a database no backup holds is "nothing restorable",
however fresh the others are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from drkit.catalog import Manifest, list_backups, parse_ts, restorable_span
from drkit.errors import CheckFailed, StorageError

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage import ObjectInfo, Repository
    from drkit.wal import SlotLag

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# The WAL archive: its newest file, and how far restore latest gets through it
# ---------------------------------------------------------------------------


@dataclass
class WalReach:
    """What the WAL archive adds to the recoverable window: how far ``restore latest``
    gets on the followed timeline, and what stops it there."""

    timeline: int | None = None
    backup_id: str | None = None  # the base backup recovery would start from
    backup_point: datetime | None = None  # its consistent point
    last_segment: str | None = None  # the last segment replay reaches
    end: datetime | None = None  # when that segment was archived
    first_missing: str | None = None  # the first missing segment, when newer ones exist
    beyond_gap: int = 0  # segments archived past it on the followed timeline
    foreign: list[str] = field(default_factory=list)  # another cluster's, oldest first
    unchecked: str | None = None  # why the segments' cluster could not be read
    problem: str | None = None  # why the archive adds nothing


def wal_reach(repo: Repository) -> WalReach:
    """How far ``restore --point-in-time latest`` gets: the same plan (timeline, base
    backup, the walk to the first missing segment, with ``--allow-gap``), then back past
    the segments at the end that carry another cluster's system identifier (replay
    rejects them).  The newest object in ``wal/`` counts for nothing by itself."""
    from drkit.backup import own_tail, timeline_history
    from drkit.restore.plan import consistent_point, plan_recovery
    from drkit.wal import read_identity, wal_candidate_keys

    try:
        plan = plan_recovery(repo, None, allow_gap=True)
    except (CheckFailed, StorageError) as exc:
        return WalReach(problem=str(exc))
    except ValueError as exc:  # a physical manifest without its WAL start/stop
        return WalReach(problem=f"a base backup cannot be followed by WAL: {exc}")
    reach = plan.reach
    out = WalReach(
        timeline=reach.timeline,
        backup_id=plan.manifest.id,
        backup_point=consistent_point(plan.manifest),
        last_segment=reach.last_segment,
        end=plan.window.end if plan.partial is not None else reach.end,  # streamed further
        first_missing=reach.missing if reach.gap else None,
        beyond_gap=reach.newer_segments if reach.gap else 0,
    )
    if reach.last_segment is None:
        return out
    try:
        reference = plan.manifest.system_identifier or read_identity(repo)
        if reference is None:
            out.unchecked = "no system identifier recorded for the archive or its backup"
            return out
        history = timeline_history(repo, reach.timeline)
        tail = own_tail(repo, plan.manifest, reach, reference, history)
    except (CheckFailed, StorageError) as exc:
        out.unchecked = str(exc)
        return out
    out.foreign = list(reversed(tail.foreign))
    if tail.last_own != reach.last_segment:
        out.last_segment = tail.last_own
        info = (
            repo.backend.first_existing(wal_candidate_keys(repo, tail.last_own))
            if tail.last_own
            else None
        )
        out.end = info.modified.astimezone(UTC) if info else None
        if tail.last_own is None:
            out.problem = (
                f"the last {len(tail.foreign)} segments of the archive are another "
                "cluster's" + ("" if tail.checked_all else " (and maybe more before them)")
            )
    return out


def newest_wal(repo: Repository) -> ObjectInfo | None:
    """The newest WAL file in ``wal/`` by its stored time (None: none, or unreadable)."""
    try:
        wal = repo.list("wal/")
    except StorageError as exc:
        log.warning("listing the WAL archive of %s failed: %s", repo.env, exc)
        return None
    from drkit.wal import CHECKSUM_SUFFIX

    wal = [info for info in wal if not info.key.endswith(CHECKSUM_SUFFIX)]  # WAL files only
    return max(wal, key=lambda info: (info.modified, info.key)) if wal else None


# ---------------------------------------------------------------------------
# The recoverable window and the RPO exposure
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoverableWindow:
    """The points a restore can reach: each backup's consistent point and, with WAL,
    every point from the base backup ``restore latest`` starts from to the last segment
    it reaches (``continuous_from``: that backup's point; None without WAL)."""

    oldest: datetime | None = None
    newest: datetime | None = None
    continuous_from: datetime | None = None


def recoverable_window(manifests: list[Manifest], wal: WalReach | None) -> RecoverableWindow:
    """The window of ``manifests`` and, when WAL is archived (``wal`` not None), of the
    WAL ``restore latest`` replays on top of one of them."""
    oldest, newest = restorable_span(manifests)
    continuous_from = None
    if (
        wal is not None
        and wal.end is not None
        and wal.backup_point is not None
        and any(m.id == wal.backup_id for m in manifests if m.kind == "physical")
    ):
        continuous_from = wal.backup_point
        if wal.end >= continuous_from and newest is not None:
            newest = max(newest, wal.end)
    return RecoverableWindow(oldest, newest, continuous_from)


@dataclass
class DatabaseExposure:
    """Where one database stands: the newest backup holding it, the newest point a
    restore of it can reach."""

    database: str
    backup: Manifest | None
    newest_point: datetime | None


def database_exposures(
    policy: Policy, manifests: list[Manifest], wal: WalReach | None
) -> dict[str, DatabaseExposure]:
    """Each policy database's newest backup and newest recoverable point, counting only
    the backups that hold it."""
    out = {}
    for database in policy.database.database_names():
        holding = [m for m in manifests if database in m.databases]
        newest = recoverable_window(holding, wal).newest
        out[database] = DatabaseExposure(database, holding[-1] if holding else None, newest)
    return out


def exposure_at(now: datetime, point: datetime | None) -> float | None:
    """The data at risk at ``now`` when ``point`` is the newest one a restore reaches
    (seconds, never negative; None: nothing restorable)."""
    return None if point is None else max(0.0, (now - point).total_seconds())


def worst_database(databases: dict[str, DatabaseExposure], now: datetime) -> str | None:
    """The database with the largest exposure at ``now`` (one with nothing restorable
    first)."""
    if not databases:
        return None

    def badness(item: DatabaseExposure) -> tuple[int, float, str]:
        exposure = exposure_at(now, item.newest_point)
        return (1, 0.0, item.database) if exposure is None else (0, exposure, item.database)

    return max(databases.values(), key=badness).database


def rpo_exposure(databases: dict[str, DatabaseExposure], now: datetime) -> float | None:
    """The RPO exposure at ``now``: the worst database's (None: some database has nothing
    restorable).  ``drkit status`` and ``drkit_rpo_exposure_seconds`` are this."""
    worst = worst_database(databases, now)
    return None if worst is None else exposure_at(now, databases[worst].newest_point)


# ---------------------------------------------------------------------------
# Drill reports: drills/<drill-id>/report.json
# ---------------------------------------------------------------------------

REPORT_NAME = "report.json"
HISTORY_LIMIT = 12


def report_key(drill_id: str) -> str:
    """Where a drill's report is stored, relative to the environment's prefix."""
    return f"drills/{drill_id}/{REPORT_NAME}"


def stored_drills(repo: Repository) -> dict[str, ObjectInfo]:
    """Drill id -> its stored report object, oldest first (ids start with their UTC
    time)."""
    start = len(repo.key("drills/"))
    found = {
        info.key[start:].split("/", 1)[0]: info
        for info in repo.list("drills/")
        if info.key.endswith("/" + REPORT_NAME)
    }
    return {drill_id: found[drill_id] for drill_id in sorted(found)}


def drill_ids(repo: Repository) -> list[str]:
    """Drill ids with a stored report, oldest first."""
    return list(stored_drills(repo))


def load_report(repo: Repository, drill_id: str) -> dict[str, Any]:
    return repo.get_json(report_key(drill_id))


def past_reports(
    repo: Repository, limit: int = HISTORY_LIMIT, *, exclude: str | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` stored reports, oldest first; unreadable ones are skipped."""
    ids = [i for i in drill_ids(repo) if i != exclude][-limit:]
    reports = []
    for drill_id in ids:
        try:
            reports.append(load_report(repo, drill_id))
        except (CheckFailed, StorageError) as exc:
            log.warning("drill report %s unreadable: %s", drill_id, exc)
    return reports


def latest_report(repo: Repository) -> dict[str, Any] | None:
    """The newest readable drill report (an unreadable newer one is logged and passed)."""
    for drill_id in reversed(drill_ids(repo)):
        try:
            return load_report(repo, drill_id)
        except (CheckFailed, StorageError) as exc:
            log.warning("drill report %s unreadable: %s", drill_id, exc)
    return None


def report_finished_at(doc: dict[str, Any]) -> datetime | None:
    try:
        return parse_ts(doc.get("finished_at")) or parse_ts(doc.get("started_at"))
    except (TypeError, ValueError):
        return None


@dataclass
class DrillSummary:
    """The numbers of one drill report: its verdict, when it finished, the RTO by
    phase (``total`` among them) and the RPO achieved, in seconds."""

    id: str
    finished_at: datetime
    passed: bool | None
    rto: dict[str, float] = field(default_factory=dict)
    rpo: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _timestamp(value: Any) -> datetime | None:
    try:
        return parse_ts(value)
    except (TypeError, ValueError):
        return None


def parse_drill_report(doc: dict[str, Any], drill_id: str, modified: datetime) -> DrillSummary:
    """Read the numbers of a drill report, tolerating absent fields (``modified``, the
    stored object's time, stands in for a report that says no time).

    Read: ``verdict`` PASS/FAIL, ``finished_at``, ``rto`` as
    ``{"total": s, "<phase>": s, ...}`` (or ``rto_seconds``), ``rpo`` / ``rpo_seconds``
    in seconds (or ``{"achieved": s}``).
    """
    verdict = str(doc.get("verdict", "")).upper()
    passed = True if verdict == "PASS" else False if verdict else None
    finished = _timestamp(doc.get("finished_at")) or _timestamp(doc.get("started_at")) or modified
    rto: dict[str, float] = {}
    raw_rto = doc.get("rto", doc.get("rto_seconds"))
    if isinstance(raw_rto, dict):
        nested = raw_rto.get("phases")
        phases: dict[str, Any] = nested if isinstance(nested, dict) else raw_rto
        for phase, value in phases.items():
            number = _number(value)
            if number is not None:
                rto[str(phase).removesuffix("_seconds")] = number
        total = _number(raw_rto.get("total", raw_rto.get("total_seconds")))
        if total is not None:
            rto["total"] = total
    elif (number := _number(raw_rto)) is not None:
        rto["total"] = number
    raw_rpo = doc.get("rpo", doc.get("rpo_seconds"))
    if isinstance(raw_rpo, dict):
        raw_rpo = raw_rpo.get("achieved", raw_rpo.get("achieved_seconds", raw_rpo.get("seconds")))
    return DrillSummary(drill_id, finished, passed, rto, _number(raw_rpo))


def newest_drill_summary(repo: Repository) -> DrillSummary | None:
    """The numbers of the newest stored drill report; None when there is none or it
    cannot be read (logged: a malformed report must not hide the rest of the catalog)."""
    stored = stored_drills(repo)
    if not stored:
        return None
    drill_id, info = list(stored.items())[-1]
    try:
        return parse_drill_report(load_report(repo, drill_id), drill_id, info.modified)
    except Exception as exc:
        log.warning("drill report %s of %s unreadable: %s", drill_id, repo.env, exc)
        return None


# ---------------------------------------------------------------------------
# The view
# ---------------------------------------------------------------------------


class CatalogView:
    """One repository's catalog, each answer read once when first asked.

    ``manifests`` are oldest first in the server's order; ``wal`` is None when the
    policy does not archive WAL.  Reading errors reach the caller of the answer that
    needed the read, except the newest WAL file's (logged, answered None)."""

    def __init__(self, policy: Policy, repo: Repository) -> None:
        self.policy = policy
        self.repo = repo

    @cached_property
    def manifests(self) -> list[Manifest]:
        return list_backups(self.repo)

    @property
    def newest(self) -> dict[str, Manifest]:
        """Kind -> the newest backup of that kind."""
        out: dict[str, Manifest] = {}
        for manifest in self.manifests:  # oldest first: the newest of each kind wins
            out[manifest.kind] = manifest
        return out

    @property
    def counts(self) -> dict[str, int]:
        """Kind -> how many backups of that kind are stored."""
        out: dict[str, int] = {}
        for manifest in self.manifests:
            out[manifest.kind] = out.get(manifest.kind, 0) + 1
        return out

    @cached_property
    def wal_last(self) -> ObjectInfo | None:
        return newest_wal(self.repo)

    @cached_property
    def wal(self) -> WalReach | None:
        return wal_reach(self.repo) if self.policy.wal_archiving else None

    @cached_property
    def slot(self) -> SlotLag | None:
        """With ``wal_streaming``, the lag of the environment's replication slot: the one
        answer read from the database server (the slot lives only there), and a server
        that cannot be reached makes it unknown, never an error.  None without streaming."""
        if not self.policy.wal_streaming.enabled:
            return None
        from drkit.wal import slot_lag, stored_partials

        stored = [p.modified for p in stored_partials(self.repo)]
        if self.wal_last is not None:
            stored.append(self.wal_last.modified)
        newest = max((t.astimezone(UTC) for t in stored), default=None)
        return slot_lag(self.policy, newest, datetime.now(UTC))

    @property
    def window(self) -> RecoverableWindow:
        return recoverable_window(self.manifests, self.wal)

    @cached_property
    def databases(self) -> dict[str, DatabaseExposure]:
        return database_exposures(self.policy, self.manifests, self.wal)

    def rpo_exposure(self, now: datetime) -> float | None:
        return rpo_exposure(self.databases, now)

    @property
    def newest_recoverable_point(self) -> datetime | None:
        """The newest point every policy database can be restored to (the worst
        database's newest point; None when some database is held by no backup)."""
        points = [e.newest_point for e in self.databases.values()]
        if not points or any(p is None for p in points):
            return None
        return min(p for p in points if p is not None)

    @cached_property
    def drill(self) -> dict[str, Any] | None:
        """The newest readable drill report."""
        return latest_report(self.repo)

    @cached_property
    def drill_history(self) -> list[dict[str, Any]]:
        """The last stored drill reports (:data:`HISTORY_LIMIT`), oldest first."""
        return past_reports(self.repo)

    @cached_property
    def drill_summary(self) -> DrillSummary | None:
        """The numbers of the newest stored drill report (None when it is unreadable)."""
        return newest_drill_summary(self.repo)
