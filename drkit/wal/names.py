"""WAL file names, LSNs and segment arithmetic — pure functions, no I/O.

A WAL segment is named ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment
number split into a "log" (high) and "seg" (low) part, where one log holds
``0x100000000 / segment_size`` segments.  Timeline history files are ``TTTTTTTT.history``;
``pg_backup_stop`` leaves ``<segment>.<offset>.backup``; a promotion archives the last
segment of the old timeline as ``<segment>.partial``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from drkit.errors import UsageError
from drkit.lsn import parse_lsn

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024

SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
BACKUP_RE = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
PARTIAL_RE = re.compile(r"^[0-9A-F]{24}\.partial$")


def is_segment(name: str) -> bool:
    return bool(SEGMENT_RE.match(name))


def is_history(name: str) -> bool:
    return bool(HISTORY_RE.match(name))


def is_archivable(name: str) -> bool:
    """Any file PostgreSQL hands to ``archive_command``."""
    return bool(
        SEGMENT_RE.match(name)
        or HISTORY_RE.match(name)
        or BACKUP_RE.match(name)
        or PARTIAL_RE.match(name)
    )


def check_archivable(name: str) -> None:
    """Refuse (UsageError) a name that is no file PostgreSQL archives."""
    if not is_archivable(name):
        raise UsageError(
            f"{name!r} is not a WAL file name (24 hex digits, NNNNNNNN.history, "
            "*.backup or *.partial)"
        )


MIN_SEGMENT_SIZE = 1024 * 1024
MAX_SEGMENT_SIZE = 1024 * 1024 * 1024
# pg_control's ControlFileData holds floatFormat = 1234567.0 (a double, native byte order)
# followed by blcksz, relseg_size, xlog_blcksz and xlog_seg_size (uint32 each) in every
# release since 8.x; the marker finds them whatever precedes it in a given version.
_FLOAT_FORMAT = struct.pack("=d", 1234567.0)


def is_valid_segment_size(size: int) -> bool:
    """A size ``initdb --wal-segsize`` allows: a power of two from 1 MiB to 1 GiB."""
    return MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE and size & (size - 1) == 0


def whole_segment_problem(name: str, size: int, segment_size: int | None) -> str | None:
    """Why a WAL file of ``size`` bytes cannot be segment ``name``, or None when it can: a
    segment must be exactly the cluster's segment size (any size PostgreSQL allows, when
    the cluster's is unknown).  History, ``.partial`` and ``.backup`` files are not sized."""
    if not is_segment(name):
        return None
    if segment_size is not None and size == segment_size:
        return None
    if segment_size is None and is_valid_segment_size(size):
        return None
    expected = (
        f"{segment_size} bytes in this cluster"
        if segment_size is not None
        else "a power of two from 1 MiB to 1 GiB"
    )
    return f"{size} bytes is not a whole WAL segment ({expected})"


def segment_size_from_control(data: bytes) -> int:
    """The WAL segment size recorded in a cluster's ``global/pg_control``."""
    at = data.find(_FLOAT_FORMAT, 0, 1024)
    while at >= 0 and at % 8:
        at = data.find(_FLOAT_FORMAT, at + 1, 1024)
    if at < 0 or len(data) < at + 24:
        raise ValueError("not a pg_control file (no float format marker)")
    blcksz, _relseg, xlog_blcksz, seg_size = struct.unpack_from("=IIII", data, at + 8)
    pages_ok = all(1024 <= b <= 65536 and b & (b - 1) == 0 for b in (blcksz, xlog_blcksz))
    if not pages_ok or not is_valid_segment_size(seg_size):
        raise ValueError(f"pg_control holds an impossible WAL segment size ({seg_size} B)")
    return int(seg_size)


#: XLogLongPageHeaderData: the short header (magic, info, timeline, page address, remaining
#: length; 24 bytes with alignment), then the system identifier, segment and page sizes
LONG_HEADER_SIZE = 40
_XLP_LONG_HEADER = 0x0002


def segment_system_identifier(head: bytes, segment_size: int) -> int | None:
    """The system identifier in the first page header of a WAL segment of ``segment_size``
    bytes (``head``: its first :data:`LONG_HEADER_SIZE` bytes, native byte order), or None
    when ``head`` is not such a header."""
    if len(head) < LONG_HEADER_SIZE:
        return None
    (info,) = struct.unpack_from("=H", head, 2)
    sysid, seg_size, page_size = struct.unpack_from("=QII", head, 24)
    page_ok = 1024 <= page_size <= 65536 and page_size & (page_size - 1) == 0
    if not info & _XLP_LONG_HEADER or seg_size != segment_size or not page_ok:
        return None
    return int(sysid)


def segments_per_log(segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return 0x100000000 // segment_size


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment: a timeline and a segment number (ordered by number, then timeline)."""

    segno: int
    timeline: int

    def name(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
        per_log = segments_per_log(segment_size)
        return f"{self.timeline:08X}{self.segno // per_log:08X}{self.segno % per_log:08X}"

    def next(self) -> Segment:
        return Segment(self.segno + 1, self.timeline)


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """A segment name (a ``.partial``/``.backup`` suffix is ignored) to a :class:`Segment`."""
    base = name[:24]
    if not SEGMENT_RE.match(base):
        raise ValueError(f"{name!r} is not a WAL segment name")
    per_log = segments_per_log(segment_size)
    log, seg = int(base[8:16], 16), int(base[16:24], 16)
    if seg >= per_log:
        raise ValueError(f"{name!r}: segment part {seg:X} is out of range for {segment_size} B")
    return Segment(log * per_log + seg, int(base[:8], 16))


def lsn_segment(lsn: str | int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment holding ``lsn`` on ``timeline``."""
    position = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    return Segment(position // segment_size, timeline)


def lsn_to_segment_name(
    lsn: str | int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> str:
    return lsn_segment(lsn, timeline, segment_size).name(segment_size)


def next_segment_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    return parse_segment(name, segment_size).next().name(segment_size)


def following_segments(
    name: str, count: int, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[str]:
    """The ``count`` segment names after ``name`` on the same timeline."""
    seg = parse_segment(name, segment_size)
    out = []
    for _ in range(count):
        seg = seg.next()
        out.append(seg.name(segment_size))
    return out


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def backup_file_name(
    lsn: str | int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> str:
    """The ``.backup`` history file ``pg_backup_stop`` archives for a backup starting at lsn."""
    position = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    seg = lsn_segment(position, timeline, segment_size)
    return f"{seg.name(segment_size)}.{position % segment_size:08X}.backup"


# ---------------------------------------------------------------------------
# Timeline history files
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a history file: ``timeline`` ended at ``switch_lsn`` (exclusive)."""

    timeline: int
    switch_lsn: int
    reason: str = ""


def parse_history(text: str) -> list[TimelineSwitch]:
    """Parse ``NNNNNNNN.history``: ``<parent tli>\\t<switch lsn>\\t<reason>`` per line."""
    switches: list[TimelineSwitch] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ValueError(f"history line {raw!r} has no switch point")
        tli = int(parts[0])
        switch = parse_lsn(parts[1])
        # switch points need not grow: a timeline that branched off its parent before the
        # parent's own start (recovery to a point earlier than the parent's switch) is legal
        if switches and tli <= switches[-1].timeline:
            raise ValueError(f"history line {raw!r} goes backwards")
        switches.append(TimelineSwitch(tli, switch, parts[2] if len(parts) > 2 else ""))
    return switches


def timeline_at(position: int, target_timeline: int, history: list[TimelineSwitch]) -> int:
    """Which timeline holds WAL ``position`` on the way to ``target_timeline``.

    As PostgreSQL's ``tliOfPointInHistory``: each timeline covers [its parent's switch
    point, its own switch point), searched newest first.
    """
    begins = [0] + [s.switch_lsn for s in history]
    if not history or position >= history[-1].switch_lsn:
        return target_timeline
    for i in range(len(history) - 1, -1, -1):
        if begins[i] <= position < history[i].switch_lsn:
            return history[i].timeline
    return history[0].timeline


def segments_between(
    start_lsn: str | int,
    stop_lsn: str | int,
    target_timeline: int,
    history: list[TimelineSwitch] | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> Iterator[str]:
    """Every segment name replay reads from ``start_lsn`` to ``stop_lsn`` (inclusive).

    Across a timeline switch (``history`` of ``target_timeline``) the segment holding the
    switch point is read from the new timeline: PostgreSQL copies the old timeline's
    part of it into the first segment of the new one.
    """
    start = parse_lsn(start_lsn) if isinstance(start_lsn, str) else start_lsn
    stop = parse_lsn(stop_lsn) if isinstance(stop_lsn, str) else stop_lsn
    if stop < start:
        raise ValueError("stop LSN is before start LSN")
    switches = history or []
    for segno in range(start // segment_size, stop // segment_size + 1):
        # the newest timeline whose WAL covers the end of this segment, within [start, stop]
        seg_end = min((segno + 1) * segment_size - 1, stop)
        tli = timeline_at(seg_end, target_timeline, switches)
        yield Segment(segno, tli).name(segment_size)
