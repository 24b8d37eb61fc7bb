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
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drkit.backup.catalog import Manifest, iso, list_backups
from drkit.backup.chain import by_id, chain_ok, resolve_chain
from drkit.backup.order import chronological
from drkit.backup.walchain import (
    Reach,
    WalIndex,
    archived_timelines,
    backup_on_timeline,
    reach_on_timeline,
    segment_on_path,
    timeline_history,
)
from drkit.errors import CheckFailed, UsageError
from drkit.storage.repository import Repository
from drkit.wal import (
    DEFAULT_SEGMENT_SIZE,
    TimelineSwitch,
    download,
    fetch_attempts,
    format_lsn,
    history_name,
    parse_lsn,
    parse_segment,
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "last_wal": self.last_wal,
            "timeline": self.timeline,
            "missing": self.missing,
        }


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
) -> RecoveryPlan:
    """Choose the timeline, the base backup and check the WAL chain before anything is
    written: a target the unbroken archive does not reach is exit 3, never a recovery
    to some other point.  ``latest`` with a gap below newer segments is exit 3 too,
    unless ``allow_gap`` says to stop at the gap on purpose."""
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
    if reach.required_missing:
        raise CheckFailed(
            f"backup {manifest.id} cannot be restored: WAL segment {reach.missing}, which it "
            f"needs to become consistent, is missing from the archive (drkit verify names "
            f"every gap); {window.describe()}"
        )
    if target is None:
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
    size = int(manifest.extra.get("wal_segment_size", DEFAULT_SEGMENT_SIZE))
    return RecoveryPlan(manifest, window, followed, reach, chain, history, size)


_RECORD_LSN_RE = re.compile(r"\blsn: ([0-9A-F]+/[0-9A-F]+),")


def last_record_lsn(repo: Repository, plan: RecoveryPlan) -> str:
    """The LSN of the last whole WAL record of the plan's last segment (pg_waldump).

    The segment is fetched the way replay fetches it (checked, retried), so a damaged
    last segment fails here, before anything is written.  A segment holding no record
    start (the middle of a record larger than a segment) is read with the segments
    before it, back to the first one that starts a record."""
    from drkit.pg.binaries import find_binary

    manifest = plan.manifest
    major = manifest.major
    waldump = find_binary("pg_waldump", major)
    last = str(plan.reach.last_segment)
    first_segno = parse_segment(str(manifest.wal_start_segment), plan.segment_size).segno
    segno = parse_segment(last, plan.segment_size).segno
    with tempfile.TemporaryDirectory(prefix="drkit-waldump-") as tmp:
        while True:
            name = plan.planned_segment(segno)
            if not download(repo, name, Path(tmp) / name, attempts=fetch_attempts()):
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
