"""Incremental chains as pure logic: which parent a new incremental gets, and which chains
resolve.  Identity, not names: another cluster's backup, a backup without PostgreSQL's
manifest, a broken chain or a loop is never used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drkit.backup.chain import PG_MANIFEST_NAME, by_id, choose_parent, resolve_chain
from drkit.catalog import Manifest
from drkit.errors import CheckFailed
from drkit.storage import StoredObject
from drkit.wal import TimelineSwitch
from tests.builders import build_manifest

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
SYSID = "7441000000000000001"


def obj(backup_id: str, name: str) -> StoredObject:
    return StoredObject(f"prod/backups/{backup_id}/{name}.zst", 10, "0" * 64, 10, "zstd")


def backup(
    day: int,
    parent: Manifest | None = None,
    *,
    sysid: str | None = SYSID,
    timeline: int = 1,
    pg_manifest: bool = True,
    kind: str = "physical",
) -> Manifest:
    when = T0 + timedelta(days=day)
    backup_id = f"{when:%Y%m%dT%H%M%SZ}-{kind}"
    objects = [obj(backup_id, "base.tar")]
    if pg_manifest:
        objects.append(obj(backup_id, PG_MANIFEST_NAME))
    lsn = f"0/{(day + 1) * 0x1000000:X}"
    return build_manifest(
        kind,
        backup_id=backup_id,
        at=when,
        duration=timedelta(minutes=1),
        server_version="18.1",
        objects=objects,
        wal_start=lsn,
        wal_stop=lsn,
        timeline=timeline,
        parent=parent.id if parent else None,
        system_identifier=sysid,
    )


def test_the_newest_whole_chain_of_the_same_cluster_is_the_parent() -> None:
    full = backup(0)
    incr = backup(1, full)
    other_cluster = backup(2, sysid="7441999999999999999")
    unknown_identity = backup(3, sysid=None)  # taken before drkit recorded identities
    no_pg_manifest = backup(4, pg_manifest=False)
    logical = backup(5, kind="logical")
    everything = [full, incr, other_cluster, unknown_identity, no_pg_manifest, logical]
    assert choose_parent(everything, SYSID, 1, []) == incr
    # a chain whose base is gone is never built upon
    assert choose_parent([incr, other_cluster], SYSID, 1, []) is None
    assert choose_parent([], SYSID, 1, []) is None


def test_a_backup_off_the_current_timeline_is_not_a_parent() -> None:
    before = backup(0)  # timeline 1, ends at 0/1000000
    after = backup(5)  # timeline 1, ends at 0/6000000: past the switch to timeline 2
    history = [TimelineSwitch(1, 0x3000000, "promoted")]
    assert choose_parent([before, after], SYSID, 2, history) == before
    assert choose_parent([before, after], SYSID, 1, []) == after


def test_resolve_chain_full_first_and_fail_closed() -> None:
    full = backup(0)
    first = backup(1, full)
    second = backup(2, first)
    known = by_id([full, first, second])
    assert [m.id for m in resolve_chain(second, known)] == [full.id, first.id, second.id]
    assert resolve_chain(full, known) == [full]
    with pytest.raises(CheckFailed, match=f"ancestor {first.id}"):
        resolve_chain(second, by_id([full, second]))
    foreign = backup(0, sysid="7441999999999999999")
    with pytest.raises(CheckFailed, match="another cluster"):
        resolve_chain(first, by_id([foreign, first]))
    # a parent that is not older (a loop, or a hand-edited manifest) is refused
    looped = backup(3)
    looped.parent = second.id
    second.parent = looped.id
    with pytest.raises(CheckFailed, match="not older"):
        resolve_chain(looped, by_id([looped, second]))


def test_an_incremental_flag_without_a_parent_is_an_unreadable_manifest() -> None:
    doc = backup(1, backup(0)).to_dict()
    del doc["parent"]
    with pytest.raises(CheckFailed, match="without its parent"):
        Manifest.from_dict(doc)
