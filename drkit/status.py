"""``drkit status ENV``: where an environment stands against its objectives, on one screen.

Read from the repository only (no database connection, so it works when the database
is the thing that is gone): the newest backup of each kind and its age, the newest
archived WAL file and its age, the current RPO exposure (now minus the newest point a
restore could reach), the last drill's verdict, RTO and age, and the recoverable window.

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

from drkit.backup.catalog import Manifest, iso, list_backups
from drkit.config import Policy, format_duration
from drkit.errors import StorageError
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
class StatusReport:
    env: str
    now: datetime
    rpo_objective: float | None
    rto_objective: float | None
    wal_archiving: bool
    backups: dict[str, Manifest] = field(default_factory=dict)  # kind -> newest
    backup_count: int = 0
    wal_last: ObjectInfo | None = None
    newest_point: datetime | None = None
    oldest_point: datetime | None = None
    continuous_from: datetime | None = None
    drill: dict[str, Any] | None = None
    breached: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)
    databases: dict[str, DatabaseExposure] = field(default_factory=dict)

    def exposure_of(self, point: datetime | None) -> float | None:
        return None if point is None else max(0.0, (self.now - point).total_seconds())

    @property
    def worst_database(self) -> str | None:
        """The database with the largest exposure (one with nothing restorable first)."""
        if not self.databases:
            return None

        def badness(item: DatabaseExposure) -> tuple[int, float, str]:
            exposure = self.exposure_of(item.newest_point)
            return (1, 0.0, item.database) if exposure is None else (0, exposure, item.database)

        return max(self.databases.values(), key=badness).database

    @property
    def rpo_exposure(self) -> float | None:
        """The worst database's exposure (None: some database has nothing restorable)."""
        worst = self.worst_database
        if worst is not None:
            return self.exposure_of(self.databases[worst].newest_point)
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
                }
                for kind, m in sorted(self.backups.items())
            },
            "backup_count": self.backup_count,
            "wal": {
                "archiving": self.wal_archiving,
                "last_file": self.wal_last.key.rsplit("/", 1)[-1] if self.wal_last else None,
                "last_archived_at": iso(self.wal_last.modified) if self.wal_last else None,
                "age_seconds": self.age(self.wal_last.modified) if self.wal_last else None,
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
        }


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
    policy: Policy, manifests: list[Manifest], wal_last: ObjectInfo | None
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(oldest, newest, continuous_from): the window a restore can reach.

    Each backup is a point (its consistent point); with WAL archiving, everything from
    the oldest base backup to the newest archived WAL file is reachable by PITR.
    """
    points = [m.consistent_at or m.finished_at for m in manifests]
    continuous_from = None
    physical = [m for m in manifests if m.kind == "physical"]
    if policy.wal_archiving and physical and wal_last is not None:
        continuous_from = min(m.consistent_at or m.finished_at for m in physical)
        if wal_last.modified >= continuous_from:
            points.append(wal_last.modified)
    if not points:
        return None, None, None
    return min(points), max(points), continuous_from


def database_exposures(
    policy: Policy, manifests: list[Manifest], wal_last: ObjectInfo | None
) -> dict[str, DatabaseExposure]:
    """Each policy database's newest backup and newest recoverable point, counting only
    the backups that hold it."""
    out = {}
    for database in policy.database.database_names():
        holding = [m for m in manifests if database in m.databases]
        newest = recoverable_points(policy, holding, wal_last)[1]
        out[database] = DatabaseExposure(database, holding[-1] if holding else None, newest)
    return out


def newest_recoverable_point(policy: Policy, repo: Repository) -> datetime | None:
    """The newest point every policy database can be restored to (the worst database's
    newest point; None when some database is held by no backup)."""
    manifests = list_backups(repo)
    wal_last = newest_wal(repo) if policy.wal_archiving else None
    points = [e.newest_point for e in database_exposures(policy, manifests, wal_last).values()]
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
        manifests = list_backups(repo)
        report.backup_count = len(manifests)
        for manifest in manifests:  # oldest first: the newest of each kind wins
            report.backups[manifest.kind] = manifest
        report.wal_last = newest_wal(repo)
        report.oldest_point, report.newest_point, report.continuous_from = recoverable_points(
            policy, manifests, report.wal_last
        )
        report.databases = database_exposures(policy, manifests, report.wal_last)
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
    return report


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
