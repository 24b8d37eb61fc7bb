"""The order of backups: by what the database server says, never by drkit's host clock.

A backup's id and its ``started_at``/``finished_at`` come from the clock of the host
drkit ran on.  That clock can be wrong: a host that was 30 days ahead once would make
its backup the "newest" for a month, and retention would delete the real newest ones.
So nothing that decides which backup is newer reads them.  What decides is the
*server's consistent point* of each backup, recorded in its manifest
(:attr:`~drkit.catalog.manifests.Manifest.server_point`): the cluster's system
identifier, and the timeline and WAL position (LSN) the backup's data is consistent
at — a logical backup's snapshot, a physical backup's stop point.

:func:`chronological` is the one order every user of "newest", "latest", "oldest
first" and retention buckets goes through:

* **Within one cluster** (one system identifier) backups are ordered by
  ``(timeline, LSN)``.  WAL positions only grow on a timeline, and a new timeline is
  always numbered above the one it branched from, so a backup taken after a restore
  that went back in time (its LSNs continue from the restore point, on a higher
  timeline) is newer than every backup of the old timeline, whatever its LSN.  Two
  sibling timelines (two restores of the same past) are ordered the way PostgreSQL's
  ``recovery_target_timeline = 'latest'`` picks: the higher timeline is the newer one.
  Equal positions (an idle server) fall back to the server's time.
* **Across clusters** (a fresh ``initdb`` restarts LSNs under a new system identifier)
  positions say nothing, and the server's clock decides: each cluster's backups stay
  in their WAL order, and the sequences are merged from the newest end by the server
  time of each one's newest remaining backup.  The newest backup overall is thus the
  WAL-newest backup of the cluster whose newest backup the servers dated last.
* **Backups without a position** (manifests written before drkit recorded it, or a
  role not allowed to read ``pg_control_system()``) are ordered by the server's time
  of their consistent point (``consistent_at``, read from the server: the snapshot's
  ``clock_timestamp()``, or the server's clock when a base backup ended); only a
  manifest without ``consistent_at`` at all, which drkit never writes, falls back to
  its host start time.
* The backup id breaks a tie only when every server fact is equal, so that the order
  is the same on every call.

:func:`host_clock_skew` says by how much the host clock disagreed with the server's
when a backup ran; :data:`SKEW_BOUND` is where ``drkit backups``, ``check`` and
``status`` start flagging it.  A flagged backup is still ordered correctly: only its id
and its started/finished times are wrong.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

#: a backup whose host times disagree with the server's by more than this is flagged
SKEW_BOUND = timedelta(minutes=5)


@dataclass(frozen=True)
class ServerPoint:
    """Where, in the server's own terms, a backup's data is consistent."""

    system_identifier: str
    timeline: int
    lsn: int  # the 64-bit WAL position


class Ordered(Protocol):
    """What :func:`chronological` reads of a backup (a manifest or a retention ref)."""

    @property
    def id(self) -> str: ...
    @property
    def server_point(self) -> ServerPoint | None: ...
    @property
    def server_time(self) -> datetime: ...


T = TypeVar("T", bound=Ordered)


def _by_time(item: Ordered) -> tuple[datetime, str]:
    return (item.server_time, item.id)


def _by_point(item: Ordered) -> tuple[int, int, datetime, str]:
    point = item.server_point
    assert point is not None
    return (point.timeline, point.lsn, item.server_time, item.id)


def chronological(items: Iterable[T]) -> list[T]:
    """``items`` oldest first, in the server's order (see the module docstring)."""
    clusters: dict[str | None, list[T]] = {}
    for item in items:
        point = item.server_point
        clusters.setdefault(point.system_identifier if point else None, []).append(item)
    sequences = [
        sorted(members, key=_by_point if key is not None else _by_time)
        for key, members in clusters.items()
    ]
    newest_first: list[T] = []
    while sequences:
        pick = max(range(len(sequences)), key=lambda i: _by_time(sequences[i][-1]))
        newest_first.append(sequences[pick].pop())
        if not sequences[pick]:
            del sequences[pick]
    newest_first.reverse()
    return newest_first


def newest(items: Iterable[T]) -> T | None:
    """The newest of ``items`` in the server's order; None when there is none."""
    ordered = chronological(items)
    return ordered[-1] if ordered else None


def precedes(older: Ordered, newer: Ordered) -> bool:
    """True when ``older`` comes strictly before ``newer``, comparing the two alone: by
    position within one cluster, by the server's time across clusters."""
    a, b = older.server_point, newer.server_point
    if a is not None and b is not None and a.system_identifier == b.system_identifier:
        return _by_point(older) < _by_point(newer)
    return _by_time(older) < _by_time(newer)


# ---------------------------------------------------------------------------
# Host clock skew
# ---------------------------------------------------------------------------


def measured_skew(host_before: datetime, server_time: datetime, host_after: datetime) -> float:
    """The server's clock minus the host's, in seconds, from one server reading taken
    between two host readings (their midpoint: the round trip's error is halved)."""
    midpoint = host_before + (host_after - host_before) / 2
    return round((server_time - midpoint).total_seconds(), 3)


def host_clock_skew(
    started: datetime, finished: datetime, server_time: datetime | None, recorded: float | None
) -> float | None:
    """How far the host clock was from the server's while a backup ran: the server's
    time minus the host's, in seconds (negative: the host was ahead); None when
    nothing says.

    Two sources, the larger one wins: the skew measured when the backup read the
    server's position (``recorded``), and the server's consistent time against the
    host's [started, finished] interval, which it must lie in (a manifest written
    before drkit measured the skew, or one whose host times were edited later)."""
    found: list[float] = [] if recorded is None else [recorded]
    if server_time is not None:
        if server_time < started:
            found.append(round((server_time - started).total_seconds(), 3))
        elif server_time > finished:
            found.append(round((server_time - finished).total_seconds(), 3))
    return max(found, key=abs) if found else None


def skewed(skew: float | None) -> bool:
    return skew is not None and abs(skew) > SKEW_BOUND.total_seconds()


def describe_skew(skew: float) -> str:
    """``30d ahead of`` / ``2h behind`` (the host clock, relative to the server's)."""
    from drkit.config import format_duration

    size = format_duration(timedelta(seconds=round(abs(skew))))
    return f"{size} {'ahead of' if skew < 0 else 'behind'}"
