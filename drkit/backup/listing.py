"""What ``drkit backup`` and ``drkit backups`` report about backups: one manifest's
summary, and the environment's backups with their retention tiers and keeps, newest
first, with the restore points recorded beside them.

The manifest (:class:`drkit.catalog.Manifest`) is the record on disk; the documents
here are built from it (:func:`backup_document`, :meth:`BackupList.document`) and are
the one description of what both commands write with ``--json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from drkit.backup.restorepoint import RestorePoint, RestorePointRow, list_restore_points
from drkit.catalog import SKEW_BOUND, Hold, Manifest, iso, scan
from drkit.documents import Document, Shape, Timestamp, described
from drkit.lsn import format_lsn

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage import Repository


class BackupSummary(Shape):
    id: str = described("the backup ID (what restore and verify take)")
    kind: Literal["logical", "physical"]
    environment: str
    databases: list[str] = described("the databases it holds")
    started_at: Timestamp
    finished_at: Timestamp
    consistent_at: Timestamp | None = described("the point the backup restores to")
    duration_seconds: float = described("seconds the backup took")
    size_bytes: int = described("bytes stored in the repository (compressed, encrypted)")
    raw_size_bytes: int = described("bytes before compression and encryption")
    duration: float = described(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
    size: int = described("the same as size_bytes (kept for version 1; prefer size_bytes)")
    raw_size: int = described(
        "the same as raw_size_bytes (kept for version 1; prefer raw_size_bytes)"
    )
    tables: int | None = described("tables dumped (logical)", default=None)
    rows: int | None = described("rows counted at dump time (logical)", default=None)
    wal_start: str | None = described("start WAL location (physical)", default=None)
    wal_stop: str | None = described("stop WAL location (physical)", default=None)
    timeline: int | None = described("timeline of the base backup (physical)", default=None)
    incremental: bool | None = described(
        "an incremental base backup (physical, PostgreSQL 17+)", default=None
    )
    parent: str | None = described(
        "the backup an incremental is relative to; restoring it needs the whole chain",
        default=None,
    )
    consistent_lsn: str | None = described(
        "the WAL position the backup is consistent at, as the server said (logical: its "
        "snapshot; physical: its stop point); with consistent_timeline and "
        "system_identifier it orders backups (null: ordered by the server's time)",
        default=None,
    )
    consistent_timeline: int | None = described("the timeline of consistent_lsn", default=None)
    system_identifier: str | None = described(
        "the cluster's system identifier (pg_control_system())", default=None
    )
    clock_skew_seconds: float | None = described(
        "the database server's clock minus drkit's host clock while the backup ran "
        "(negative: the host was ahead); null when unknown",
        default=None,
    )
    clock_skewed: bool = described(
        f"true when clock_skew_seconds is beyond {SKEW_BOUND.total_seconds():g} s either way: "
        "the id, started_at and "
        "finished_at come from a wrong host clock (the order of backups never reads them)",
        default=False,
    )


class BackupDocument(Document, BackupSummary):
    """`drkit backup ENV [--physical] --json`: the backup just taken"""


class BackupRow(BackupSummary):
    tiers: list[str] = described(
        "the retention tiers it currently satisfies (a keep by hand reads 'kept by hand ...')"
    )
    kept_until: str | None = described(
        "kept by hand (drkit keep): the RFC 3339 time the keep ends, or 'forever' (until "
        "released); null when nobody keeps it",
        default=None,
    )


class BackupsDocument(Document):
    """`drkit backups ENV --json`: newest first, in the server's order (WAL position
    within a cluster, then the server's time), never by id or host time"""

    environment: str
    repository: str = described("the repository location, credentials masked")
    backups: list[BackupRow]
    restore_points: list[RestorePointRow] = described(
        "the restore points drkit restore-point recorded, oldest first", default_factory=list
    )


def _summary(manifest: Manifest) -> dict[str, Any]:
    """The fields of :class:`BackupSummary` a manifest of its kind has (a logical
    backup's document has no WAL keys, a physical one's no table counts)."""
    point = manifest.server_point
    duration = round(manifest.duration, 3)
    fields: dict[str, Any] = {
        "id": manifest.id,
        "kind": manifest.kind,
        "environment": manifest.environment,
        "databases": manifest.databases,
        "started_at": iso(manifest.started_at),
        "finished_at": iso(manifest.finished_at),
        "consistent_at": iso(manifest.consistent_at),
        "duration": duration,
        "size": manifest.size,
        "raw_size": manifest.raw_size,
        "duration_seconds": duration,
        "size_bytes": manifest.size,
        "raw_size_bytes": manifest.raw_size,
        # the server's consistent point: what orders backups (never the id or started_at)
        "consistent_lsn": point and format_lsn(point.lsn),
        "consistent_timeline": point and point.timeline,
        "system_identifier": manifest.system_identifier,
        "clock_skew_seconds": manifest.host_skew,
        "clock_skewed": manifest.clock_skewed,
    }
    if manifest.kind == "logical":
        fields["tables"] = sum(len(t) for t in manifest.row_counts.values())
        fields["rows"] = sum(sum(t.values()) for t in manifest.row_counts.values())
    else:
        fields.update(
            wal_start=manifest.wal_start,
            wal_stop=manifest.wal_stop,
            timeline=manifest.timeline,
            incremental=manifest.incremental,
            parent=manifest.parent,
        )
    return fields


def backup_document(manifest: Manifest) -> BackupDocument:
    """``drkit backup --json``: the backup just taken."""
    return BackupDocument(ok=True, **_summary(manifest))


@dataclass(frozen=True)
class BackupList:
    """An environment's backups as ``drkit backups`` shows them."""

    environment: str
    repository: str
    #: newest first, in the server's order
    manifests: list[Manifest]
    #: backup id -> the retention rules it satisfies now
    tiers: dict[str, list[str]]
    #: backup id -> the keep by hand that holds now
    holds: dict[str, Hold]
    restore_points: list[RestorePoint]

    def kept_until(self, backup_id: str) -> str | None:
        hold = self.holds.get(backup_id)
        if hold is None:
            return None
        return iso(hold.until) if hold.until else "forever"

    def document(self) -> BackupsDocument:
        return BackupsDocument(
            ok=True,
            environment=self.environment,
            repository=self.repository,
            backups=[
                BackupRow(
                    **_summary(m), tiers=self.tiers.get(m.id, []), kept_until=self.kept_until(m.id)
                )
                for m in self.manifests
            ],
            restore_points=[p.row() for p in self.restore_points],
        )


def list_environment(policy: Policy, repo: Repository) -> BackupList:
    """The backups of ``policy``'s environment in ``repo``, with their tiers and keeps."""
    from drkit.backup.retention import current_tiers

    listing = scan(repo)
    now = datetime.now(UTC)
    holds = {k: h for k, h in listing.holds.items() if h.active(now)}
    tiers = current_tiers(policy, listing.manifests, {k: h.reason for k, h in holds.items()})
    return BackupList(
        environment=policy.name,
        repository=repo.location,
        manifests=list(reversed(listing.manifests)),
        tiers=tiers,
        holds=holds,
        restore_points=list_restore_points(repo),
    )
