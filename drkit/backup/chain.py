"""Incremental base backup chains (PostgreSQL 17+): full <- incremental <- incremental ...

An incremental base backup (``pg_basebackup --incremental=<parent's backup_manifest>``)
holds only the blocks changed since its parent; restoring it needs the parent's data,
and the parent's parent's, down to a full backup.  drkit's manifest records the parent
by id (``parent``) and the cluster by its pg_control system identifier; PostgreSQL's own
``backup_manifest`` of every base backup is stored as an object of its own, so the next
incremental can be taken relative to it.

Invariants, all fail closed:

* a chain resolves only when every ancestor's manifest exists, belongs to the same
  cluster (system identifier) and is older than its child (by the server's WAL
  position, never the host clock); anything else is
  :class:`~drkit.errors.CheckFailed` naming the missing or foreign link;
* restore and drills never use a backup whose chain does not resolve;
* retention keeps every ancestor of a kept backup (:mod:`drkit.backup.retention`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from drkit.backup.walchain import backup_on_timeline
from drkit.catalog import Manifest, newest, precedes
from drkit.errors import CheckFailed
from drkit.storage import StoredObject
from drkit.wal import TimelineSwitch

#: PostgreSQL's backup manifest, stored beside base.tar for every base backup
PG_MANIFEST_NAME = "backup_manifest"
#: chains longer than this are refused (a loop in the parents, or a runaway schedule)
MAX_CHAIN = 1000


def pg_manifest_object(manifest: Manifest) -> StoredObject | None:
    """The stored ``backup_manifest`` of a base backup, if it has one."""
    return next((o for o in manifest.objects if o.name.startswith(PG_MANIFEST_NAME)), None)


def resolve_chain(manifest: Manifest, known: Mapping[str, Manifest]) -> list[Manifest]:
    """The chain that restores ``manifest``: the full backup first, ``manifest`` last.

    ``known``: every backup of the environment by id.  A missing, foreign or newer
    ancestor is CheckFailed (the backup cannot be restored)."""
    chain = [manifest]
    current = manifest
    while current.parent is not None:
        parent = known.get(current.parent)
        if parent is None:
            raise CheckFailed(
                f"backup {manifest.id} is incremental but its ancestor {current.parent} "
                f"(parent of {current.id}) is missing: the chain cannot be restored; "
                "take a full base backup (drkit backup ENV --physical)"
            )
        if parent.kind != "physical":
            raise CheckFailed(f"backup {current.id}: its parent {parent.id} is not physical")
        if (
            parent.system_identifier is not None
            and current.system_identifier is not None
            and parent.system_identifier != current.system_identifier
        ):
            raise CheckFailed(
                f"backup {current.id}: its parent {parent.id} is of another cluster "
                f"(system identifier {parent.system_identifier}, not "
                f"{current.system_identifier})"
            )
        if not precedes(parent, current):  # by the server's position, not the host clock
            raise CheckFailed(f"backup {current.id}: its parent {parent.id} is not older")
        if len(chain) >= MAX_CHAIN:
            raise CheckFailed(f"backup {manifest.id}: chain longer than {MAX_CHAIN} backups")
        chain.append(parent)
        current = parent
    chain.reverse()
    return chain


def chain_ok(manifest: Manifest, known: Mapping[str, Manifest]) -> bool:
    try:
        resolve_chain(manifest, known)
    except CheckFailed:
        return False
    return True


def by_id(manifests: Iterable[Manifest]) -> dict[str, Manifest]:
    return {m.id: m for m in manifests}


def choose_parent(
    manifests: Iterable[Manifest],
    system_identifier: str,
    timeline: int,
    history: list[TimelineSwitch],
) -> Manifest | None:
    """The parent of a new incremental backup: the newest physical backup of the same
    cluster whose stop point lies on ``timeline``'s lineage, whose chain resolves and
    whose ``backup_manifest`` is stored.  Backups of unknown identity (taken before drkit
    recorded it) never qualify."""
    physical = [m for m in manifests if m.kind == "physical"]
    known = by_id(physical)
    candidates = [
        m
        for m in physical
        if m.system_identifier is not None
        and m.system_identifier == system_identifier
        and pg_manifest_object(m) is not None
        and backup_on_timeline(m, timeline, history)
        and chain_ok(m, known)
    ]
    return newest(candidates)
