"""``drkit keep``: a person keeps one backup through ``prune``, until a date or released.

The keep is recorded in the repository, beside the backup's manifest
(``backups/<id>/keep.json``, :class:`drkit.catalog.manifests.Hold`), so every host that
prunes the repository sees it; it is stored with one atomic put (a reader sees the old
record or the new one, never half).  Retention reads it with the listing and keeps the
backup with the reason ``kept by hand [until ...]`` (and, for an incremental, its whole
chain); ``drkit delete`` refuses a kept backup.

Order against a concurrent ``prune``: the record is written only for a backup whose
manifest exists, and the manifest is read again afterwards; a backup deleted meanwhile
fails the keep (the record is removed again) rather than reporting a keep that holds
nothing.  ``prune`` reads the record again just before deleting a backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from drkit.catalog import (
    Hold,
    hold_key,
    iso,
    parse_backup_id,
    read_hold,
    read_manifest,
)
from drkit.documents import Document, described
from drkit.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from drkit.storage import Repository


@dataclass(frozen=True)
class KeepResult:
    """What ``drkit keep`` changed: the keep now (None: released) and the one before."""

    env: str
    backup_id: str
    kind: str
    hold: Hold | None
    previous: Hold | None

    def document(self) -> KeepDocument:
        def until(hold: Hold | None) -> str | None:
            if hold is None:
                return None
            return iso(hold.until) if hold.until else "forever"

        return KeepDocument(
            ok=True,
            environment=self.env,
            id=self.backup_id,
            kind=self.kind,
            kept=self.hold is not None,
            kept_until=until(self.hold),
            previous_until=until(self.previous),
        )


class KeepDocument(Document):
    """`drkit keep ENV ID [--until DATE | --release] --json`"""

    environment: str
    id: str = described("the backup")
    kind: Literal["logical", "physical"]
    kept: bool = described("a person keeps it now (false after --release)")
    kept_until: str | None = described(
        "the RFC 3339 time the keep ends, 'forever' (until released), or null (released)"
    )
    previous_until: str | None = described(
        "the keep it replaced or released, in the same form (null: it was not kept)"
    )


def _manifest_kind(repo: Repository, backup_id: str) -> str:
    if parse_backup_id(backup_id) is None:
        raise UsageError(f"{backup_id!r} is not a backup id (like 20261127T020000Z-logical)")
    return read_manifest(repo, backup_id).kind  # NotFoundError (exit 1) when it does not exist


def keep_backup(
    repo: Repository, backup_id: str, until: datetime | None = None, *, now: datetime | None = None
) -> KeepResult:
    """Keep ``backup_id`` through prune until ``until`` (None: until released)."""
    now = now or datetime.now(UTC)
    if until is not None and until <= now:
        raise UsageError(
            f"--until {iso(until)} is not in the future: a keep that ended keeps nothing"
        )
    kind = _manifest_kind(repo, backup_id)
    previous = read_hold(repo, backup_id)
    hold = Hold(backup_id, until.astimezone(UTC) if until else None, now)
    repo.put_json(hold_key(backup_id), hold.to_dict())
    try:
        read_manifest(repo, backup_id)
    except NotFoundError:
        repo.delete(repo.key(hold_key(backup_id)))
        raise NotFoundError(
            f"backup {backup_id} was deleted while it was being kept; nothing is kept"
        ) from None
    return KeepResult(repo.env, backup_id, kind, hold, previous)


def release_backup(repo: Repository, backup_id: str) -> KeepResult:
    """End a keep: the backup is subject to the retention rules again."""
    kind = _manifest_kind(repo, backup_id)
    previous = read_hold(repo, backup_id)
    if previous is not None:
        repo.delete(repo.key(hold_key(backup_id)))
    return KeepResult(repo.env, backup_id, kind, None, previous)
