"""Planning a point-in-time recovery, before anything is written.

:func:`plan_recovery` chooses the timeline to follow (``--timeline current``:
production's, as recorded in ``<env>/timeline.json``, see :mod:`drkit.wal.timelines`;
``latest``: the archive's highest; or a number), the newest physical backup on that
timeline consistent at or before the target (``latest``: the newest one), whose
incremental chain must be whole, and the WAL chain from it along the timeline.  A target
beyond the unbroken chain, before the oldest backup, or (``latest``) a gap below newer
segments without ``--allow-gap`` is exit 3 with the reachable :class:`Window`: drkit
never recovers to some other point than the one asked for.

Every recovery gets an explicit end: a time target, or for ``latest`` the LSN of the
last whole WAL record of the last planned segment (:func:`last_record_lsn`, read with
pg_waldump from the segment fetched as replay fetches it).  ``drkit status`` reports the
same plan's reach.

With WAL streaming (``drkit wal-receive``), ``latest`` goes further: when the archive is
unbroken and the newest stored partial copy is of the very segment it stops before (the
one replay would ask for next, on the followed timeline), the plan takes it
(:attr:`RecoveryPlan.partial`): the recovery lays it into ``pg_wal`` (where PostgreSQL
reads a segment restore_command does not serve), and the planned end is its last whole
record.  A partial of any other segment is ignored: it cannot continue this chain.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from drkit.backup import (
    Reach,
    RestorePoint,
    WalIndex,
    archived_timelines,
    backup_on_timeline,
    by_id,
    chain_ok,
    reach_on_timeline,
    resolve_chain,
    segment_on_path,
    timeline_history,
)
from drkit.catalog import Manifest, chronological, iso, list_backups
from drkit.errors import CheckFailed, UsageError
from drkit.lsn import format_lsn, parse_lsn
from drkit.restore.target import RecoveryTarget
from drkit.storage import Repository
from drkit.wal import (
    DEFAULT_SEGMENT_SIZE,
    StoredPartial,
    TimelineSwitch,
    download,
    fetch_attempts,
    history_name,
    parse_segment,
    stored_partials,
    timeline_at,
    write_partial,
)


@dataclass
class Window:
    """What point-in-time recovery can reach from this repository.

    ``end`` is where the archive stops being unbroken on the followed timeline: when a
    segment is missing below newer ones, the window ends before the gap."""

    start: datetime | None  # the oldest usable physical backup's consistent point
    end: datetime | None  # when the last reachable WAL segment was archived
    last_wal: str | None
    timeline: int | None = None
    missing: str | None = None  # the first missing segment, when newer ones exist

    def describe(self) -> str:
        if self.start is None:
            return "no physical backups, nothing is reachable (run drkit backup ENV --physical)"
        end = iso(self.end) if self.end else "the end of the archived WAL (none archived yet)"
        where = f" on timeline {self.timeline}" if self.timeline is not None else ""
        text = f"reachable window{where}: {iso(self.start)} .. {end}"
        if self.missing:
            text += f" (WAL segment {self.missing} is missing; newer segments exist past the gap)"
        return text


def consistent_point(manifest: Manifest) -> datetime:
    return manifest.consistent_at or manifest.finished_at


@dataclass
class TimelineChoice:
    """The timeline recovery follows, why, and the others the archive holds."""

    timeline: int
    source: str  # recorded | newest-backup | archive-latest | requested
    recorded: int | None  # production's timeline as recorded in the repository
    others: list[int]


TIMELINE_CHOICES = ("current", "latest")


def parse_timeline(value: str) -> str | int:
    """``--timeline current|latest|N`` (N a decimal timeline ID, 1 or more)."""
    if value in TIMELINE_CHOICES:
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(
            f"--timeline must be current, latest or a timeline ID (1, 2, ...), not {value!r}"
        )
    return number


def choose_timeline(
    repo: Repository, index: WalIndex, backups: list[Manifest], wanted: str | int
) -> TimelineChoice:
    """``current``: production's timeline as recorded in ``<env>/timeline.json`` (by
    ``drkit promote-timeline`` or wal-push from a server that is not a restore test);
    with nothing recorded yet, the timeline of the newest physical backup (backups are
    taken from the policy's own database).  ``latest``: the highest timeline in the
    archive, as PostgreSQL's ``recovery_target_timeline = 'latest'``.  A number: that one.
    """
    from drkit.wal import recorded_timeline

    recorded = recorded_timeline(repo)
    archived = archived_timelines(index)
    if wanted == "latest":
        timeline, source = max(archived), "archive-latest"
    elif isinstance(wanted, int):
        timeline, source = wanted, "requested"
    elif recorded is not None:
        timeline, source = recorded, "recorded"
    elif backups:
        newest = chronological(backups)[-1]
        timeline, source = int(newest.timeline or 1), "newest-backup"
    else:
        timeline, source = 1, "newest-backup"
    return TimelineChoice(timeline, source, recorded, [t for t in archived if t != timeline])


@dataclass
class RecoveryPlan:
    manifest: Manifest
    window: Window
    followed: TimelineChoice
    reach: Reach
    #: the base backups to restore, full first (one, unless ``manifest`` is incremental)
    chain: list[Manifest] = field(default_factory=list)
    #: the followed timeline's switches, and the cluster's WAL segment size
    history: list[TimelineSwitch] = field(default_factory=list)
    segment_size: int = DEFAULT_SEGMENT_SIZE
    #: the target planned for, the restore point a name resolved to, and the LSN a name,
    #: an LSN or ``immediate`` (the backup's consistent point) stops at
    point: RecoveryTarget = field(default_factory=lambda: RecoveryTarget("latest"))
    restore_point: RestorePoint | None = None
    stop_lsn: str | None = None
    #: ``latest`` with streaming: the stored partial copy of the segment after the last
    #: archived one, which the recovery replays from pg_wal
    partial: StoredPartial | None = None

    def planned_segment(self, segno: int) -> str:
        """The name of the segment replay reads at position ``segno`` on this plan."""
        return segment_on_path(segno, self.followed.timeline, self.history, self.segment_size).name(
            self.segment_size
        )


def plan_recovery(
    repo: Repository,
    target: datetime | None,
    *,
    timeline: str | int = "current",
    backup: Manifest | None = None,
    allow_gap: bool = False,
    point: RecoveryTarget | None = None,
) -> RecoveryPlan:
    """Choose the timeline, the base backup and check the WAL chain before anything is
    written: a target the unbroken archive does not reach is exit 3, never a recovery
    to some other point.  ``latest`` with a gap below newer segments is exit 3 too,
    unless ``allow_gap`` says to stop at the gap on purpose.

    ``point`` is a target of any kind (``target`` is then ignored): a time chooses the
    newest backup consistent at or before it, an LSN (or a recorded restore point's) the
    newest whose stop LSN is at or before it, a transaction ID the newest whose recorded
    next transaction ID is at or below it (none committed before its consistent point),
    ``immediate`` the newest backup (or ``backup``), whose consistent point is the end."""
    point = point or RecoveryTarget.at_time(target)
    target = point.time
    if target is not None and (target.tzinfo is None or target.utcoffset() is None):
        raise UsageError("the recovery target must carry a time zone")
    index = WalIndex.load(repo)
    backups = list_backups(repo, "physical")
    followed = choose_timeline(repo, index, backups, timeline)
    tli = followed.timeline
    if (
        tli > 1
        and not index.has(history_name(tli))
        and not any(int(b.timeline or 1) == tli for b in backups)
    ):
        raise CheckFailed(
            f"timeline {tli} is not in the archive of {repo.location} (no {history_name(tli)}); "
            f"timelines found: {', '.join(map(str, archived_timelines(index)))}"
        )
    history = timeline_history(repo, tli, index)
    known = by_id(backups)
    usable = [b for b in backups if backup_on_timeline(b, tli, history) and chain_ok(b, known)]
    start = min((consistent_point(b) for b in usable), default=None)
    empty = Window(start, None, None, tli)
    restore_point = (
        _restore_point(repo, point, tli, history, usable) if point.kind == "name" else None
    )
    stop = restore_point.lsn if restore_point is not None else point.lsn
    if backup is not None:
        if not backup_on_timeline(backup, tli, history):
            raise CheckFailed(
                f"backup {backup.id} (timeline {backup.timeline}) is not on timeline {tli}, "
                f"which recovery follows ({followed.source}); choose another --timeline"
            )
        if target is not None and target < consistent_point(backup):
            raise CheckFailed(
                f"recovery target {iso(target)} is before backup {backup.id} is consistent "
                f"({iso(consistent_point(backup))}); {empty.describe()}"
            )
        if stop is not None and parse_lsn(stop) < stop_lsn(backup):
            raise CheckFailed(
                f"{point.describe()} ({stop}) is before backup {backup.id} is consistent "
                f"({format_lsn(stop_lsn(backup))}); {empty.describe()}"
            )
        resolve_chain(backup, known)  # a broken chain: exit 3 naming the missing link
        manifest = backup
    elif not usable:
        others = (
            f" (other physical backups are on timelines {sorted({int(b.timeline or 1) for b in backups})})"
            if backups
            else ""
        )
        raise CheckFailed(
            f"no physical backup to recover from on timeline {tli}{others}: {empty.describe()}"
        )
    elif point.kind in ("lsn", "name", "xid"):
        manifest = _precedes(repo, point, usable, stop, tli, history, index, start)
    elif target is None:
        manifest = chronological(usable)[-1]
    else:
        candidates = [b for b in usable if consistent_point(b) <= target]
        if not candidates:
            oldest = min(consistent_point(b) for b in usable)
            newest = chronological(usable)[-1]
            reach = reach_on_timeline(repo, newest, tli, index, history)
            window = window_of(start, reach)
            raise CheckFailed(
                f"recovery target {iso(target)} is before the oldest physical backup "
                f"(consistent at {iso(oldest)}); {window.describe()}"
            )
        manifest = chronological(candidates)[-1]
    reach = reach_on_timeline(repo, manifest, tli, index, history)
    window = window_of(start, reach)
    partial = None
    if reach.required_missing:
        raise CheckFailed(
            f"backup {manifest.id} cannot be restored: WAL segment {reach.missing}, which it "
            f"needs to become consistent, is missing from the archive (drkit verify names "
            f"every gap); {window.describe()}"
        )
    if point.kind in ("lsn", "name"):
        _check_reached_by(point, str(stop), reach, window, size_of(manifest))
    elif point.kind in ("xid", "immediate"):
        pass  # the base backup's own WAL is there; PostgreSQL refuses to end short of an xid
    elif target is None:
        partial = None if reach.gap or point.kind != "latest" else _continuing_partial(repo, reach)
        if partial is not None:
            window.end = partial.modified.astimezone(UTC)
        if reach.gap and not allow_gap:
            raise CheckFailed(
                f"the archive has a gap on timeline {tli}: WAL segment {reach.missing} is "
                f"missing and {reach.newer_segments} newer segment(s) exist up to "
                f"{reach.newest_segment}; the last reachable point is {reach.last_segment} "
                f"(archived {iso(reach.end)}). Restore the missing segment, or pass "
                "--allow-gap to recover up to the gap on purpose"
            )
    elif reach.end is None or target > reach.end:
        raise CheckFailed(
            f"recovery target {iso(target)} is after the last WAL reachable without a gap "
            f"({reach.last_segment or 'none'}); {window.describe()}"
        )
    chain = resolve_chain(manifest, known)
    plan = RecoveryPlan(manifest, window, followed, reach, chain, history, size_of(manifest))
    plan.point, plan.restore_point = point, restore_point
    plan.partial = partial
    plan.stop_lsn = (
        stop
        if stop is not None
        else (format_lsn(stop_lsn(manifest)) if point.kind == "immediate" else None)
    )
    return plan


def _continuing_partial(repo: Repository, reach: Reach) -> StoredPartial | None:
    """The newest stored partial copy of ``reach.missing``, the segment replay asks for
    after the last archived one; None without one."""
    found = [p for p in stored_partials(repo) if p.segment == reach.missing]
    return max(found, key=lambda p: p.end, default=None)


def size_of(manifest: Manifest) -> int:
    """The WAL segment size of the cluster a backup was taken from."""
    return int(manifest.extra.get("wal_segment_size", DEFAULT_SEGMENT_SIZE))


def stop_lsn(manifest: Manifest) -> int:
    """Where a base backup is consistent: its stop LSN, as the server said."""
    point = manifest.server_point
    if point is not None:
        return point.lsn
    if manifest.wal_stop:
        return parse_lsn(manifest.wal_stop)
    raise CheckFailed(f"backup {manifest.id} records no stop LSN: it cannot anchor an LSN target")


def _restore_point(
    repo: Repository,
    point: RecoveryTarget,
    tli: int,
    history: list[TimelineSwitch],
    usable: list[Manifest],
) -> RestorePoint:
    """The recorded restore point a named target resolves to; refused when drkit did not
    record it, when it is of another cluster, or off the followed timeline's path."""
    from drkit.backup import get_restore_point

    name = str(point.name)
    recorded = get_restore_point(repo, name)
    if recorded is None:
        raise CheckFailed(
            f"restore point {name!r} is not recorded in {repo.location} (drkit restore-point "
            "ENV NAME records one; drkit backups ENV lists them)"
        )
    systems = {b.system_identifier for b in usable if b.system_identifier}
    if systems and recorded.system_identifier not in systems:
        raise CheckFailed(
            f"restore point {name!r} was made on the cluster with system identifier "
            f"{recorded.system_identifier}, not the one the backups are of ({', '.join(sorted(systems))})"
        )
    on_path = timeline_at(max(parse_lsn(recorded.lsn) - 1, 0), tli, history)
    if on_path != recorded.timeline:
        raise CheckFailed(
            f"restore point {name!r} is on timeline {recorded.timeline}, and recovery follows "
            f"timeline {tli}, which does not pass through it; pass --timeline {recorded.timeline}"
        )
    return recorded


def _precedes(
    repo: Repository,
    point: RecoveryTarget,
    usable: list[Manifest],
    stop: str | None,
    tli: int,
    history: list[TimelineSwitch],
    index: WalIndex,
    start: datetime | None,
) -> Manifest:
    """The newest usable backup that precedes an LSN or a transaction ID target."""
    if point.kind == "xid":
        recorded = [b for b in usable if b.extra.get("next_xid") is not None]
        if not recorded:
            raise CheckFailed(
                f"{point.describe()}: no physical backup on timeline {tli} records its next "
                "transaction ID (taken before drkit recorded it), so none can be chosen to "
                "precede it; take a new base backup, or give --target-lsn or --point-in-time"
            )
        candidates = [b for b in recorded if int(b.extra["next_xid"]) <= int(str(point.xid))]
        what = f"transaction {point.xid}"
    else:
        candidates = [b for b in usable if stop_lsn(b) <= parse_lsn(str(stop))]
        what = f"{stop}"
    if not candidates:
        newest = chronological(usable)[-1]
        window = window_of(start, reach_on_timeline(repo, newest, tli, index, history))
        raise CheckFailed(
            f"{point.describe()}: no physical backup on timeline {tli} is consistent before "
            f"{what}; {window.describe()}"
        )
    return chronological(candidates)[-1]


def _check_reached_by(
    point: RecoveryTarget, stop: str, reach: Reach, window: Window, size: int
) -> None:
    """An LSN target must lie within the WAL the unbroken archive holds."""
    if reach.last_segment is None:
        end = 0
    else:
        end = (parse_segment(reach.last_segment, size).segno + 1) * size
    if parse_lsn(stop) > end:
        raise CheckFailed(
            f"{point.describe()} ({stop}) is after the last WAL reachable without a gap "
            f"({reach.last_segment or 'none'}); {window.describe()}"
        )


_RECORD_LSN_RE = re.compile(r"\blsn: ([0-9A-F]+/[0-9A-F]+),")


def last_record_lsn(repo: Repository, plan: RecoveryPlan) -> str:
    """The LSN of the last whole WAL record of the plan's last segment (pg_waldump).

    The segment is fetched the way replay fetches it (checked, retried), so a damaged
    last segment fails here, before anything is written.  A segment holding no record
    start (the middle of a record larger than a segment) is read with the segments
    before it, back to the first one that starts a record."""
    from drkit.pg import find_binary

    manifest = plan.manifest
    major = manifest.major
    waldump = find_binary("pg_waldump", major)
    last = str(plan.reach.last_segment)
    first_segno = parse_segment(str(manifest.wal_start_segment), plan.segment_size).segno
    segno = parse_segment(last, plan.segment_size).segno
    if plan.partial is not None:  # streamed: its last record is the end
        last = plan.partial.segment
        segno += 1
    with tempfile.TemporaryDirectory(prefix="drkit-waldump-") as tmp:
        while True:
            name = plan.planned_segment(segno)
            if plan.partial is not None and name == plan.partial.segment:
                write_partial(repo, plan.partial, Path(tmp) / name, plan.segment_size)
            elif not download(repo, name, Path(tmp) / name, attempts=fetch_attempts()):
                raise CheckFailed(f"WAL segment {name} vanished from {repo.location} meanwhile")
            proc = subprocess.run(
                [waldump, "--path", tmp, name, last],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            found = _RECORD_LSN_RE.findall(proc.stdout)
            if found or segno <= first_segno:
                break
            segno -= 1
    if not found:
        raise CheckFailed(
            f"no whole WAL record found in {last} to stop at "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pg_waldump printed none'}); "
            "give a time target inside the window instead"
        )
    return format_lsn(parse_lsn(found[-1]))  # as PostgreSQL prints it: 0/40001D0


def window_of(start: datetime | None, reach: Reach) -> Window:
    """The window from the oldest usable backup's consistent point to a WAL reach."""
    return Window(
        start, reach.end, reach.last_segment, reach.timeline, reach.missing if reach.gap else None
    )
