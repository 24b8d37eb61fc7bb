"""Grandfather-father-son retention (the ``retention`` keys of docs/policy.md), as pure
functions.

Nothing here touches a repository: given the backups of one environment, the policy's
:class:`~drkit.config.RetentionConfig` and its timezone, :func:`plan_retention` says
for every backup KEEP or DELETE and which rule(s) keep it.  The prune executor
(:mod:`drkit.backup.prune`) and ``drkit backups`` (the "tiers" column) both call it, so
what the dry run shows is exactly what prune does.

The rules apply to each *series*: one kind of backup and one database (logical and
physical are separate series, so the weekly base backup never pushes a daily logical dump
out of its day, and vice versa; and a backup counts only for the databases it holds, so
``drkit backup prod --database shop`` never pushes the last backup of the main database
out of its day).  A backup that holds several databases belongs to each of their series;
it is kept when any series keeps it:

* ``daily: N`` keeps the newest successful backup of each of the last N calendar days
  that have one; ``weekly: W`` the newest of each of the last W ISO weeks that have one;
  ``monthly: M`` the newest of each of the last M calendar months that have one.  Days,
  weeks and months are those of the policy's timezone, so a backup at 00:30 in Rome is
  on the Rome date even though it is still the previous day in UTC, and DST changes
  move nothing.
* A backup is kept when any rule keeps it; the reasons read ``daily 2026-11-27``,
  ``weekly 2026-W47``, ``monthly 2026-11`` and ``newest`` when the rule keeps it for
  every database it holds, and name the databases otherwise (``newest (shop)``).
* The newest successful backup holding each database is never deleted, whatever the
  counts (0 and absent counts included); so neither is the newest successful backup.
* Unsuccessful backups (a manifest that records a failure) are kept by no rule.
* A backup a person keeps (``drkit keep``; the caller passes the keeps that hold now as
  :attr:`BackupRef.hold`) is kept with that reason, ``kept by hand [until ...]``.
* An incremental keeps its whole chain: every ancestor of a kept backup is kept,
  with the reason ``parent of <child id>`` (so ``prune --dry-run`` shows the chains).

"Newest" is the server's order (:func:`drkit.catalog.order.chronological`: WAL position
within a cluster, then the server's time), never the ids, the host's start times, the
order of the input or of the listing; and a backup's day, week and month are those of
the server's time of its consistent point.  So a host clock that was 30 days ahead
during one backup neither makes it the newest nor moves it into another bucket.  The
rules do not depend on the current time: they count days *that have a backup*, so a
scheduler that was down for a month does not lose the history when it comes back.

The plan is idempotent: applying it to the backups it keeps keeps all of them (the
last N days of the kept set are the last N days of the full set, and each of them
still holds its newest backup).  The property tests in ``tests/backup/test_retention_props.py``
check this, and the kept set, against an independent reading of these rules over years of
simulated histories.

WAL: :func:`plan_wal` says which WAL the kept backups need.  Without ``retention.wal``,
every segment from the start of the oldest kept physical backup (:func:`wal_cutoff`).
With it, point-in-time recovery over that last stretch only: every segment from the
start of the newest kept base backup consistent that long before the newest one, and
before it only the start..stop segments of the older kept base backups, which then
restore to their consistent point only.  :func:`wal_to_delete` selects the rest.  WAL
needed by a kept backup is never deleted, history files never are, and without any kept
physical backup nothing is deleted at all.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol
from zoneinfo import ZoneInfo

from drkit.catalog import ServerPoint, chronological

if TYPE_CHECKING:
    from drkit.config import Policy, RetentionConfig

Action = Literal["KEEP", "DELETE"]

WAL_SEGMENT_SIZE = 16 * 1024 * 1024
_WAL_NAME_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
_HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history")


@dataclass(frozen=True)
class BackupRef:
    """What retention needs to know about one backup (with a manifest)."""

    id: str
    kind: str
    started_at: datetime
    successful: bool = True
    #: the first moment the backup can restore to (manifest ``consistent_at``)
    consistent_at: datetime | None = None
    #: physical backups: name of the WAL segment holding ``wal_start``
    wal_start_segment: str | None = None
    #: the databases it holds (empty: one unnamed series, as for a whole cluster)
    databases: tuple[str, ...] = ()
    #: incremental base backups: the id of the backup it is relative to
    parent: str | None = None
    #: the server's consistent point and its time (what orders backups); a ref without
    #: them is ordered by ``consistent_at``, then ``started_at``
    server_point: ServerPoint | None = None
    server_at: datetime | None = None
    #: physical backups: name of the WAL segment holding ``wal_stop`` (with the start
    #: segment, the WAL that makes the backup consistent)
    wal_stop_segment: str | None = None
    #: why a person keeps it (``drkit keep``), when the keep holds now: a reason of its own
    hold: str | None = None

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError(f"backup {self.id}: started_at must carry a timezone")

    @property
    def restorable_from(self) -> datetime:
        return self.consistent_at or self.started_at

    @property
    def server_time(self) -> datetime:
        return self.server_at or self.consistent_at or self.started_at


class ManifestLike(Protocol):
    """The fields of a backup manifest (:class:`drkit.catalog.manifests.Manifest`) used here."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime: ...
    @property
    def consistent_at(self) -> datetime | None: ...
    @property
    def wal_start_segment(self) -> str | None: ...
    @property
    def wal_stop_segment(self) -> str | None: ...
    @property
    def databases(self) -> list[str]: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def server_point(self) -> ServerPoint | None: ...
    @property
    def server_time(self) -> datetime: ...


def backup_ref(manifest: ManifestLike, hold: str | None = None) -> BackupRef:
    """What retention needs from a manifest (a manifest means a complete backup);
    ``hold``: why a person keeps it now (None: nobody does)."""
    return BackupRef(
        id=manifest.id,
        kind=manifest.kind,
        started_at=manifest.started_at,
        successful=True,
        consistent_at=manifest.consistent_at or manifest.finished_at,
        wal_start_segment=manifest.wal_start_segment,
        databases=tuple(manifest.databases),
        parent=manifest.parent,
        server_point=manifest.server_point,
        server_at=manifest.server_time,
        wal_stop_segment=manifest.wal_stop_segment,
        hold=hold,
    )


@dataclass(frozen=True)
class Decision:
    backup: BackupRef
    action: Action
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return self.action == "KEEP"


@dataclass(frozen=True)
class RetentionPlan:
    """One decision per backup, newest first."""

    decisions: tuple[Decision, ...]
    timezone: str
    by_id: dict[str, Decision] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {d.backup.id: d for d in self.decisions})

    @property
    def kept(self) -> list[BackupRef]:
        return [d.backup for d in self.decisions if d.keep]

    @property
    def deleted(self) -> list[BackupRef]:
        return [d.backup for d in self.decisions if not d.keep]

    def reasons(self, backup_id: str) -> tuple[str, ...]:
        decision = self.by_id.get(backup_id)
        return decision.reasons if decision else ()

    def oldest_restorable(self) -> datetime | None:
        """The earliest point a kept, successful backup can restore to."""
        points = [b.restorable_from for b in self.kept if b.successful]
        return min(points) if points else None


def _bucket_rule(
    backups: Sequence[BackupRef],
    count: int,
    tz: ZoneInfo,
    label: Callable[[datetime], str],
    order: Callable[[datetime], tuple[int, ...]],
) -> dict[str, str]:
    """Keep the newest backup of each of the last ``count`` buckets that have one.

    ``backups`` are oldest first (:func:`chronological`); a backup's bucket is that of
    the server's time.  Returns backup id -> reason.
    """
    if count <= 0 or not backups:
        return {}
    buckets: dict[tuple[int, ...], BackupRef] = {}
    labels: dict[tuple[int, ...], str] = {}
    for backup in backups:  # oldest first: the newest of each bucket comes last
        local = backup.server_time.astimezone(tz)
        key = order(local)
        buckets[key] = backup
        labels[key] = label(local)
    chosen = sorted(buckets, reverse=True)[:count]
    return {buckets[k].id: labels[k] for k in chosen}


def _daily(local: datetime) -> tuple[int, ...]:
    return (local.year, local.month, local.day)


def _weekly(local: datetime) -> tuple[int, ...]:
    iso = local.isocalendar()
    return (iso.year, iso.week)


def _monthly(local: datetime) -> tuple[int, ...]:
    return (local.year, local.month)


def _label_daily(local: datetime) -> str:
    return f"daily {local:%Y-%m-%d}"


def _label_weekly(local: datetime) -> str:
    iso = local.isocalendar()
    return f"weekly {iso.year:04d}-W{iso.week:02d}"


def _label_monthly(local: datetime) -> str:
    return f"monthly {local:%Y-%m}"


def plan_retention(
    backups: Iterable[BackupRef], retention: RetentionConfig, tz: ZoneInfo | str
) -> RetentionPlan:
    """KEEP or DELETE, with reasons, for every backup (see the module docstring)."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    items = list(backups)
    seen: set[str] = set()
    for b in items:
        if b.id in seen:
            raise ValueError(f"backup id {b.id} appears twice")
        seen.add(b.id)

    # backup id -> (rule order, label) -> the databases for which the rule keeps it
    kept_for: dict[str, dict[tuple[int, str], set[str]]] = defaultdict(lambda: defaultdict(set))
    series: dict[tuple[str, str], list[BackupRef]] = defaultdict(list)
    for b in chronological(items):  # every series oldest first
        if b.successful:
            for database in b.databases or ("",):
                series[(b.kind, database)].append(b)
    rules = (
        (retention.daily, _label_daily, _daily),
        (retention.weekly, _label_weekly, _weekly),
        (retention.monthly, _label_monthly, _monthly),
    )
    for (_kind, database), members in series.items():
        for rank, (count, label, order) in enumerate(rules):
            for backup_id, reason in _bucket_rule(members, count, zone, label, order).items():
                kept_for[backup_id][(rank, reason)].add(database)
        kept_for[members[-1].id][(len(rules), "newest")].add(database)
    for b in items:  # a keep by hand holds whatever the rules say, failed backups included
        if b.hold:
            kept_for[b.id][(len(rules) + 1, b.hold)].update(b.databases or ("",))

    reasons: dict[str, list[str]] = {}
    for b in items:
        held = set(b.databases or ("",))
        rules_kept = kept_for.get(b.id, {})
        reasons[b.id] = [
            reason if dbs == held else f"{reason} ({', '.join(sorted(dbs))})"
            for (_rank, reason), dbs in sorted(rules_kept.items())
        ]

    # an incremental keeps its whole chain: a kept backup keeps its parent, transitively
    by_id = {b.id: b for b in items}
    pending = [b for b in items if reasons[b.id]]
    while pending:
        child = pending.pop()
        parent = by_id.get(child.parent) if child.parent else None
        if parent is None:
            continue
        reason = f"parent of {child.id}"
        if reason not in reasons[parent.id]:
            reasons[parent.id].append(reason)
            pending.append(parent)

    decisions = []
    for b in reversed(chronological(items)):
        why = tuple(reasons.get(b.id, ()))
        if why:
            decisions.append(Decision(b, "KEEP", why))
        else:
            decisions.append(Decision(b, "DELETE", () if b.successful else ("unsuccessful",)))
    return RetentionPlan(tuple(decisions), zone.key)


def deletion_order(backups: Iterable[BackupRef]) -> list[BackupRef]:
    """The order prune deletes ``backups`` in: oldest first, except that an incremental
    goes before its parent (and every descendant before its ancestors), so a prune cut
    short never leaves an incremental whose parent is already gone."""
    items = chronological(backups)
    ids = {b.id for b in items}
    children: dict[str, list[BackupRef]] = defaultdict(list)
    for b in items:
        if b.parent is not None and b.parent in ids and b.parent != b.id:
            children[b.parent].append(b)
    order: list[BackupRef] = []
    done: set[str] = set()

    def visit(backup: BackupRef, path: frozenset[str]) -> None:
        if backup.id in done or backup.id in path:  # a loop in the parents: break it
            return
        for child in children[backup.id]:
            visit(child, path | {backup.id})
        done.add(backup.id)
        order.append(backup)

    for b in items:
        visit(b, frozenset())
    return order


def current_tiers(
    policy: Policy, manifests: Sequence[ManifestLike], holds: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """Backup id -> the retention rules it satisfies now (``drkit backups``' tiers column);
    ``holds``: backup id -> the reason of a keep by hand that holds now."""
    holds = holds or {}
    plan = plan_retention(
        [backup_ref(m, holds.get(m.id)) for m in manifests],
        policy.retention,
        policy.schedule.timezone,
    )
    return {d.backup.id: list(d.reasons) for d in plan.decisions}


# ---------------------------------------------------------------------------
# Manifest-less leftovers
# ---------------------------------------------------------------------------


def orphan_expired(last_modified: datetime, grace: timedelta, now: datetime) -> bool:
    """A backup directory without a manifest is removed once its newest object is older
    than the grace period (an upload still in progress keeps touching it)."""
    return now - last_modified > grace


# ---------------------------------------------------------------------------
# WAL (used once WAL archiving exists)
# ---------------------------------------------------------------------------


def lsn_to_segment(lsn: str, timeline: int, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    """The WAL file name holding ``lsn`` (``"0/3000028"``) on ``timeline``."""
    high, low = (int(part, 16) for part in lsn.split("/"))
    position = (high << 32) | low
    per_log = 0x100000000 // segment_size
    segno = position // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def wal_cutoff(plan: RetentionPlan, kind: str = "physical") -> str | None:
    """The first segment the oldest kept physical backup needs, or None (keep all WAL).

    None when no kept physical backup records its start segment: without a base backup
    to replay onto, the archive is not ours to judge.
    """
    starts = [
        b.wal_start_segment
        for b in plan.kept
        if b.kind == kind and b.successful and b.wal_start_segment
    ]
    if not starts:
        return None
    return min(starts, key=lambda name: name[8:24])


def wal_to_delete(
    names: Iterable[str], cutoff: str | None, keep: Iterable[tuple[str, str]] = ()
) -> list[str]:
    """WAL files strictly older than ``cutoff`` (by position, on any timeline), except
    those inside one of the ``keep`` ranges (first and last segment, both kept).

    History files are never deleted (they are tiny and every later timeline needs them);
    names that are not WAL are left alone.  Suffixes (``.zst``, ``.age``, ``.partial``,
    ``.backup``) are ignored for the comparison.
    """
    if cutoff is None:
        return []
    limit = cutoff[8:24]
    ranges = [(first[8:24], last[8:24]) for first, last in keep]
    doomed = []
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if _HISTORY_RE.match(base):
            continue
        match = _WAL_NAME_RE.match(base)
        if match is None:
            continue
        position = match.group(2) + match.group(3)
        if position < limit and not any(lo <= position <= hi for lo, hi in ranges):
            doomed.append(name)
    return doomed


@dataclass(frozen=True)
class WalPlan:
    """Which WAL prune keeps: every segment from ``cutoff`` on (point-in-time recovery
    from ``anchor``'s consistent point), and before it only the start..stop segments of
    the ``consistent_only`` backups (each restores to its consistent point, no further).
    ``cutoff`` None: every WAL file stays (no kept base backup says where to start)."""

    cutoff: str | None
    anchor: BackupRef | None = None
    consistent_only: tuple[BackupRef, ...] = ()
    #: ``retention.wal``: None when WAL is kept from the oldest kept base backup on
    retention: timedelta | None = None

    @property
    def keep_ranges(self) -> list[tuple[str, str]]:
        return [(str(b.wal_start_segment), str(b.wal_stop_segment)) for b in self.consistent_only]

    @property
    def pitr_from(self) -> datetime | None:
        """The oldest point the kept WAL recovers to: the anchor's consistent point."""
        return self.anchor.restorable_from if self.anchor else None

    def consistent_point_only(self, backup_id: str) -> bool:
        return any(b.id == backup_id for b in self.consistent_only)

    def select(self, names: Iterable[str]) -> list[str]:
        """The WAL files among ``names`` this plan deletes."""
        return wal_to_delete(names, self.cutoff, self.keep_ranges)


def plan_wal(
    plan: RetentionPlan, keep_for: timedelta | None, now: datetime, kind: str = "physical"
) -> WalPlan:
    """The WAL the kept backups need, with ``retention.wal`` = ``keep_for``.

    Without ``keep_for``: every segment from the oldest kept base backup's start
    (:func:`wal_cutoff`).  With it, point-in-time recovery must reach back ``keep_for``
    from a reference point, so WAL is kept from the start of the *anchor*, the newest
    kept base backup consistent at or before ``reference - keep_for`` (the oldest kept
    one when none is that old); every kept base backup older than the anchor keeps only
    its start..stop segments.  The reference is the newest kept base backup's server
    time, or ``now`` when that is earlier: a host clock running ahead never shortens the
    window, and the newest base backup always keeps every segment after it (a scheduler
    that stopped backing up still has point-in-time recovery from its last backup).
    A kept base backup that does not record its stop segment keeps all WAL from its
    start (fail closed: its consistent point is unknown).
    """
    physical = chronological(
        b for b in plan.kept if b.kind == kind and b.successful and b.wal_start_segment
    )
    if not physical:
        return WalPlan(None, retention=keep_for)
    oldest_start = min(physical, key=lambda b: str(b.wal_start_segment)[8:24])
    if keep_for is None:
        return WalPlan(oldest_start.wal_start_segment, oldest_start)
    reference = min(now, physical[-1].server_time)
    old_enough = [b for b in physical if b.server_time <= reference - keep_for]
    anchor = old_enough[-1] if old_enough else oldest_start
    limit = str(anchor.wal_start_segment)[8:24]
    older = [b for b in physical if str(b.wal_start_segment)[8:24] < limit]
    unknown = [b for b in older if not b.wal_stop_segment]
    if unknown:  # fail closed: continuous WAL from the oldest of them
        anchor = min(unknown, key=lambda b: str(b.wal_start_segment)[8:24])
        limit = str(anchor.wal_start_segment)[8:24]
        older = [b for b in physical if str(b.wal_start_segment)[8:24] < limit]
    return WalPlan(anchor.wal_start_segment, anchor, tuple(older), keep_for)
