"""Retention never breaks an incremental chain (an incremental is only restorable with its
whole chain): a kept incremental keeps every ancestor, with the reason ``parent of <child>``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.backup.retention import BackupRef, backup_ref, plan_retention, wal_cutoff
from drkit.config import RetentionConfig
from tests.builders import build_manifest

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def physical(day: int, parent: BackupRef | None = None, hour: int = 3) -> BackupRef:
    when = T0 + timedelta(days=day, hours=hour - 3)
    return BackupRef(
        f"{when:%Y%m%dT%H%M%SZ}-physical",
        "physical",
        when,
        consistent_at=when + timedelta(minutes=1),
        wal_start_segment=f"00000001000000000000{day + 1:04X}",
        parent=parent.id if parent else None,
    )


def test_a_kept_incremental_keeps_its_whole_chain() -> None:
    full = physical(0)  # a Sunday full ...
    first = physical(1, full)  # ... and daily incrementals on top of each other
    second = physical(2, first)
    third = physical(3, second)
    plan = plan_retention([full, first, second, third], RetentionConfig(daily=1), "UTC")
    assert [b.id for b in plan.kept] == [third.id, second.id, first.id, full.id]
    assert plan.reasons(third.id) == ("daily 2026-11-04", "newest")
    assert plan.reasons(second.id) == (f"parent of {third.id}",)
    assert plan.reasons(first.id) == (f"parent of {second.id}",)
    assert plan.reasons(full.id) == (f"parent of {first.id}",)
    # the WAL cutoff follows the oldest kept backup: the chain's full one
    assert wal_cutoff(plan) == full.wal_start_segment


def test_an_older_chain_goes_whole_when_nothing_keeps_it() -> None:
    old_full = physical(0)
    old_incr = physical(1, old_full)
    new_full = physical(7)
    new_incr = physical(8, new_full)
    plan = plan_retention([old_full, old_incr, new_full, new_incr], RetentionConfig(daily=1), "UTC")
    assert {b.id for b in plan.kept} == {new_full.id, new_incr.id}
    assert {b.id for b in plan.deleted} == {old_full.id, old_incr.id}


def test_a_parent_kept_by_a_rule_says_both() -> None:
    full = physical(0)
    incr = physical(1, full)
    plan = plan_retention([full, incr], RetentionConfig(daily=2), "UTC")
    assert plan.reasons(full.id) == ("daily 2026-11-01", f"parent of {incr.id}")


def test_a_missing_parent_keeps_nothing_else_and_fails_nothing() -> None:
    full = physical(0)
    orphan = BackupRef(
        "20261103T030000Z-physical",
        "physical",
        T0 + timedelta(days=2),
        parent="20261102T030000Z-physical",  # pruned by hand: not in the listing
    )
    plan = plan_retention([full, orphan], RetentionConfig(daily=1), "UTC")
    assert [b.id for b in plan.kept] == [orphan.id]


def test_backup_ref_carries_the_parent_from_the_manifest() -> None:
    from drkit.catalog import Manifest

    manifest = build_manifest(
        "physical", at=T0, server_version="18.1", parent="20261101T030000Z-physical"
    )
    assert backup_ref(manifest).parent == "20261101T030000Z-physical"
    again = Manifest.from_dict(manifest.to_dict())
    assert again.parent == manifest.parent and again.incremental
    doc = manifest.to_dict()
    assert doc["incremental"] is True and doc["parent"] == "20261101T030000Z-physical"


@st.composite
def histories(draw: st.DrawFn) -> list[BackupRef]:
    """Up to 60 days of physical backups; each one full, or incremental on an older one."""
    days = draw(st.lists(st.integers(0, 59), min_size=1, max_size=40, unique=True))
    out: list[BackupRef] = []
    for day in sorted(days):
        parent = None
        if out and draw(st.booleans()):
            parent = out[draw(st.integers(0, len(out) - 1))]
        out.append(physical(day, parent))
    return out


@settings(max_examples=200, deadline=None)
@given(
    histories(),
    st.integers(0, 10),
    st.integers(0, 4),
    st.integers(0, 3),
)
def test_no_kept_backup_ever_loses_an_ancestor(
    backups: list[BackupRef], daily: int, weekly: int, monthly: int
) -> None:
    retention = RetentionConfig(daily=daily, weekly=weekly, monthly=monthly)
    plan = plan_retention(backups, retention, "UTC")
    by_id = {b.id: b for b in backups}
    kept = {b.id for b in plan.kept}
    for backup_id in kept:
        current = by_id[backup_id]
        while current.parent is not None:
            assert current.parent in kept, (backup_id, current.parent)
            current = by_id[current.parent]
    # what the rules keep without chains is still kept: chains only add
    flat = [BackupRef(b.id, b.kind, b.started_at, consistent_at=b.consistent_at) for b in backups]
    assert {b.id for b in plan_retention(flat, retention, "UTC").kept} <= kept
    # a backup kept only for a chain says which child keeps it
    for decision in plan.decisions:
        if decision.keep and all(r.startswith("parent of ") for r in decision.reasons):
            children = {r.removeprefix("parent of ") for r in decision.reasons}
            assert all(by_id[c].parent == decision.backup.id and c in kept for c in children)
    # idempotent: pruning what it keeps keeps all of it
    again = plan_retention([by_id[i] for i in kept], retention, "UTC")
    assert {b.id for b in again.kept} == kept


def test_prune_deletes_an_incremental_before_its_parent() -> None:
    """A crash halfway through a prune never leaves an incremental whose parent is gone
    while it still exists: descendants go first, otherwise oldest first."""
    from drkit.backup.retention import deletion_order

    full = physical(0)
    first = physical(1, full)
    second = physical(2, first)
    other = physical(3)
    beside = physical(4, full)
    order = [b.id for b in deletion_order([full, first, second, other, beside])]
    assert order.index(second.id) < order.index(first.id) < order.index(full.id)
    assert order.index(beside.id) < order.index(full.id)
    assert sorted(order) == sorted(b.id for b in (full, first, second, other, beside))
    # without chains: oldest first, as before
    plain = [physical(5), physical(6), physical(7)]
    assert [b.id for b in deletion_order(list(reversed(plain)))] == [b.id for b in plain]


@settings(max_examples=100, deadline=None)
@given(histories())
def test_deletion_order_is_a_permutation_with_descendants_first(
    backups: list[BackupRef],
) -> None:
    from drkit.backup.retention import deletion_order

    order = [b.id for b in deletion_order(backups)]
    assert sorted(order) == sorted(b.id for b in backups)
    position = {backup_id: i for i, backup_id in enumerate(order)}
    for b in backups:
        if b.parent is not None:
            assert position[b.id] < position[b.parent]
