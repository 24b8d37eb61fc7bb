"""``drkit prune``: apply the retention plan of :mod:`drkit.backup.retention` to a repository.

Order of deletion, so that a crash at any moment leaves a consistent repository:

1. for each backup the plan deletes (oldest first, but an incremental before its
   parent): its ``manifest.json`` first — from
   then on the backup no longer exists for anyone (a backup exists iff its manifest
   does) — then its other objects;
2. manifest-less leftovers (an interrupted backup, or step 1 cut short) whose newest
   object is older than ``retention.orphan_grace``; younger ones may be a backup still
   uploading and are left alone, and so is every leftover of a kind whose backup lock
   is held right now by a session older than the leftover's id
   (:func:`drkit.backup.lock.running_backups`: a backup running longer than the grace
   keeps its objects, while stale leftovers of earlier crashes still go);
3. WAL older than the start of the oldest kept physical backup (none at all when no
   physical backup is kept).

Backups whose manifest cannot be read are never deleted: they are reported so a person
can look.  ``dry_run`` computes exactly the same plan and deletes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from drkit.backup.catalog import (
    MANIFEST,
    Listing,
    Manifest,
    backup_prefix,
    iso,
    parse_backup_id,
    restorable_span,
    scan,
)
from drkit.backup.lock import running_backups
from drkit.backup.retention import (
    RetentionPlan,
    backup_ref,
    deletion_order,
    orphan_expired,
    plan_retention,
    wal_cutoff,
    wal_to_delete,
)

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class OrphanDecision:
    id: str
    objects: int
    size: int
    last_modified: datetime
    action: str  # DELETE | KEEP
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "objects": self.objects,
            "size": self.size,
            "size_bytes": self.size,
            "last_modified": iso(self.last_modified),
            "action": self.action,
            "reason": self.reason,
        }


@dataclass
class PruneResult:
    env: str
    dry_run: bool
    plan: RetentionPlan
    manifests: dict[str, Manifest]
    orphans: list[OrphanDecision]
    unreadable: dict[str, str]
    wal_cutoff: str | None
    wal_deleted: list[str]
    deleted_objects: int = 0
    deleted_bytes: int = 0
    errors: list[str] = field(default_factory=list)

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

    def to_dict(self) -> dict[str, Any]:
        backups = []
        for d in self.plan.decisions:
            m = self.manifests[d.backup.id]
            backups.append(
                {
                    "id": d.backup.id,
                    "kind": d.backup.kind,
                    "started_at": iso(m.started_at),
                    "size": m.size,
                    "size_bytes": m.size,
                    "action": d.action,
                    "reasons": list(d.reasons),
                }
            )
        return {
            "environment": self.env,
            "dry_run": self.dry_run,
            "timezone": self.plan.timezone,
            "backups": backups,
            "orphans": [o.to_dict() for o in self.orphans],
            "unreadable": [{"id": k, "error": v} for k, v in sorted(self.unreadable.items())],
            "wal": {"cutoff": self.wal_cutoff, "delete": len(self.wal_deleted)},
            "kept": len(self.plan.kept),
            "deleted": len(self.plan.deleted),
            "oldest_restorable": iso(self.oldest_restorable),
            "newest_restorable": iso(self.newest_restorable),
            "deleted_objects": self.deleted_objects,
            "deleted_bytes": self.deleted_bytes,
        }


def plan_prune(
    repo: Repository,
    policy: Policy,
    *,
    now: datetime | None = None,
    dry_run: bool = True,
    running: dict[str, datetime | None] | None = None,
) -> PruneResult:
    """Read the repository and decide; deletes nothing.  ``running``: the kinds of
    backup in progress now and since when (None: unknown, the grace alone decides)."""
    now = now or datetime.now(UTC)
    listing: Listing = scan(repo)
    manifests = {m.id: m for m in listing.manifests}
    plan = plan_retention(
        [backup_ref(m) for m in listing.manifests], policy.retention, policy.schedule.timezone
    )
    orphans = []
    for backup_id, infos in sorted(listing.orphans.items()):
        newest = max(i.modified for i in infos)
        expired = orphan_expired(newest, policy.retention.orphan_grace, now)
        kind = backup_id.rpartition("-")[2]
        if running and kind in running and _may_be_running(backup_id, running[kind]):
            action, reason = "KEEP", f"no manifest, and a {kind} backup is running now"
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
    cutoff = wal_cutoff(plan)
    wal_doomed = wal_to_delete([i.key for i in repo.list("wal/")], cutoff) if cutoff else []
    return PruneResult(
        env=repo.env,
        dry_run=dry_run,
        plan=plan,
        manifests=manifests,
        orphans=orphans,
        unreadable=dict(listing.unreadable),
        wal_cutoff=cutoff,
        wal_deleted=wal_doomed,
    )


#: clock difference tolerated between drkit's host (backup ids) and the database server
#: (session start times) when telling a running backup's objects from stale leftovers
CLOCK_SLACK = timedelta(minutes=10)


def _may_be_running(backup_id: str, holder_since: datetime | None) -> bool:
    parsed = parse_backup_id(backup_id)
    if parsed is None or holder_since is None:
        return True  # cannot tell: keep
    return parsed[0] >= holder_since - CLOCK_SLACK


def _delete_backup(repo: Repository, backup_id: str, result: PruneResult) -> None:
    prefix = backup_prefix(backup_id)
    manifest_key = repo.key(prefix + MANIFEST)
    repo.delete(manifest_key)  # first: from here on the backup does not exist
    result.deleted_objects += 1
    for info in repo.list(prefix):
        repo.delete(info.key)
        result.deleted_objects += 1
        result.deleted_bytes += info.size


def prune(
    repo: Repository,
    policy: Policy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    running: dict[str, datetime | None] | None = None,
) -> PruneResult:
    """Apply the retention policy (or, with ``dry_run``, only say what it would do)."""
    result = plan_prune(repo, policy, now=now, dry_run=dry_run, running=running)
    if dry_run:
        return result
    for backup in deletion_order(result.plan.deleted):  # an incremental before its parent
        log.info("prune %s: deleting backup %s", repo.env, backup.id)
        _delete_backup(repo, backup.id, result)
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
    from drkit.storage.repository import Repository

    repo = Repository.for_policy(policy)
    try:
        return prune(repo, policy, running=running_backups(policy))
    finally:
        repo.close()
