"""``drkit prune``: apply the retention plan of :mod:`drkit.backup.retention` to a repository.

Order of deletion, so that a crash at any moment leaves a consistent repository:

1. for each backup the plan deletes (oldest first, but an incremental before its
   parent): its ``manifest.json`` first — from
   then on the backup no longer exists for anyone (a backup exists iff its manifest
   does) — then its other objects;
2. manifest-less leftovers (an interrupted backup, or step 1 cut short) whose newest
   object is older than ``retention.orphan_grace``; younger ones may be a backup still
   uploading and are left alone, and so are the leftovers of the id a running backup
   announced on its lock (:func:`drkit.backup.lock.running_backups`: a backup running
   longer than the grace keeps its objects whatever the clocks say, while stale
   leftovers of earlier crashes still go; a holder that has not announced its id yet
   keeps every leftover of its kind);
3. WAL older than the start of the oldest kept physical backup (none at all when no
   physical backup is kept); with ``retention.wal``, WAL older than the start of the
   base backup point-in-time recovery must start from, except the start..stop segments
   of the older kept base backups (:func:`drkit.backup.retention.plan_wal`).

Prune never asks the store to delete an object it has locked (S3 Object Lock: on a
versioned bucket a delete would only hide the locked version behind a delete marker, and
the backup would vanish from drkit's view while its bytes stay): a backup with a locked
object is kept, with the reason "locked by the store until ..." (and the WAL and parents
it needs with it); a leftover with a locked object is kept the same way; a locked WAL
segment is left and counted.  Each goes on a later run once its lock has ended.  Locks
are looked up object by object only where the store can lock (an S3 bucket with object
lock enabled, or one whose configuration cannot be read).

Backups whose manifest cannot be read are never deleted: they are reported so a person
can look.  A backup a person keeps (``drkit keep``, a ``keep.json`` beside its manifest)
is kept by the plan, and its keep record is read again just before a deletion, so a keep
that lands while prune runs still holds.  ``dry_run`` computes exactly the same plan and
deletes nothing.

:func:`delete_by_hand` (``drkit delete``) removes one backup through the same deletion
(:func:`delete_backup`: manifest first), after its guards: never the newest backup of a
series, one an incremental depends on, one a person keeps, or one the store has locked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from drkit.backup.lock import running_backups
from drkit.backup.retention import (
    BackupRef,
    RetentionPlan,
    WalPlan,
    backup_ref,
    deletion_order,
    orphan_expired,
    plan_retention,
    plan_wal,
)
from drkit.catalog import (
    MANIFEST,
    Hold,
    Listing,
    Manifest,
    backup_prefix,
    iso,
    parse_backup_id,
    read_hold,
    restorable_span,
    scan,
)
from drkit.config import RetentionConfig
from drkit.documents import Document, Shape, Timestamp, described
from drkit.errors import NotFoundError, SafetyRefused, UsageError

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage import Repository

log = logging.getLogger(__name__)


@dataclass
class OrphanDecision:
    id: str
    objects: int
    size: int
    last_modified: datetime
    action: str  # DELETE | KEEP
    reason: str = ""

    def document(self) -> PruneOrphan:
        return PruneOrphan(
            id=self.id,
            objects=self.objects,
            size_bytes=self.size,
            size=self.size,
            last_modified=iso(self.last_modified),
            action=self.action,
            reason=self.reason,
        )


@dataclass
class PruneResult:
    env: str
    dry_run: bool
    plan: RetentionPlan
    manifests: dict[str, Manifest]
    orphans: list[OrphanDecision]
    unreadable: dict[str, str]
    wal_plan: WalPlan
    wal_deleted: list[str]
    holds: dict[str, Hold] = field(default_factory=dict)
    #: WAL objects the plan would delete but the store has locked, and their latest lock
    wal_locked: list[str] = field(default_factory=list)
    wal_locked_until: datetime | None = None
    deleted_objects: int = 0
    deleted_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def wal_cutoff(self) -> str | None:
        return self.wal_plan.cutoff

    def wal_scope(self, backup_id: str) -> str | None:
        """A kept base backup's WAL after prune: ``point-in-time`` (replay goes on past
        its consistent point) or ``consistent point only``; None for the others."""
        decision = self.plan.by_id.get(backup_id)
        if decision is None or not decision.keep or decision.backup.kind != "physical":
            return None
        if self.wal_plan.consistent_point_only(backup_id):
            return "consistent point only"
        return "point-in-time"

    @property
    def window(self) -> tuple[datetime | None, datetime | None]:
        """The recoverable window the kept backups leave (without WAL): the backup part
        of the window ``drkit status`` shows (:mod:`drkit.restore.window`)."""
        return restorable_span(self.manifests[b.id] for b in self.plan.kept)

    @property
    def oldest_restorable(self) -> datetime | None:
        return self.window[0]

    @property
    def newest_restorable(self) -> datetime | None:
        return self.window[1]

    def document(self) -> PruneDocument:
        return PruneDocument(
            ok=True,
            environment=self.env,
            dry_run=self.dry_run,
            timezone=self.plan.timezone,
            backups=[
                PruneBackup(
                    id=d.backup.id,
                    kind=d.backup.kind,
                    started_at=iso(self.manifests[d.backup.id].started_at),
                    size_bytes=self.manifests[d.backup.id].size,
                    size=self.manifests[d.backup.id].size,
                    action=d.action,
                    reasons=list(d.reasons),
                    wal=self.wal_scope(d.backup.id),
                    kept_until=_hold_until(self.holds.get(d.backup.id)),
                )
                for d in self.plan.decisions
            ],
            orphans=[o.document() for o in self.orphans],
            unreadable=[PruneUnreadable(id=k, error=v) for k, v in sorted(self.unreadable.items())],
            wal=PruneWal(
                cutoff=self.wal_cutoff,
                delete=len(self.wal_deleted),
                retention=_duration(self.wal_plan.retention),
                pitr_from=iso(self.wal_plan.pitr_from),
                pitr_from_backup=self.wal_plan.anchor.id if self.wal_plan.anchor else None,
                consistent_only=[b.id for b in self.wal_plan.consistent_only],
                locked=len(self.wal_locked),
                locked_until=iso(self.wal_locked_until),
            ),
            kept=len(self.plan.kept),
            deleted=len(self.plan.deleted),
            oldest_restorable=iso(self.oldest_restorable),
            newest_restorable=iso(self.newest_restorable),
            deleted_objects=self.deleted_objects,
            deleted_bytes=self.deleted_bytes,
        )


def _duration(value: timedelta | None) -> str | None:
    from drkit.config import format_duration

    return format_duration(value) if value is not None else None


def _hold_until(hold: Hold | None) -> str | None:
    """``kept_until`` of a document: the keep's end, ``forever``, or null (not kept)."""
    if hold is None:
        return None
    return iso(hold.until) if hold.until else "forever"


def retention_refs(
    listing: Listing, now: datetime, locked: dict[str, datetime] | None = None
) -> list[BackupRef]:
    """What retention needs of each listed backup, with the keeps that hold at ``now``
    and, from ``locked``, the backups the store will not let go before a date."""
    refs = []
    for m in listing.manifests:
        hold = listing.holds.get(m.id)
        if hold and hold.active(now):
            reason: str | None = hold.reason
        elif m.id in (locked or {}):
            reason = lock_reason((locked or {})[m.id])
        else:
            reason = None
        refs.append(backup_ref(m, reason))
    return refs


def lock_reason(until: datetime) -> str:
    return f"locked by the store until {iso(until)} (object lock)"


def may_be_locked(repo: Repository) -> bool:
    """Whether the store may hold locked objects in this repository: asked once; a store
    that cannot say (no permission to read the bucket's configuration) may."""
    from drkit.errors import DrkitError

    try:
        return repo.backend.object_lock_enabled() is not False
    except DrkitError as exc:
        log.warning(
            "%s: object lock configuration unknown (%s): checking each object", repo.location, exc
        )
        return True


def latest_lock(repo: Repository, keys: Iterable[str], now: datetime) -> datetime | None:
    """The latest lock still holding at ``now`` among ``keys``; None: none is locked."""
    found = None
    for key in keys:
        until = repo.backend.locked_until(key)
        if until is not None and until > now and (found is None or until > found):
            found = until
    return found


def plan_prune(
    repo: Repository,
    policy: Policy,
    *,
    now: datetime | None = None,
    dry_run: bool = True,
    running: dict[str, frozenset[str] | None] | None = None,
) -> PruneResult:
    """Read the repository and decide; deletes nothing.  ``running``: the kinds of
    backup in progress now and since when (None: unknown, the grace alone decides)."""
    now = now or datetime.now(UTC)
    listing: Listing = scan(repo)
    manifests = {m.id: m for m in listing.manifests}
    plan = plan_retention(retention_refs(listing, now), policy.retention, policy.schedule.timezone)
    lockable = may_be_locked(repo)
    locked: dict[str, datetime] = {}
    if lockable:
        for backup in plan.deleted:
            objects = repo.list(backup_prefix(backup.id))
            until = latest_lock(repo, (i.key for i in objects), now)
            if until is not None:
                locked[backup.id] = until
    if locked:  # kept like a backup a person keeps: with its parents and its WAL
        plan = plan_retention(
            retention_refs(listing, now, locked), policy.retention, policy.schedule.timezone
        )
    orphans = []
    for backup_id, infos in sorted(listing.orphans.items()):
        newest = max(i.modified for i in infos)
        expired = orphan_expired(newest, policy.retention.orphan_grace, now)
        kind = backup_id.rpartition("-")[2]
        until = latest_lock(repo, (i.key for i in infos), now) if lockable and expired else None
        if until is not None:
            action, reason = "KEEP", f"no manifest, {lock_reason(until)}"
        elif running and kind in running and running[kind] is None:
            action, reason = "KEEP", f"no manifest, and a {kind} backup is running now"
        elif running and backup_id in (running.get(kind) or ()):
            action, reason = "KEEP", f"no manifest, and it is the {kind} backup running now"
        elif expired:
            action, reason = "DELETE", "no manifest, older than the grace period"
        else:
            action = "KEEP"
            reason = "no manifest, within the grace period (may be a backup in progress)"
        orphans.append(
            OrphanDecision(
                backup_id, len(infos), sum(i.size for i in infos), newest, action, reason
            )
        )
    wal_plan = plan_wal(plan, policy.retention.wal, now)
    wal_doomed = wal_plan.select(i.key for i in repo.list("wal/")) if wal_plan.cutoff else []
    wal_locked: list[str] = []
    wal_locked_until = None
    if lockable:
        for key in wal_doomed:
            until = latest_lock(repo, [key], now)
            if until is not None:
                wal_locked.append(key)
                wal_locked_until = max(until, wal_locked_until or until)
        left = set(wal_locked)
        wal_doomed = [k for k in wal_doomed if k not in left]
    return PruneResult(
        env=repo.env,
        dry_run=dry_run,
        plan=plan,
        manifests=manifests,
        orphans=orphans,
        unreadable=dict(listing.unreadable),
        wal_plan=wal_plan,
        wal_deleted=wal_doomed,
        holds={k: v for k, v in listing.holds.items() if v.active(now)},
        wal_locked=wal_locked,
        wal_locked_until=wal_locked_until,
    )


def delete_backup(repo: Repository, backup_id: str) -> tuple[int, int]:
    """Remove one backup, manifest first (from then on it does not exist for anyone;
    a crash after that leaves a leftover that prune removes past the grace period), then
    every other object under its prefix.  Returns (objects, bytes) deleted."""
    prefix = backup_prefix(backup_id)
    repo.delete(repo.key(prefix + MANIFEST))
    objects, size = 1, 0
    for info in repo.list(prefix):
        repo.delete(info.key)
        objects += 1
        size += info.size
    return objects, size


def _children(result: PruneResult, backup_id: str) -> list[str]:
    return [m.id for m in result.manifests.values() if m.parent == backup_id]


@dataclass
class DeleteResult:
    """What ``drkit delete`` removed."""

    env: str
    backup_id: str
    kind: str
    deleted_objects: int
    deleted_bytes: int
    #: the retention rules that kept it until now (deleting by hand overrides them)
    tiers: list[str]

    def document(self) -> DeleteDocument:
        return DeleteDocument(
            ok=True,
            environment=self.env,
            id=self.backup_id,
            kind=self.kind,
            deleted_objects=self.deleted_objects,
            deleted_bytes=self.deleted_bytes,
            tiers=self.tiers,
        )


def _refuse_kept(repo: Repository, hold: Hold | None, now: datetime) -> None:
    if hold is not None and hold.active(now):
        raise SafetyRefused(
            f"backup {hold.backup_id} is {hold.reason}: release it first "
            f"(drkit keep {repo.env} {hold.backup_id} --release); nothing deleted"
        )


def delete_by_hand(
    repo: Repository, policy: Policy, backup_id: str, *, now: datetime | None = None
) -> DeleteResult:
    """``drkit delete ENV ID``: remove one backup, whatever the retention rules say,
    unless a guard refuses (exit 4, nothing deleted): the newest backup of a kind holding
    one of its databases (what ``prune`` never deletes), the parent of an incremental (its
    restore needs it), a backup a person keeps, or one whose objects the store has locked.
    The deletion is prune's own (:func:`delete_backup`)."""
    now = now or datetime.now(UTC)
    if parse_backup_id(backup_id) is None:
        raise UsageError(f"{backup_id!r} is not a backup id (like 20261127T020000Z-logical)")
    listing = scan(repo)
    if backup_id in listing.unreadable:
        raise SafetyRefused(
            f"backup {backup_id}: its manifest cannot be read, so what depends on it cannot "
            f"be checked; nothing deleted (look at {repo.key(backup_prefix(backup_id))})"
        )
    manifests = {m.id: m for m in listing.manifests}
    manifest = manifests.get(backup_id)
    if manifest is None:
        raise NotFoundError(
            f"backup {backup_id} does not exist in {repo.location} (see: drkit backups {repo.env})"
        )
    _refuse_kept(repo, listing.holds.get(backup_id), now)
    children = [m.id for m in listing.manifests if m.parent == backup_id]
    if children:
        raise SafetyRefused(
            f"backup {backup_id} is the parent of incremental backup {children[-1]}, whose "
            f"restore needs it: delete {children[-1]} first; nothing deleted"
        )
    guard = plan_retention(retention_refs(listing, now), RetentionConfig(), "UTC")
    newest = [r for r in guard.reasons(backup_id) if r.startswith("newest")]
    if newest:
        held = newest[0].removeprefix("newest").strip(" ()") or ", ".join(manifest.databases)
        raise SafetyRefused(
            f"backup {backup_id} is the newest {manifest.kind} backup"
            + (f" of {held}" if held else "")
            + ": take a newer one before deleting it; nothing deleted"
        )
    for info in repo.list(backup_prefix(backup_id)):  # every object delete_backup removes
        until = repo.backend.locked_until(info.key)
        if until is not None and until > now:
            raise SafetyRefused(
                f"backup {backup_id}: {info.key} is locked by the store until {iso(until)} "
                "(object lock): it cannot be deleted before then; nothing deleted"
            )
    tiers = list(
        plan_retention(
            retention_refs(listing, now), policy.retention, policy.schedule.timezone
        ).reasons(backup_id)
    )
    _refuse_kept(repo, read_hold(repo, backup_id), now)  # a keep that landed since the listing
    log.info("delete %s: deleting backup %s by hand", repo.env, backup_id)
    objects, size = delete_backup(repo, backup_id)
    return DeleteResult(repo.env, backup_id, manifest.kind, objects, size, tiers)


def prune(
    repo: Repository,
    policy: Policy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    running: dict[str, frozenset[str] | None] | None = None,
) -> PruneResult:
    """Apply the retention policy (or, with ``dry_run``, only say what it would do)."""
    result = plan_prune(repo, policy, now=now, dry_run=dry_run, running=running)
    if dry_run:
        return result
    stamp = now or datetime.now(UTC)
    spared: set[str] = set()
    for backup in deletion_order(result.plan.deleted):  # an incremental before its parent
        hold = read_hold(repo, backup.id)  # a keep that landed after the plan was made
        if (hold is not None and hold.active(stamp)) or (
            backup.id not in spared and any(c in spared for c in _children(result, backup.id))
        ):
            log.warning("prune %s: backup %s is kept now (drkit keep): left", repo.env, backup.id)
            spared.add(backup.id)
            result.errors.append(f"backup {backup.id} was kept while prune ran: left")
            continue
        log.info("prune %s: deleting backup %s", repo.env, backup.id)
        objects, size = delete_backup(repo, backup.id)
        result.deleted_objects += objects
        result.deleted_bytes += size
    for orphan in result.orphans:
        if orphan.action != "DELETE":
            continue
        log.info("prune %s: removing leftover %s (no manifest)", repo.env, orphan.id)
        for info in repo.list(backup_prefix(orphan.id)):
            if info.key.endswith("/" + MANIFEST):
                # a backup finished while we were pruning: it is no orphan any more
                break
        else:
            for info in repo.list(backup_prefix(orphan.id)):
                repo.delete(info.key)
                result.deleted_objects += 1
                result.deleted_bytes += info.size
    if spared:  # the WAL plan did not count them: delete no WAL this time
        result.wal_deleted = []
    for key in result.wal_deleted:
        repo.delete(key)
        result.deleted_objects += 1
    # uploads a crash cut short (temp files, open multipart uploads), past the same grace;
    # not while a backup runs: its upload in flight may be older than the grace
    if running:
        log.info("prune %s: a backup is running, incomplete uploads are left", repo.env)
    else:
        grace_start = (now or datetime.now(UTC)) - policy.retention.orphan_grace
        result.deleted_objects += repo.backend.sweep_incomplete(repo.key(""), grace_start)
    if result.wal_locked:
        log.warning(
            "prune %s: %d WAL files older than %s are locked by the store until %s "
            "(object lock): left until their lock ends",
            repo.env,
            len(result.wal_locked),
            result.wal_cutoff,
            iso(result.wal_locked_until),
        )
    if result.wal_deleted:
        log.info(
            "prune %s: deleted %d WAL files older than %s",
            repo.env,
            len(result.wal_deleted),
            result.wal_cutoff,
        )
    log.info(
        "prune %s: kept %d backups, deleted %d, %d leftovers removed",
        repo.env,
        len(result.plan.kept),
        len(result.plan.deleted),
        sum(1 for o in result.orphans if o.action == "DELETE"),
    )
    return result


def prune_policy(policy: Policy) -> PruneResult:
    """Prune an environment's repository (the scheduler's ``prune`` job)."""
    from drkit.storage import Repository

    repo = Repository.for_policy(policy)
    try:
        return prune(repo, policy, running=running_backups(policy))
    finally:
        repo.close()


# -- the --json documents --------------------------------------------------------


class PruneBackup(Shape):
    id: str
    kind: Literal["logical", "physical"]
    started_at: Timestamp
    size_bytes: int = described("bytes stored")
    size: int = described("the same as size_bytes (kept for version 1; prefer size_bytes)")
    action: Literal["KEEP", "DELETE"]
    reasons: list[str] = described("the retention rules that keep it (or why it goes)")
    wal: Literal["point-in-time", "consistent point only"] | None = described(
        "kept base backups: whether the WAL after its consistent point stays (point-in-time) "
        "or only the WAL that makes it consistent (retention.wal); null for the others",
        default=None,
    )
    kept_until: str | None = described(
        "kept by hand: the time the keep ends, or 'forever'; null when nobody keeps it",
        default=None,
    )


class PruneOrphan(Shape):
    id: str = described("a backup prefix with no manifest")
    objects: int
    size_bytes: int = described("bytes stored")
    size: int = described("the same as size_bytes (kept for version 1; prefer size_bytes)")
    last_modified: Timestamp
    action: Literal["KEEP", "DELETE"]
    reason: str


class PruneUnreadable(Shape):
    id: str
    error: str = described("why its manifest could not be read (it is kept)")


class PruneWal(Shape):
    cutoff: str | None = described(
        "WAL older than this segment is deleted (except the consistent_only backups' "
        "start..stop segments)"
    )
    delete: int = described("WAL files deleted (or, in a dry run, to delete)")
    retention: str | None = described(
        "retention.wal (null: WAL is kept from the oldest kept base backup on)", default=None
    )
    pitr_from: Timestamp | None = described(
        "the oldest point the remaining WAL recovers to: pitr_from_backup's consistent point",
        default=None,
    )
    pitr_from_backup: str | None = described(
        "the base backup point-in-time recovery starts from (the segment cutoff is its start)",
        default=None,
    )
    consistent_only: list[str] = described(
        "kept base backups older than it: only the WAL that makes them consistent stays, so "
        "they restore to their consistent point only",
        default_factory=list,
    )
    locked: int = described(
        "WAL files older than the cutoff left because the store has locked them (object "
        "lock); a later prune deletes them once their lock ends",
        default=0,
    )
    locked_until: Timestamp | None = described(
        "when the latest of those locks ends (null: none is locked)", default=None
    )


class PruneDocument(Document):
    """`drkit prune ENV [--dry-run] --json`"""

    environment: str
    dry_run: bool
    timezone: str = described("the time zone retention days are counted in")
    backups: list[PruneBackup]
    orphans: list[PruneOrphan]
    unreadable: list[PruneUnreadable]
    wal: PruneWal
    kept: int
    deleted: int
    oldest_restorable: Timestamp | None
    newest_restorable: Timestamp | None
    deleted_objects: int
    deleted_bytes: int = described("bytes deleted")


class DeleteDocument(Document):
    """`drkit delete ENV ID --json` (exit 4, nothing deleted, when a guard refuses)"""

    environment: str
    id: str = described("the backup deleted")
    kind: Literal["logical", "physical"]
    deleted_objects: int = described("objects removed, its manifest first")
    deleted_bytes: int = described("bytes removed")
    tiers: list[str] = described(
        "the retention tiers it satisfied (deleting by hand overrides them)"
    )
