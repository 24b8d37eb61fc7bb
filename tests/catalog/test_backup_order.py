"""The order of backups is the server's, never the host clock's (drkit.catalog.order).

Worked examples (a host clock that jumped forward or back, equal positions, timelines,
a restore that went back in time, a fresh initdb, manifests written before drkit
recorded positions), property tests over simulated histories with wrong host clocks
(the order, and retention, are those of a correct clock), and the resolver of
``latest``/``random``/``ID`` with the kinds a command can use.
"""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.backup.chain import resolve_chain
from drkit.backup.retention import BackupRef, backup_ref, deletion_order, plan_retention
from drkit.catalog import (
    KINDS,
    SKEW_BOUND,
    Manifest,
    ServerPoint,
    chronological,
    host_clock_skew,
    list_backups,
    make_backup_id,
    newest,
    newest_holding,
    precedes,
    resolve_backup,
    write_manifest,
)
from drkit.config import Policy, RetentionConfig, parse_policy
from drkit.errors import NotFoundError, ObjectExists, UsageError
from drkit.lsn import format_lsn
from drkit.storage import Repository, StoredObject
from tests.builders import build_manifest

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
SYSID = "7441000000000000001"
FRESH = "7441999999999999999"  # the same environment after a fresh initdb


def manifest(
    label: str,
    *,
    server: datetime,
    host_skew: timedelta = timedelta(0),
    lsn: int | None = None,
    timeline: int = 1,
    sysid: str | None = SYSID,
    kind: str = "logical",
    databases: tuple[str, ...] = ("app",),
) -> Manifest:
    """A backup whose server saw ``server`` and the position ``lsn``; the host clock was
    ``host_skew`` off (the id and started/finished come from the host, as drkit does)."""
    started = server + host_skew
    backup_id = f"{make_backup_id(started, kind).removesuffix('-' + kind)}{label}-{kind}"
    return build_manifest(
        kind,
        backup_id=backup_id,
        at=started,
        duration=timedelta(seconds=30),
        databases=databases,
        consistent_at=server,
        system_identifier=sysid if lsn is not None else None,
        consistent_lsn=format_lsn(lsn) if lsn is not None else None,
        consistent_timeline=timeline if lsn is not None else None,
    )


def order(items: list[Manifest]) -> list[Manifest]:
    shuffled = list(items)
    random.Random(7).shuffle(shuffled)
    return chronological(shuffled)


def test_a_host_clock_30_days_ahead_does_not_make_a_backup_the_newest() -> None:
    ahead = manifest("a", server=T0, lsn=0x1000000, host_skew=timedelta(days=30))
    real = [
        manifest(f"r{i}", server=T0 + timedelta(days=i), lsn=0x1000000 * (i + 1)) for i in (1, 2)
    ]
    assert ahead.started_at > real[-1].started_at and ahead.id > real[-1].id  # what fooled us
    assert order([ahead, *real]) == [ahead, *real]
    assert newest([ahead, *real]) is real[-1]
    assert ahead.clock_skewed and not any(m.clock_skewed for m in real)
    assert ahead.host_skew == pytest.approx(-30 * 86400)


def test_a_host_clock_that_jumped_back_changes_nothing() -> None:
    first = manifest("a", server=T0, lsn=0x2000000)
    behind = manifest(
        "b", server=T0 + timedelta(hours=1), lsn=0x3000000, host_skew=-timedelta(days=2)
    )
    assert order([first, behind]) == [first, behind]
    assert behind.host_skew == pytest.approx(2 * 86400, abs=60)  # the host was behind


def test_the_position_wins_over_the_server_clock_within_one_cluster() -> None:
    # the server's own clock was corrected backwards between the two backups
    before = manifest("a", server=T0 + timedelta(minutes=10), lsn=0x2000000)
    after = manifest("b", server=T0, lsn=0x2000100)
    assert order([after, before]) == [before, after]
    assert precedes(before, after) and not precedes(after, before)


def test_equal_positions_fall_back_to_the_server_time_never_the_id() -> None:
    # an idle server: two dumps at the same WAL position; the ids would say otherwise
    early = manifest("z", server=T0, lsn=0x2000000, host_skew=timedelta(hours=5))
    late = manifest("a", server=T0 + timedelta(hours=1), lsn=0x2000000)
    assert early.id > late.id
    assert order([late, early]) == [early, late]


def test_a_higher_timeline_is_newer_whatever_its_position() -> None:
    # a restore went back in time: its LSNs continue from the restore point, below the
    # old timeline's newest backup
    old = manifest("a", server=T0, lsn=0x9000000, timeline=1)
    restored = manifest("b", server=T0 + timedelta(days=1), lsn=0x5000000, timeline=2)
    also_old = manifest("c", server=T0 - timedelta(days=1), lsn=0x8000000, timeline=1)
    assert order([restored, old, also_old]) == [also_old, old, restored]


def test_a_fresh_initdb_is_ordered_by_the_servers_time() -> None:
    # positions restart under a new system identifier: they compare with nothing
    old = [manifest(f"o{i}", server=T0 + timedelta(hours=i), lsn=0x90000000 + i) for i in range(3)]
    fresh = [
        manifest(f"f{i}", server=T0 + timedelta(hours=5 + i), lsn=0x1000000 + i, sysid=FRESH)
        for i in range(2)
    ]
    assert order(old + fresh) == old + fresh
    assert not precedes(fresh[0], old[-1]) and precedes(old[-1], fresh[0])


def test_manifests_without_positions_are_ordered_by_the_servers_time() -> None:
    docs: list[dict[str, Any]] = []
    for i, skew in enumerate((timedelta(days=40), timedelta(0), -timedelta(days=3))):
        m = manifest(f"x{i}", server=T0 + timedelta(days=i), host_skew=skew)
        doc = m.to_dict()  # as drkit wrote them before it recorded positions
        for key in ("consistent_lsn", "consistent_timeline", "system_identifier"):
            assert key not in doc
        docs.append(doc)
    old = [Manifest.from_dict(d) for d in docs]
    assert all(m.server_point is None and m.clock_skew is None for m in old)
    assert order(old) == old
    new = manifest("n", server=T0 + timedelta(days=5), lsn=0x1000000)
    assert order([new, *old]) == [*old, new]
    # the host interval alone gives away the skew of an old manifest
    assert old[0].clock_skewed and not old[1].clock_skewed and old[2].clock_skewed


def test_an_old_physical_manifest_is_placed_by_its_stop_point() -> None:
    doc = manifest("p", server=T0, kind="physical").to_dict()
    doc.update(
        wal_stop="0/5000100", timeline=1, system_identifier=SYSID, extra={"stop_timeline": 2}
    )
    old = Manifest.from_dict(doc)
    assert old.server_point == ServerPoint(SYSID, 2, 0x5000100)
    later_logical = manifest("l", server=T0 - timedelta(hours=1), lsn=0x5000200, timeline=2)
    assert order([later_logical, old]) == [old, later_logical]


def test_round_trip_keeps_the_position_and_the_skew() -> None:
    m = manifest("a", server=T0, lsn=0x16B374D848, timeline=3)
    m.clock_skew = -12.5
    back = Manifest.from_dict(m.to_dict())
    assert back.server_point == ServerPoint(SYSID, 3, 0x16B374D848)
    assert back.clock_skew == -12.5 and back.consistent_lsn == "16/B374D848"


def test_an_unparsable_position_makes_the_manifest_unreadable() -> None:
    doc = manifest("a", server=T0, lsn=1).to_dict()
    doc["consistent_lsn"] = "not-an-lsn"
    with pytest.raises(Exception, match="unreadable manifest"):
        Manifest.from_dict(doc)


def test_skew_is_the_larger_of_the_measured_one_and_the_host_interval() -> None:
    start, end = T0, T0 + timedelta(minutes=2)
    assert host_clock_skew(start, end, T0 + timedelta(minutes=1), None) is None
    assert host_clock_skew(start, end, T0 + timedelta(minutes=1), 4.0) == 4.0
    # someone rewrote started_at: the interval gives it away although 0.1 s was measured
    assert host_clock_skew(start, end, T0 - timedelta(days=1), 0.1) == -86400.0
    assert host_clock_skew(start, end, end + SKEW_BOUND * 2, None) == 600.0


def test_an_incremental_whose_parent_ran_with_a_clock_ahead_still_resolves() -> None:
    parent = manifest("p", server=T0, lsn=0x3000000, kind="physical", host_skew=timedelta(days=30))
    child = manifest("c", server=T0 + timedelta(days=1), lsn=0x5000000, kind="physical")
    child.parent = parent.id
    assert [m.id for m in resolve_chain(child, {parent.id: parent, child.id: child})] == [
        parent.id,
        child.id,
    ]
    parent.parent, child.parent = child.id, None  # a "parent" that is in fact newer
    with pytest.raises(Exception, match="is not older"):
        resolve_chain(parent, {parent.id: parent, child.id: child})


# ---------------------------------------------------------------------------
# Properties: histories with wrong host clocks order (and retain) as if it were right
# ---------------------------------------------------------------------------

EVENT = st.sampled_from(["backup"] * 8 + ["idle-backup", "restore", "initdb", "old-style"])
SKEW = st.one_of(
    st.just(0),
    st.integers(-60 * 86400, 60 * 86400),
    st.integers(-600, 600),
)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[Manifest, Manifest]]:
    """(as recorded with a wrong host clock, as it would be with a right one), in the
    true order of events: the server clocks are right, the positions behave as
    PostgreSQL's do (a restore goes back to an earlier position on a new timeline, an
    initdb starts over under a new system identifier)."""
    events = draw(st.lists(EVENT, min_size=1, max_size=60))
    skews = draw(st.lists(SKEW, min_size=len(events), max_size=len(events)))
    gaps = draw(st.lists(st.integers(1, 3 * 86400), min_size=len(events), max_size=len(events)))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(events), max_size=len(events)))
    sysid, timeline, lsn, server = 7000, 1, 0x1000000, T0
    history: list[tuple[Manifest, Manifest]] = []
    for i, (event, skew, gap, kind) in enumerate(zip(events, skews, gaps, kinds, strict=True)):
        server += timedelta(seconds=gap)
        if event == "restore":
            timeline += 1
            lsn = draw(st.integers(0x1000000, lsn))
        elif event == "initdb":
            sysid, timeline, lsn = sysid + 1, 1, 0x1000000
        elif event != "idle-backup":
            lsn += draw(st.integers(1, 0x10000000))
        pair = []
        for host in (timedelta(seconds=skew), timedelta(0)):
            m = manifest(
                f"n{i:03d}",
                server=server,
                host_skew=host,
                lsn=None if event == "old-style" else lsn,
                timeline=timeline,
                sysid=str(sysid),
                kind=kind,
            )
            m.id = f"{i:03d}-{kind}"  # the same backup in both worlds
            pair.append(m)
        history.append((pair[0], pair[1]))
    return history


@settings(max_examples=200, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_the_order_is_the_true_one_whatever_the_host_clocks(
    history: list[tuple[Manifest, Manifest]], rnd: random.Random
) -> None:
    skewed = [wrong for wrong, _ in history]
    rnd.shuffle(skewed)
    assert [m.id for m in chronological(skewed)] == [wrong.id for wrong, _ in history]
    assert newest(skewed) is history[-1][0]


@settings(max_examples=150, deadline=None)
@given(
    histories(),
    st.builds(
        RetentionConfig,
        daily=st.integers(0, 10),
        weekly=st.integers(0, 5),
        monthly=st.integers(0, 4),
    ),
    st.sampled_from(["UTC", "Europe/Rome", "Pacific/Chatham"]),
)
def test_retention_is_that_of_a_right_clock(
    history: list[tuple[Manifest, Manifest]], cfg: RetentionConfig, zone: str
) -> None:
    wrong = plan_retention([backup_ref(w) for w, _ in history], cfg, zone)
    right = plan_retention([backup_ref(r) for _, r in history], cfg, zone)
    assert [(d.backup.id, d.action, d.reasons) for d in wrong.decisions] == [
        (d.backup.id, d.action, d.reasons) for d in right.decisions
    ]
    # newest first, in the true order
    assert [d.backup.id for d in wrong.decisions] == [w.id for w, _ in reversed(history)]
    assert [b.id for b in deletion_order(wrong.deleted)] == [
        w.id for w, _ in history if wrong.by_id[w.id].action == "DELETE"
    ]


def test_buckets_are_the_servers_days() -> None:
    # 23:30 in Rome on the 26th by the server; the host said 00:30 on the 27th
    ahead = manifest(
        "a",
        server=datetime(2026, 11, 26, 22, 30, tzinfo=UTC),
        lsn=0x1000000,
        host_skew=timedelta(hours=1),
    )
    later = manifest("b", server=datetime(2026, 11, 27, 1, 0, tzinfo=UTC), lsn=0x2000000)
    plan = plan_retention(
        [backup_ref(ahead), backup_ref(later)], RetentionConfig(daily=2), "Europe/Rome"
    )
    assert plan.reasons(ahead.id) == ("daily 2026-11-26",)
    assert plan.reasons(later.id) == ("daily 2026-11-27", "newest")


def test_a_ref_without_server_facts_orders_by_its_start() -> None:
    a = BackupRef("b", "logical", T0)
    b = BackupRef("a", "logical", T0 + timedelta(hours=1))
    assert chronological([b, a]) == [a, b]


# ---------------------------------------------------------------------------
# The resolver: latest means the newest backup this command can use
# ---------------------------------------------------------------------------


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return parse_policy(
        "prod",
        {
            "environment": "prod",
            "database": {"url": "postgresql://u@localhost/app"},
            "repository": {
                "url": f"file://{tmp_path / 'repo'}",
                "compression": {"algorithm": "none"},
            },
        },
        "test-policy.yaml",
    )


@pytest.fixture
def repo(policy: Policy) -> Repository:
    return Repository.for_policy(policy)


def publish(repo: Repository, m: Manifest) -> Manifest:
    name = "base.tar" if m.kind == "physical" else "app.dump"
    m.objects = [repo.store(f"backups/{m.id}/{name}", io.BytesIO(b"x"), database="app")]
    write_manifest(repo, m)
    return m


def test_latest_is_the_newest_backup_of_the_kinds_the_command_uses(repo: Repository) -> None:
    # the shipped prod schedule: nightly dumps, a weekly base backup on Sunday 03:00
    dump = publish(repo, manifest("", server=T0, lsn=0x1000000))
    base = publish(
        repo, manifest("", server=T0 + timedelta(hours=1), lsn=0x3000000, kind="physical")
    )
    ahead = publish(
        repo,
        manifest("", server=T0 - timedelta(days=1), lsn=0x800000, host_skew=timedelta(days=30)),
    )
    assert [m.id for m in list_backups(repo)] == [ahead.id, dump.id, base.id]
    # restore (logical) and sanitize --from-backup: the newest logical backup
    assert resolve_backup(repo, "latest", kinds=("logical",)).id == dump.id
    assert resolve_backup(repo, "latest", kinds=("logical",), database="app").id == dump.id
    # verify and drill: the newest of any kind; drill --point-in-time: physical
    assert resolve_backup(repo, "latest").id == base.id
    assert resolve_backup(repo, "latest", kinds=("physical",)).id == base.id
    for seed in range(20):
        picked = resolve_backup(repo, "random", kinds=("logical",), rng=random.Random(seed))
        assert picked.kind == "logical"
    assert newest_holding(list_backups(repo), "app", "logical") is not None
    assert newest_holding(list_backups(repo), "app", "logical").id == dump.id  # type: ignore[union-attr]
    # an explicit id of the other kind is refused with what to do instead
    with pytest.raises(UsageError, match="restore a physical one"):
        resolve_backup(repo, base.id, kinds=("logical",), other_kind_hint="restore a physical one")


def test_no_backup_of_the_kind_says_what_the_repository_holds(repo: Repository) -> None:
    publish(repo, manifest("b", server=T0, lsn=0x3000000, kind="physical"))
    with pytest.raises(NotFoundError, match=r"no logical backups .*physical backups only"):
        resolve_backup(repo, "latest", kinds=("logical",))


def test_a_manifest_is_never_replaced_and_a_published_backup_never_discarded(
    repo: Repository,
) -> None:
    from drkit.backup.logical import discard_partial

    first = publish(repo, manifest("a", server=T0, lsn=0x1000000))
    twin = manifest("a", server=T0 + timedelta(minutes=1), lsn=0x2000000)
    twin.id = first.id  # the same id, taken twice
    twin.objects = [StoredObject(f"prod/backups/{first.id}/app.dump", 1, "0" * 64, 1, "none")]
    with pytest.raises(ObjectExists, match=f"backup id {first.id} is already taken"):
        write_manifest(repo, twin)
    write_manifest(repo, first)  # the same manifest again (a retried request) stands
    discard_partial(repo, first.id)  # the second backup's clean-up after its failure
    assert [m.id for m in list_backups(repo)] == [first.id]
    assert list_backups(repo)[0].consistent_at == T0


def test_metrics_time_the_newest_backup_by_the_server(repo: Repository, policy: Policy) -> None:
    """A host clock a month ahead must not date the last success a month ahead (the
    "backup too old" alert would stay silent for a month)."""
    from drkit.schedule.metrics import read_catalog

    real = publish(repo, manifest("", server=T0, lsn=0x2000000))
    ahead = publish(
        repo,
        manifest("", server=T0 + timedelta(hours=1), lsn=0x3000000, host_skew=timedelta(days=30)),
    )
    snapshot = read_catalog(repo, policy, now=T0 + timedelta(hours=2))
    assert snapshot.newest["logical"].id == ahead.id and real.id < ahead.id
    assert abs(snapshot.newest["logical"].finished_at - (T0 + timedelta(hours=1))) < timedelta(
        minutes=1
    )
