"""``drkit status ENV``: where an environment stands against its objectives, on one screen.

What it shows comes from the catalog view (:class:`drkit.restore.window.CatalogView`,
the same answers the scheduler's ``/metrics`` export): the newest backup of each kind
and its age, the newest archived WAL file and its age, how far ``restore latest`` gets
through the WAL (a gap and foreign segments are reported), the current RPO exposure
(now minus the newest point a restore could reach, for the worst database of the
policy), the last drill's verdict, RTO and age, and the recoverable window.  This module
judges those answers against the objectives and renders them.

An objective is *breached* — ``drkit status`` exits 3 — when the RPO exposure exceeds
the RPO objective (or nothing is restorable for some database), or when the last drill's measured
RTO exceeded the RTO objective.  Other findings (no drill yet, the last drill failed,
WAL archiving on but no WAL) put the status line on ATTENTION without breaching.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from drkit.catalog import SKEW_BOUND, Manifest, describe_skew, iso, skewed_backups
from drkit.config import Policy, format_duration
from drkit.documents import Document, Shape, Timestamp, described
from drkit.errors import StorageError
from drkit.progress import human_size
from drkit.restore import (
    CatalogView,
    DatabaseExposure,
    WalReach,
    exposure_at,
    report_finished_at,
    rpo_exposure,
    worst_database,
)
from drkit.storage import ObjectInfo, Repository

if TYPE_CHECKING:
    from drkit.wal import SlotLag


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
    slot: SlotLag | None = None  # None: WAL streaming is off

    def exposure_of(self, point: datetime | None) -> float | None:
        return exposure_at(self.now, point)

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

    def document(self) -> StatusDocument:
        drill = None
        if self.drill is not None:
            finished = report_finished_at(self.drill)
            drill = StatusDrill(
                id=self.drill.get("id"),
                verdict=self.drill.get("verdict"),
                backup_id=(self.drill.get("backup") or {}).get("id"),
                rto_seconds=(self.drill.get("rto") or {}).get("total"),
                rpo_seconds=(self.drill.get("rpo") or {}).get("achieved"),
                finished_at=iso(finished),
                age_seconds=self.age(finished),
            )
        reach = self.wal or WalReach()
        return StatusDocument(
            ok=True,  # the exit code decides (an attention line alone exits 0)
            environment=self.env,
            now=iso(self.now),
            status="OK" if self.ok else "ATTENTION",
            breached=self.breached,
            attention=self.attention,
            objectives={"rpo_seconds": self.rpo_objective, "rto_seconds": self.rto_objective},
            backups={
                kind: StatusBackup(
                    id=m.id,
                    finished_at=iso(m.finished_at),
                    consistent_at=iso(m.consistent_at),
                    age_seconds=self.age(m.consistent_at or m.finished_at),
                    size_bytes=m.size,
                    size=m.size,
                    clock_skewed=m.clock_skewed,
                )
                for kind, m in sorted(self.backups.items())
            },
            backup_count=self.backup_count,
            wal=StatusWal(
                archiving=self.wal_archiving,
                last_file=self.wal_last.key.rsplit("/", 1)[-1] if self.wal_last else None,
                last_archived_at=iso(self.wal_last.modified) if self.wal_last else None,
                age_seconds=self.age(self.wal_last.modified) if self.wal_last else None,
                followed_timeline=reach.timeline,
                reachable_segment=reach.last_segment,
                reachable_at=iso(reach.end),
                gap=(
                    StatusWalGap(
                        first_missing=reach.first_missing, segments_beyond=reach.beyond_gap
                    )
                    if reach.first_missing
                    else None
                ),
                foreign_segments=reach.foreign,
                identity_unchecked=reach.unchecked,
                unreachable=reach.problem,
            ),
            rpo_exposure_seconds=self.rpo_exposure,
            rpo_worst_database=self.worst_database,
            databases={
                name: StatusDatabase(
                    last_backup_id=item.backup.id if item.backup else None,
                    newest_point=iso(item.newest_point),
                    rpo_exposure_seconds=self.exposure_of(item.newest_point),
                )
                for name, item in sorted(self.databases.items())
            },
            recoverable_window=StatusWindow(
                oldest=iso(self.oldest_point),
                newest=iso(self.newest_point),
                continuous_from=iso(self.continuous_from),
            ),
            last_drill=drill,
            streaming=None if self.slot is None else _streaming(self.slot),
            clock_skewed_backups=[m.id for m in self.skewed],
        )


def _streaming(slot: SlotLag) -> StatusStreaming:
    return StatusStreaming(
        slot=slot.slot,
        reached=slot.reached,
        exists=slot.exists,
        active=slot.active,
        lag_bytes=slot.lag_bytes,
        lag_seconds=None if slot.lag_seconds is None else round(slot.lag_seconds, 1),
        problem=slot.problem,
    )


def collect_status(
    policy: Policy, repo: Repository | None = None, now: datetime | None = None
) -> StatusReport:
    """Read the catalog view of ``policy``'s repository, then judge it (:func:`judge`)."""
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
        view = CatalogView(policy, repo)
        report.backup_count = len(view.manifests)
        report.backups = view.newest
        report.wal_last = view.wal_last
        report.wal = view.wal
        window = view.window
        report.oldest_point, report.newest_point = window.oldest, window.newest
        report.continuous_from = window.continuous_from
        report.databases = view.databases
        report.skewed = skewed_backups(view.manifests)
        report.slot = view.slot
        with contextlib.suppress(StorageError):
            report.drill = view.drill
    finally:
        if own:
            repo.close()
    judge(report, policy)
    return report


def judge(report: StatusReport, policy: Policy) -> None:
    """Fill ``breached`` and ``attention``: the RPO and RTO objectives, then what the
    operator should look at (clock skew, drills, WAL)."""
    from drkit.drill import PASS

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
    elif not report.backup_count:
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
    if report.slot is not None:
        report.attention += slot_findings(report.slot, report.rpo_objective)
    if policy.wal_archiving and report.wal_last is None:
        report.attention.append("WAL archiving is on but the repository holds no WAL")
    elif report.wal is not None:
        report.attention += wal_findings(report.wal)


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


def slot_findings(slot: SlotLag, rpo_objective: float | None) -> list[str]:
    """What the operator must look at in WAL streaming, one line each."""
    if not slot.reached or not slot.exists:
        return [f"WAL streaming: {slot.problem}"]
    found = []
    if not slot.active:
        found.append(
            f"WAL streaming: no wal-receive streams from slot {slot.slot}, which holds "
            f"{human_size(slot.lag_bytes or 0)} of WAL on the server"
        )
    if rpo_objective is not None and (slot.lag_seconds or 0) > rpo_objective:
        found.append(
            f"WAL streaming: slot {slot.slot} is {format_duration_s(slot.lag_seconds or 0)} "
            f"behind (RPO objective {format_duration_s(rpo_objective)})"
        )
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
    if report.slot is not None:
        slot = report.slot
        if slot.reached and slot.exists:
            lag = "-" if slot.lag_seconds is None else format_duration_s(slot.lag_seconds)
            lines.append(
                f"  WAL streaming slot     {slot.slot} "
                f"{'active' if slot.active else 'INACTIVE'}, lag "
                f"{human_size(slot.lag_bytes or 0)} / {lag}"
            )
        else:
            lines.append(f"  WAL streaming slot     unknown: {slot.problem}")
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
            + f" (objective {rto_objective}), {_when(report, report_finished_at(drill))}"
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


# -- the --json documents --------------------------------------------------------


class StatusBackup(Shape):
    id: str
    finished_at: Timestamp
    consistent_at: Timestamp | None
    age_seconds: float | None
    size_bytes: int = described("bytes stored")
    size: int = described("the same as size_bytes (kept for version 1; prefer size_bytes)")
    clock_skewed: bool = described(
        "taken while drkit's host clock disagreed with the server's (see drkit backups)",
        default=False,
    )


class StatusWalGap(Shape):
    first_missing: str = described("the first WAL segment missing on the followed timeline")
    segments_beyond: int = described("segments archived past it: replay cannot reach them")


class StatusWal(Shape):
    archiving: bool
    last_file: str | None = described("the newest object in wal/ (whether reachable or not)")
    last_archived_at: Timestamp | None
    age_seconds: float | None
    followed_timeline: int | None = described("the timeline restore latest follows")
    reachable_segment: str | None = described(
        "the last segment restore latest reaches: before any gap, of this cluster"
    )
    reachable_at: Timestamp | None = described(
        "when that segment was archived: the newest point WAL adds to the window"
    )
    gap: StatusWalGap | None = described("null when the followed timeline has no gap")
    foreign_segments: list[str] = described(
        "segments at the end of the archive that another cluster wrote, oldest first"
    )
    identity_unchecked: str | None = described(
        "why the segments' cluster could not be read (encrypted without an identity, ...)"
    )
    unreachable: str | None = described("why the WAL archive adds nothing to the window")


class StatusDatabase(Shape):
    last_backup_id: str | None
    newest_point: Timestamp | None
    rpo_exposure_seconds: float | None


class StatusWindow(Shape):
    oldest: Timestamp | None
    newest: Timestamp | None
    continuous_from: Timestamp | None


class StatusDrill(Shape):
    id: str | None
    verdict: str | None
    backup_id: str | None
    rto_seconds: float | None
    rpo_seconds: float | None
    finished_at: Timestamp | None
    age_seconds: float | None


class StatusStreaming(Shape):
    slot: str = described("the physical replication slot, drkit_ENV")
    reached: bool = described("whether the database server answered")
    exists: bool
    active: bool = described("whether wal-receive streams from it now")
    lag_bytes: int | None = described(
        "WAL not yet received while streaming, else held on the server for the slot"
    )
    lag_seconds: float | None = described(
        "the server's write lag while streaming, else the age of the newest WAL streamed"
    )
    problem: str | None


class StatusDocument(Document):
    """`drkit status ENV --json` (exit 3 when an objective is breached)"""

    environment: str
    now: Timestamp
    status: Literal["OK", "ATTENTION"]
    breached: list[str]
    attention: list[str]
    objectives: dict[str, float | None] = described("rpo_seconds and rto_seconds")
    backups: dict[str, StatusBackup] = described("the newest backup of each kind")
    backup_count: int
    wal: StatusWal
    rpo_exposure_seconds: float | None
    rpo_worst_database: str | None
    databases: dict[str, StatusDatabase]
    recoverable_window: StatusWindow
    last_drill: StatusDrill | None
    streaming: StatusStreaming | None = described(
        "with wal_streaming: the replication slot and its lag", default=None
    )
    clock_skewed_backups: list[str] = described(
        "backups taken while drkit's host clock disagreed with the database server's by "
        f"more than {SKEW_BOUND.total_seconds():g} s, oldest first (an attention line names "
        "them): their ids and host times are wrong, their order is not",
        default_factory=list,
    )
