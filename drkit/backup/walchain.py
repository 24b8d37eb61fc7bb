"""The WAL chain of physical backups: completeness for ``verify``, pruning for ``prune``,
and for point-in-time recovery how far the archive reaches along one timeline.

A physical backup is restorable only with every WAL segment from its start to its stop
segment.  From its stop segment on, each further contiguous segment extends how far it
can be recovered (following timeline switches recorded in history files); the first
missing segment ends its recoverable window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drkit.catalog import Manifest, iso
from drkit.storage import ObjectInfo, Repository, plain_name
from drkit.wal import (
    DEFAULT_SEGMENT_SIZE,
    WAL_DIR,
    Segment,
    TimelineSwitch,
    find_wal_key,
    is_archivable,
    is_history,
    open_wal_object,
    parse_history,
    parse_segment,
)


def wal_name_of(key: str) -> str:
    """The WAL file name a stored key holds (its encoding's suffixes dropped)."""
    return plain_name(key)


@dataclass
class WalIndex:
    """The archived WAL of one environment, by name."""

    objects: dict[str, ObjectInfo]

    @classmethod
    def load(cls, repo: Repository) -> WalIndex:
        found: dict[str, ObjectInfo] = {}
        for info in repo.list(WAL_DIR):
            name = wal_name_of(info.key)
            if is_archivable(name):
                found[name] = info
        return cls(found)

    def has(self, name: str) -> bool:
        return name in self.objects


def _history(repo: Repository, index: WalIndex, timeline: int) -> list[TimelineSwitch]:
    name = f"{timeline:08X}.history"
    if not index.has(name):
        return []
    key = find_wal_key(repo, name)
    if key is None:
        return []
    with open_wal_object(repo, key) as stream:
        data: bytes = stream.read()
    try:
        return parse_history(data.decode("utf-8", "replace"))
    except ValueError:
        return []


@dataclass
class ChainReport:
    missing: list[str]
    last_segment: str | None
    recoverable_from: datetime | None
    recoverable_to: datetime | None
    timelines: list[int]
    #: every segment of the chain in replay order, from the backup's start to ``last_segment``
    path: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def _children(repo: Repository, index: WalIndex) -> dict[int, list[tuple[int, int]]]:
    """parent timeline -> [(child timeline, switch position)] from the history files."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name in index.objects:
        if is_history(name):
            child = int(name[:8], 16)
            switches = _history(repo, index, child)
            if switches:
                parent = switches[-1]
                children.setdefault(parent.timeline, []).append((child, parent.switch_lsn))
    return children


def check_chain(repo: Repository, manifest: Manifest, index: WalIndex | None = None) -> ChainReport:
    index = index or WalIndex.load(repo)
    size = int(manifest.extra.get("wal_segment_size", DEFAULT_SEGMENT_SIZE))
    if not manifest.wal_start_segment or not manifest.wal_stop_segment:
        return ChainReport(["(manifest has no WAL start/stop)"], None, None, None, [])
    start = parse_segment(manifest.wal_start_segment, size)
    stop = parse_segment(manifest.wal_stop_segment, size)
    missing = [
        Segment(segno, stop.timeline).name(size)
        for segno in range(start.segno, stop.segno + 1)
        if not index.has(Segment(segno, stop.timeline).name(size))
        and not index.has(Segment(segno, start.timeline).name(size))
    ]
    if missing:
        return ChainReport(missing, None, manifest.consistent_at, None, [stop.timeline])
    path = []
    for segno in range(start.segno, stop.segno + 1):
        name = Segment(segno, stop.timeline).name(size)
        path.append(name if index.has(name) else Segment(segno, start.timeline).name(size))
    # walk forward from the stop segment as far as the archive is contiguous
    children = _children(repo, index)
    current = stop
    timelines = [stop.timeline]
    while True:
        nxt = current.next()
        switched = False
        for child, switch_lsn in sorted(children.get(current.timeline, []), reverse=True):
            if switch_lsn // size == nxt.segno or switch_lsn // size == current.segno:
                candidate = Segment(nxt.segno, child)
                if index.has(candidate.name(size)):
                    current = candidate
                    timelines.append(child)
                    switched = True
                    break
        if switched:
            path.append(current.name(size))
            continue
        if index.has(nxt.name(size)):
            current = nxt
            path.append(current.name(size))
            continue
        break
    last = current.name(size)
    info = index.objects.get(last)
    end = info.modified.astimezone(UTC) if info else None
    return ChainReport([], last, manifest.consistent_at, end, timelines, path)


def _ranges(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} .. {names[-1]} ({len(names)} segments)"


class WalReading:
    """The WAL one ``verify`` run has read: each file once, whatever the number of backups
    whose chains share it, with its listing loaded once."""

    def __init__(self) -> None:
        self._index: WalIndex | None = None
        self._seen: dict[str, tuple[str | None, str]] = {}

    def index(self, repo: Repository) -> WalIndex:
        if self._index is None:
            self._index = WalIndex.load(repo)
        return self._index

    def check(self, repo: Repository, name: str, segment_size: int) -> tuple[str | None, str]:
        """(problem or None, how it was checked) of archived WAL file ``name``: read to
        its end, its stored bytes checked (checksum file, or the checksum of its own
        encoding), decoded, and a segment's decoded size compared with the segment size."""
        from drkit.errors import CheckFailed, StorageError
        from drkit.streams import drain
        from drkit.wal import open_wal_object, wal_integrity

        if name in self._seen:
            return self._seen[name]
        info = self.index(repo).objects.get(name)
        if info is None:
            outcome: tuple[str | None, str] = (f"WAL {name} is not in {repo.location}", "")
        else:
            how = ""
            try:
                integrity = wal_integrity(repo.backend, info.key)
                how = integrity[1]
                with open_wal_object(repo, info.key, integrity) as stream:
                    raw = drain(stream)
                problem = None
                if len(name) == 24 and raw != segment_size:
                    problem = (
                        f"{info.key}: decodes to {raw} bytes, not a whole WAL segment of "
                        f"{segment_size} bytes"
                    )
            except (CheckFailed, StorageError) as exc:
                problem = str(exc)
            outcome = (problem, how)
        self._seen[name] = outcome
        return outcome


def check_backup_wal(
    repo: Repository, manifest: Manifest, reading: WalReading | None = None
) -> tuple[list[str], dict[str, Any]]:
    """For ``drkit verify``: (problems, details) of one physical backup's WAL chain.

    The chain reported complete is read, every file of it: the segments from the
    backup's start through the end of the recoverable window reported (a damaged one
    before the stop means the backup cannot be restored; one after it ends the window
    before it), and the history files of the timelines it crosses."""
    reading = reading or WalReading()
    index = reading.index(repo)
    report = check_chain(repo, manifest, index)
    details: dict[str, Any] = {
        "wal_chain": "complete" if report.complete else "gap",
        "recoverable_from": iso(report.recoverable_from),
        "recoverable_to": iso(report.recoverable_to),
        "last_wal": report.last_segment,
    }
    if not report.complete:
        return [
            f"WAL gap: {_ranges(report.missing)} missing between {manifest.wal_start_segment} "
            f"and {manifest.wal_stop_segment}; the backup cannot be restored"
        ], details
    size = _segment_size(manifest)
    stop = parse_segment(str(manifest.wal_stop_segment), size).segno
    histories = [f"{tli:08X}.history" for tli in dict.fromkeys(report.timelines) if tli > 1]
    problems: list[str] = []
    by: Counter[str] = Counter()
    damaged = 0
    read = 0
    for name in [*histories, *report.path]:
        problem, how = reading.check(repo, name, size)
        read += 1
        if how:
            by[how] += 1
        if problem is None:
            continue
        damaged += 1
        if len(name) != 24 or parse_segment(name, size).segno <= stop:
            problems.append(f"{problem}; the backup cannot be restored")
            continue
        # past the stop: the backup restores, but replay cannot go past this segment
        before = report.path[report.path.index(name) - 1]
        info = index.objects.get(before)
        details["last_wal"] = before
        details["recoverable_to"] = iso(info.modified.astimezone(UTC) if info else None)
        problems.append(
            f"{problem}; the recoverable window ends at {before}, the segment before it"
        )
        break
    if damaged:
        details["wal_chain"] = "damaged"
    details["wal_checked"] = {"files": read, "damaged": damaged, "by": dict(sorted(by.items()))}
    return problems, details


def recovery_timeline(
    repo: Repository, manifest: Manifest, index: WalIndex | None = None
) -> tuple[int, bool]:
    """(timeline, is_newest) recovery from ``manifest`` should follow.

    ``recovery_target_timeline = 'latest'`` makes PostgreSQL follow the newest timeline
    in the archive, and fail when that timeline branched off *before* the backup (a
    later restore, promoted, can create one).  This picks the newest timeline whose
    history passes through the backup's timeline after the backup's stop point.
    """
    from drkit.lsn import parse_lsn

    index = index or WalIndex.load(repo)
    base_tli = int(manifest.timeline or 1)
    stop = parse_lsn(manifest.wal_stop) if manifest.wal_stop else 0
    timelines = sorted(
        {int(n[:8], 16) for n in index.objects if is_history(n)} | {base_tli}, reverse=True
    )
    newest = timelines[0]
    for tli in timelines:
        if tli == base_tli:
            return tli, tli == newest
        if tli < base_tli:
            continue
        switches = _history(repo, index, tli)
        for i, switch in enumerate(switches):
            if switch.timeline == base_tli:
                # where this timeline's path really leaves the backup's timeline
                leaves_at = min(s.switch_lsn for s in switches[i:])
                if leaves_at >= stop:
                    return tli, tli == newest
    return base_tli, base_tli == newest


# ---------------------------------------------------------------------------
# Point-in-time recovery: which timeline, and how far the archive reaches on it
# ---------------------------------------------------------------------------


def timeline_history(
    repo: Repository, timeline: int, index: WalIndex | None = None
) -> list[TimelineSwitch]:
    """The switches of ``timeline``'s history file (empty for timeline 1 or none archived)."""
    return _history(repo, index or WalIndex.load(repo), timeline)


def archived_timelines(index: WalIndex) -> list[int]:
    """Every timeline the archive holds a history file or a segment of, ascending."""
    found = {1}
    for name in index.objects:
        if is_history(name) or len(name) == 24:
            found.add(int(name[:8], 16))
    return sorted(found)


def _segment_size(manifest: Manifest) -> int:
    return int(manifest.extra.get("wal_segment_size", DEFAULT_SEGMENT_SIZE))


def backup_on_timeline(manifest: Manifest, timeline: int, history: list[TimelineSwitch]) -> bool:
    """Whether recovery from ``manifest`` can follow ``timeline``: the backup's stop point
    lies on the backup's own timeline within ``timeline``'s history (a timeline that
    branched off before the backup ended does not contain it)."""
    from drkit.lsn import parse_lsn
    from drkit.wal import timeline_at

    if not manifest.wal_stop:
        return False
    base_tli = int(manifest.timeline or 1)
    if base_tli == timeline:
        return True
    return timeline_at(parse_lsn(manifest.wal_stop), timeline, history) == base_tli


@dataclass
class Reach:
    """How far recovery from one backup gets along one timeline in the archive.

    ``missing`` is the first segment replay would need that the archive lacks; ``gap`` is
    true when the archive holds segments beyond it on that timeline's path (so stopping
    there loses data that exists).  ``required_missing`` means the backup itself cannot
    become consistent."""

    timeline: int
    last_segment: str | None
    end: datetime | None  # when the last reachable segment was archived
    missing: str
    gap: bool
    newer_segments: int
    newest_segment: str | None
    newest_end: datetime | None
    required_missing: bool


def segment_on_path(segno: int, timeline: int, history: list[TimelineSwitch], size: int) -> Segment:
    """Segment ``segno`` as replay along ``timeline`` reads it: from the timeline that
    holds its last byte (the segment of a switch point comes from the newer timeline)."""
    from drkit.wal import timeline_at

    return Segment(segno, timeline_at((segno + 1) * size - 1, timeline, history))


def reach_on_timeline(
    repo: Repository,
    manifest: Manifest,
    timeline: int,
    index: WalIndex | None = None,
    history: list[TimelineSwitch] | None = None,
) -> Reach:
    """Walk the segments replay reads from ``manifest``'s start along ``timeline`` (the
    segment holding a switch point is read from the newer timeline, as PostgreSQL does)
    until the first one missing from the archive."""
    index = index or WalIndex.load(repo)
    switches = history if history is not None else _history(repo, index, timeline)
    size = _segment_size(manifest)
    if not manifest.wal_start_segment or not manifest.wal_stop_segment:
        raise ValueError(f"backup {manifest.id} has no WAL start/stop segment")
    start = parse_segment(manifest.wal_start_segment, size)
    stop = parse_segment(manifest.wal_stop_segment, size)

    def on_path(segno: int) -> Segment:
        return segment_on_path(segno, timeline, switches, size)

    last: Segment | None = None
    segno = start.segno
    while True:
        seg = on_path(segno)
        if not index.has(seg.name(size)):
            break
        last = seg
        segno += 1
    missing = on_path(segno)
    beyond: list[Segment] = []
    for name in index.objects:
        if len(name) != 24 or not is_archivable(name):
            continue
        try:
            other = parse_segment(name, size)
        except ValueError:
            continue
        if other.segno > segno and on_path(other.segno) == other:
            beyond.append(other)
    newest = max(beyond, default=None)

    def archived_at(seg: Segment | None) -> datetime | None:
        info = index.objects.get(seg.name(size)) if seg is not None else None
        return info.modified.astimezone(UTC) if info else None

    return Reach(
        timeline=timeline,
        last_segment=last.name(size) if last else None,
        end=archived_at(last),
        missing=missing.name(size),
        gap=bool(beyond),
        newer_segments=len(beyond),
        newest_segment=newest.name(size) if newest else None,
        newest_end=archived_at(newest),
        required_missing=segno <= stop.segno,
    )


# ---------------------------------------------------------------------------
# Whose WAL: the cluster a stored segment was written by
# ---------------------------------------------------------------------------


def stored_segment_identity(repo: Repository, name: str, segment_size: int) -> int | None:
    """The system identifier in stored segment ``name``'s first page (decoded: decrypted
    and decompressed), or None when it has no WAL page header of ``segment_size``.
    Raises when it cannot be read or decoded (CheckFailed, StorageError)."""
    from drkit.errors import ObjectNotFound
    from drkit.wal import LONG_HEADER_SIZE, segment_system_identifier

    key = find_wal_key(repo, name)
    if key is None:
        raise ObjectNotFound(f"WAL segment {name} is not in {repo.location}")
    head = b""
    with open_wal_object(repo, key) as stream:
        while len(head) < LONG_HEADER_SIZE:
            chunk: bytes = stream.read(LONG_HEADER_SIZE - len(head))
            if not chunk:
                break
            head += chunk
    return segment_system_identifier(head, segment_size)


@dataclass
class OwnTail:
    """How far the end of a :class:`Reach` holds the cluster's own WAL."""

    last_own: str | None  # the newest segment of the reach written by the cluster
    foreign: list[str]  # the segments after it (newest first), another cluster's
    checked_all: bool  # False: the walk stopped at its limit before finding one of its own


def own_tail(
    repo: Repository,
    manifest: Manifest,
    reach: Reach,
    system_identifier: str,
    history: list[TimelineSwitch],
    limit: int = 64,
) -> OwnTail:
    """Walk back from the end of ``reach`` (at most ``limit`` segments) to the newest
    segment whose first page carries ``system_identifier``: replay rejects a segment of
    another cluster and ends there, so what follows it is not reachable.  A second
    cluster archiving into production's repository stores segments *ahead* of
    production's, at the end of the archive, where this looks; one interleaved deeper in
    the chain is for ``verify`` (which reads the chain) to find."""
    if reach.last_segment is None:
        return OwnTail(None, [], True)
    size = _segment_size(manifest)
    start = parse_segment(str(manifest.wal_start_segment), size).segno
    segno = parse_segment(reach.last_segment, size).segno
    foreign: list[str] = []
    while segno >= start and len(foreign) < limit:
        name = segment_on_path(segno, reach.timeline, history, size).name(size)
        if str(stored_segment_identity(repo, name, size)) == system_identifier:
            return OwnTail(name, foreign, True)
        foreign.append(name)
        segno -= 1
    return OwnTail(None, foreign, segno < start)
