"""``drkit status ENV``: where an environment stands against its objectives, on one screen.

Read from the repository only (no database login, so it works when the database is the
thing that is gone; a policy without ``databases:`` has its database named by libpq,
which needs no server for that): the newest backup of each kind and its age, the newest
archived WAL file and its age, the current RPO exposure (now minus the newest point a
restore could reach), the last drill's verdict, RTO and age, and the recoverable window.

What WAL adds is what ``restore --point-in-time latest`` would reach (:func:`wal_reach`
plans that very recovery): along the followed timeline from the newest usable base
backup up to the last segment before the first missing one, and back past segments at
the archive's end that another cluster wrote (replay rejects them).  A gap and foreign
segments are reported; the newest object in ``wal/`` counts for nothing by itself.
``drkit status`` and the daemon's ``/metrics`` both take the exposure from
:func:`recoverable` and :func:`rpo_exposure`.

RPO exposure is measured per database of the policy, from the backups that hold it (a
partial ``drkit backup ENV --database shop`` refreshes ``shop`` only), and the
environment's exposure is the worst of them: a database no backup holds is "nothing
restorable", however fresh the others are.

An objective is *breached* — ``drkit status`` exits 3 — when the RPO exposure exceeds
the RPO objective (or nothing is restorable for some database), or when the last drill's measured
RTO exceeded the RTO objective.  Other findings (no drill yet, the last drill failed,
WAL archiving on but no WAL) put the status line on ATTENTION without breaching.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drkit.backup.catalog import Manifest, iso, list_backups, skewed_backups
from drkit.backup.order import SKEW_BOUND, describe_skew
from drkit.config import Policy, format_duration
from drkit.errors import CheckFailed, StorageError
from drkit.progress import human_size
from drkit.storage.base import ObjectInfo
from drkit.storage.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class DatabaseExposure:
    """Where one database stands: the newest backup holding it, the newest point a
    restore of it can reach."""

    database: str
    backup: Manifest | None
    newest_point: datetime | None


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "followed_timeline": self.timeline,
            "reachable_segment": self.last_segment,
            "reachable_at": iso(self.end),
            "gap": (
                {"first_missing": self.first_missing, "segments_beyond": self.beyond_gap}
                if self.first_missing
                else None
            ),
            "foreign_segments": self.foreign,
            "identity_unchecked": self.unchecked,
            "unreachable": self.problem,
        }


def wal_reach(repo: Repository) -> WalReach:
    """How far ``restore --point-in-time latest`` gets: the same plan (timeline, base
    backup, the walk to the first missing segment, with ``--allow-gap``), then back past
    the segments at the end that carry another cluster's system identifier."""
    from drkit.backup.walchain import own_tail, timeline_history
    from drkit.restore import consistent_point, plan_recovery
    from drkit.wal_identity import read_identity
    from drkit.wal_keys import wal_candidate_keys

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
        end=reach.end,
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


@dataclass
class StatusReport:
    env: str
    now: datetime
    rpo_objective: float | None
    rto_objective: float | None
    wal_archiving: bool
    backups: dict[str, Manifest] = field(default_factory=dict)  # kind -> newest
    backup_count: int = 0
    wal_last: ObjectInfo | None = None
    wal: WalReach | None = None  # None: WAL archiving is off
    newest_point: datetime | None = None
    oldest_point: datetime | None = None
    continuous_from: datetime | None = None
    drill: dict[str, Any] | None = None
    breached: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)
    databases: dict[str, DatabaseExposure] = field(default_factory=dict)
    #: backups taken while the host clock disagreed with the server's, oldest first
    skewed: list[Manifest] = field(default_factory=list)

    def exposure_of(self, point: datetime | None) -> float | None:
        return None if point is None else max(0.0, (self.now - point).total_seconds())

    @property
    def worst_database(self) -> str | None:
        """The database with the largest exposure (one with nothing restorable first)."""
        return worst_database(self.databases, self.now)

    @property
    def rpo_exposure(self) -> float | None:
        """The worst database's exposure (None: some database has nothing restorable)."""
        if self.databases:
            return rpo_exposure(self.databases, self.now)
        return self.exposure_of(self.newest_point)

    @property
    def ok(self) -> bool:
        return not self.breached and not self.attention

    def age(self, when: datetime | None) -> float | None:
        return None if when is None else round((self.now - when).total_seconds(), 1)

    def to_dict(self) -> dict[str, Any]:
        drill = None
        if self.drill is not None:
            finished = _drill_time(self.drill)
            drill = {
                "id": self.drill.get("id"),
                "verdict": self.drill.get("verdict"),
                "backup_id": (self.drill.get("backup") or {}).get("id"),
                "rto_seconds": (self.drill.get("rto") or {}).get("total"),
                "rpo_seconds": (self.drill.get("rpo") or {}).get("achieved"),
                "finished_at": iso(finished),
                "age_seconds": self.age(finished),
            }
        return {
            "environment": self.env,
            "now": iso(self.now),
            "status": "OK" if self.ok else "ATTENTION",
            "breached": self.breached,
            "attention": self.attention,
            "objectives": {"rpo_seconds": self.rpo_objective, "rto_seconds": self.rto_objective},
            "backups": {
                kind: {
                    "id": m.id,
                    "finished_at": iso(m.finished_at),
                    "consistent_at": iso(m.consistent_at),
                    "age_seconds": self.age(m.consistent_at or m.finished_at),
                    "size": m.size,
                    "size_bytes": m.size,
                    "clock_skewed": m.clock_skewed,
                }
                for kind, m in sorted(self.backups.items())
            },
            "backup_count": self.backup_count,
            "wal": {
                "archiving": self.wal_archiving,
                "last_file": self.wal_last.key.rsplit("/", 1)[-1] if self.wal_last else None,
                "last_archived_at": iso(self.wal_last.modified) if self.wal_last else None,
                "age_seconds": self.age(self.wal_last.modified) if self.wal_last else None,
                **(self.wal or WalReach()).to_dict(),
            },
            "rpo_exposure_seconds": self.rpo_exposure,
            "rpo_worst_database": self.worst_database,
            "databases": {
                name: {
                    "last_backup_id": item.backup.id if item.backup else None,
                    "newest_point": iso(item.newest_point),
                    "rpo_exposure_seconds": self.exposure_of(item.newest_point),
                }
                for name, item in sorted(self.databases.items())
            },
            "recoverable_window": {
                "oldest": iso(self.oldest_point),
                "newest": iso(self.newest_point),
                "continuous_from": iso(self.continuous_from),
            },
            "last_drill": drill,
            "clock_skewed_backups": [m.id for m in self.skewed],
        }


def _exposure(now: datetime, point: datetime | None) -> float | None:
    return None if point is None else max(0.0, (now - point).total_seconds())


def worst_database(databases: dict[str, DatabaseExposure], now: datetime) -> str | None:
    """The database with the largest exposure at ``now`` (one with nothing restorable
    first)."""
    if not databases:
        return None

    def badness(item: DatabaseExposure) -> tuple[int, float, str]:
        exposure = _exposure(now, item.newest_point)
        return (1, 0.0, item.database) if exposure is None else (0, exposure, item.database)

    return max(databases.values(), key=badness).database


def rpo_exposure(databases: dict[str, DatabaseExposure], now: datetime) -> float | None:
    """The RPO exposure at ``now``: the worst database's (None: some database has nothing
    restorable).  ``drkit status`` and ``drkit_rpo_exposure_seconds`` are this."""
    worst = worst_database(databases, now)
    return None if worst is None else _exposure(now, databases[worst].newest_point)


def _drill_time(doc: dict[str, Any]) -> datetime | None:
    from drkit.drill.report import report_finished_at

    return report_finished_at(doc)


def newest_wal(repo: Repository) -> ObjectInfo | None:
    try:
        wal = repo.list("wal/")
    except StorageError as exc:
        log.warning("listing the WAL archive of %s failed: %s", repo.env, exc)
        return None
    from drkit.wal_keys import CHECKSUM_SUFFIX

    wal = [info for info in wal if not info.key.endswith(CHECKSUM_SUFFIX)]  # WAL files only
    return max(wal, key=lambda info: (info.modified, info.key)) if wal else None


def recoverable_points(
    policy: Policy, manifests: list[Manifest], wal: WalReach | None
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(oldest, newest, continuous_from): the window a restore can reach.

    Each backup is a point (its consistent point); with WAL archiving, every point from
    the base backup ``restore latest`` starts from to the last segment it reaches.
    """
    points = [m.consistent_at or m.finished_at for m in manifests]
    continuous_from = None
    physical = [m for m in manifests if m.kind == "physical"]
    if (
        policy.wal_archiving
        and wal is not None
        and wal.end is not None
        and wal.backup_point is not None
        and any(m.id == wal.backup_id for m in physical)
    ):
        continuous_from = wal.backup_point
        if wal.end >= continuous_from:
            points.append(wal.end)
    if not points:
        return None, None, None
    return min(points), max(points), continuous_from


def database_exposures(
    policy: Policy, manifests: list[Manifest], wal: WalReach | None
) -> dict[str, DatabaseExposure]:
    """Each policy database's newest backup and newest recoverable point, counting only
    the backups that hold it."""
    out = {}
    for database in policy.database.database_names():
        holding = [m for m in manifests if database in m.databases]
        newest = recoverable_points(policy, holding, wal)[1]
        out[database] = DatabaseExposure(database, holding[-1] if holding else None, newest)
    return out


@dataclass
class Recoverable:
    """What a restore can reach from one repository: the single source of ``drkit
    status``'s and ``/metrics``' RPO exposure."""

    manifests: list[Manifest]
    wal_last: ObjectInfo | None
    wal: WalReach | None  # None: WAL archiving is off
    databases: dict[str, DatabaseExposure]


def recoverable(policy: Policy, repo: Repository) -> Recoverable:
    manifests = list_backups(repo)
    wal_last = newest_wal(repo)
    wal = wal_reach(repo) if policy.wal_archiving else None
    return Recoverable(manifests, wal_last, wal, database_exposures(policy, manifests, wal))


def newest_recoverable_point(policy: Policy, repo: Repository) -> datetime | None:
    """The newest point every policy database can be restored to (the worst database's
    newest point; None when some database is held by no backup)."""
    points = [e.newest_point for e in recoverable(policy, repo).databases.values()]
    if not points or any(p is None for p in points):
        return None
    return min(p for p in points if p is not None)


def collect_status(
    policy: Policy, repo: Repository | None = None, now: datetime | None = None
) -> StatusReport:
    from drkit.drill.report import PASS, latest_report

    own = repo is None
    repo = repo or Repository.for_policy(policy)
    try:
        report = StatusReport(
            env=policy.name,
            now=now or datetime.now(UTC),
            rpo_objective=policy.objectives.rpo_seconds,
            rto_objective=policy.objectives.rto_seconds,
            wal_archiving=policy.wal_archiving,
        )
        state = recoverable(policy, repo)
        manifests = state.manifests
        report.backup_count = len(manifests)
        for manifest in manifests:  # oldest first: the newest of each kind wins
            report.backups[manifest.kind] = manifest
        report.wal_last = state.wal_last
        report.wal = state.wal
        report.oldest_point, report.newest_point, report.continuous_from = recoverable_points(
            policy, manifests, state.wal
        )
        report.databases = state.databases
        report.skewed = skewed_backups(manifests)
        with contextlib.suppress(StorageError):
            report.drill = latest_report(repo)
    finally:
        if own:
            repo.close()

    exposure = report.rpo_exposure
    if report.rpo_objective is not None:
        objective = format_duration_s(report.rpo_objective)
        worst = report.worst_database
        named = worst is not None and len(report.databases) > 1
        of = f" of database {worst}" if named else ""
        if exposure is None:
            report.breached.append(
                f"RPO: nothing is restorable{f' for database {worst}' if named else ''} "
                f"(objective {objective})"
            )
        elif exposure > report.rpo_objective:
            report.breached.append(
                f"RPO: the newest recoverable point{of} is {format_duration_s(exposure)} old "
                f"(objective {objective})"
            )
    elif not manifests:
        report.attention.append("no backup in the repository")
    if report.skewed:
        report.attention.append(skew_attention(report.skewed))
    if report.drill is None:
        report.attention.append(f"no drill has run: drkit drill {policy.name}")
    else:
        verdict = str(report.drill.get("verdict", "?"))
        rto = (report.drill.get("rto") or {}).get("total")
        if (
            report.rto_objective is not None
            and isinstance(rto, int | float)
            and rto > report.rto_objective
        ):
            report.breached.append(
                f"RTO: the last drill needed {format_duration_s(float(rto))} "
                f"(objective {format_duration_s(report.rto_objective)})"
            )
        if verdict != PASS:
            report.attention.append(f"the last drill's verdict is {verdict}")
    if policy.wal_archiving and report.wal_last is None:
        report.attention.append("WAL archiving is on but the repository holds no WAL")
    elif report.wal is not None:
        report.attention += wal_findings(report.wal)
    return report


def skew_attention(skewed: list[Manifest]) -> str:
    """One line about the backups taken with a wrong host clock (``skewed``, oldest first)."""
    newest = skewed[-1]
    skew = newest.host_skew
    how = f"{describe_skew(skew)} the server's" if skew is not None else "off"
    return (
        f"{len(skewed)} backup(s) taken while drkit's host clock disagreed with the database "
        f"server's by more than {format_duration(SKEW_BOUND)} (newest {newest.id}: host "
        f"clock {how}): their ids and start times are wrong (their order is not); fix the "
        "host clock (NTP)"
    )


def wal_findings(wal: WalReach) -> list[str]:
    """What the operator must look at in the WAL archive, one line each."""
    found = []
    if wal.first_missing:
        found.append(
            f"WAL gap on timeline {wal.timeline}: segment {wal.first_missing} is missing and "
            f"{wal.beyond_gap} newer segment(s) exist past it; restore latest stops at "
            f"{wal.last_segment or 'the base backup'} (restore the missing segment)"
        )
    if wal.foreign:
        shown = ", ".join(wal.foreign[:3]) + (" ..." if len(wal.foreign) > 3 else "")
        found.append(
            f"{len(wal.foreign)} WAL segment(s) at the end of the archive are another "
            f"cluster's ({shown}): another server archives into this environment; replay "
            f"stops before them, at {wal.last_segment or 'the base backup'}"
        )
    if wal.problem and not wal.foreign:
        found.append(f"WAL adds nothing to the recoverable window: {wal.problem}")
    return found


def format_duration_s(seconds: float) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=round(seconds)))


def _when(report: StatusReport, ts: datetime | None) -> str:
    if ts is None:
        return "-"
    age = report.age(ts) or 0.0
    return f"{ts.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%SZ')} ({format_duration_s(age)} ago)"


def render_status(report: StatusReport) -> list[str]:
    """The one screen of ``drkit status``, as plain lines."""
    lines = [f"environment {report.env} at {report.now.strftime('%Y-%m-%d %H:%M:%SZ')}"]
    for kind in ("logical", "physical"):
        manifest = report.backups.get(kind)
        if manifest is None:
            lines.append(f"  last {kind + ' backup':<17} none")
        else:
            lines.append(
                f"  last {kind + ' backup':<17} {manifest.id}, consistent at "
                f"{_when(report, manifest.consistent_at or manifest.finished_at)}, "
                f"{human_size(manifest.size)}"
            )
    if report.wal_last is not None:
        lines.append(
            f"  last archived WAL      {report.wal_last.key.rsplit('/', 1)[-1]}, "
            f"{_when(report, report.wal_last.modified)}"
        )
    else:
        lines.append(
            "  last archived WAL      "
            + ("none" if report.wal_archiving else "none (WAL archiving is off)")
        )
    if report.wal is not None and report.wal.last_segment:
        lines.append(
            f"  restore latest reaches {report.wal.last_segment}, archived "
            f"{_when(report, report.wal.end)}"
        )
    exposure = report.rpo_exposure
    objective = (
        "no objective" if report.rpo_objective is None else format_duration_s(report.rpo_objective)
    )
    lines.append(
        "  RPO exposure           "
        + ("nothing restorable" if exposure is None else format_duration_s(exposure))
        + f" (objective {objective})"
        + (
            f", worst: database {report.worst_database}"
            if len(report.databases) > 1 and report.worst_database
            else ""
        )
    )
    if len(report.databases) > 1:
        for name, item in sorted(report.databases.items()):
            exposure_db = report.exposure_of(item.newest_point)
            lines.append(
                f"    database {name:<14} "
                + (
                    "nothing restorable"
                    if exposure_db is None
                    else f"{format_duration_s(exposure_db)} (backup {item.backup.id})"
                    if item.backup
                    else format_duration_s(exposure_db)
                )
            )
    if report.drill is None:
        lines.append("  last drill             none")
    else:
        drill = report.drill
        rto = (drill.get("rto") or {}).get("total")
        rto_objective = (
            "no objective"
            if report.rto_objective is None
            else format_duration_s(report.rto_objective)
        )
        lines.append(
            f"  last drill             {drill.get('verdict')} ({drill.get('id')}), RTO "
            + (format_duration_s(float(rto)) if isinstance(rto, int | float) else "-")
            + f" (objective {rto_objective}), {_when(report, _drill_time(drill))}"
        )
    window = "-"
    if report.newest_point is not None:
        window = f"{_stamp(report.oldest_point)} .. {_stamp(report.newest_point)}"
        if report.continuous_from is not None:
            window += f" (any point from {_stamp(report.continuous_from)} with WAL)"
    lines.append(f"  recoverable window     {window}")
    if report.breached:
        lines += [f"  BREACHED: {b}" for b in report.breached]
    lines += [f"  attention: {a}" for a in report.attention]
    lines.append("OK" if report.ok else "ATTENTION")
    return lines


def _stamp(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"
