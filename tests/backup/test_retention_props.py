"""Property tests of grandfather-father-son retention over years of simulated backup histories.

Histories are built from UTC instants with irregular gaps (minutes to weeks), several
backups a day, missing days, a clock that jumps back, and timezones with DST changes
(including Lord Howe's 30-minute shift).  The kept set is compared with an independent
reading of the rules (:mod:`drkit.backup.retention`): a backup is kept by ``daily: N`` when it is the newest of its local day
and fewer than N later local days have a backup (likewise for weeks and months), each
computed per kind and per database, a backup counting only for the databases it holds
(``drkit backup prod --database shop`` takes a partial one).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.backup.retention import BackupRef, plan_retention
from drkit.config import RetentionConfig

ZONES = [
    "UTC",
    "Europe/Rome",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "America/Santiago",
]

# gaps in seconds: same hour, same day, next day, missing days, weeks, clock jumps back
GAP = st.one_of(
    st.integers(1, 3600),
    st.integers(3600, 86400),
    st.integers(86400 - 7200, 86400 + 7200),
    st.integers(2 * 86400, 20 * 86400),
    st.integers(-6 * 3600, -1),
)


@st.composite
def histories(draw: st.DrawFn) -> list[BackupRef]:
    start = draw(st.datetimes(datetime(2019, 1, 1), datetime(2026, 1, 1))).replace(tzinfo=UTC)
    gaps = draw(st.lists(GAP, min_size=0, max_size=250))
    kinds = draw(
        st.lists(
            st.sampled_from(["logical", "physical"]), min_size=len(gaps) + 1, max_size=len(gaps) + 1
        )
    )
    failed = draw(st.sets(st.integers(0, len(gaps)), max_size=max(1, len(gaps) // 10)))
    held = draw(
        st.lists(
            st.sampled_from([("main", "shop"), ("main",), ("shop",)]),
            min_size=len(gaps) + 1,
            max_size=len(gaps) + 1,
        )
    )
    moment = start
    out: list[BackupRef] = []
    ids: set[str] = set()
    for i, kind in enumerate(kinds):
        if i:
            moment = moment + timedelta(seconds=gaps[i - 1])
        bid = f"{moment:%Y%m%dT%H%M%SZ}-{kind}"
        n = 1
        while bid in ids:
            n += 1
            bid = f"{moment:%Y%m%dT%H%M%SZ}-{kind}-{n}"
        ids.add(bid)
        out.append(BackupRef(bid, kind, moment, successful=i not in failed, databases=held[i]))
    return out


counts = st.integers(0, 40)
configs = st.builds(
    RetentionConfig, daily=counts, weekly=st.integers(0, 12), monthly=st.integers(0, 14)
)


def _key(b: BackupRef) -> tuple[datetime, str]:
    return (b.started_at, b.id)


def _series(backups: list[BackupRef]) -> dict[tuple[str, str], list[BackupRef]]:
    """(kind, database) -> the successful backups of that kind holding that database."""
    out: dict[tuple[str, str], list[BackupRef]] = {}
    for b in backups:
        if b.successful:
            for db in b.databases or ("",):
                out.setdefault((b.kind, db), []).append(b)
    return out


def oracle(backups: list[BackupRef], cfg: RetentionConfig, zone: str) -> dict[str, list[str]]:
    """The retention rules read literally, written independently of the implementation."""
    tz = ZoneInfo(zone)
    why: dict[str, dict[str, set[str]]] = {}  # backup id -> reason -> databases
    order = ("daily", "weekly", "monthly", "newest")
    for (_kind, db), series in _series(backups).items():
        if not series:
            continue
        periods = {
            "daily": (cfg.daily, lambda d: d.strftime("%Y-%m-%d")),
            "weekly": (cfg.weekly, lambda d: f"{d.isocalendar()[0]:04d}-W{d.isocalendar()[1]:02d}"),
            "monthly": (cfg.monthly, lambda d: d.strftime("%Y-%m")),
        }
        for name, (count, period) in periods.items():
            label = {b.id: period(b.started_at.astimezone(tz)) for b in series}
            labels = sorted(set(label.values()))  # these labels sort like the calendar
            for b in series:
                mine = label[b.id]
                same = [o for o in series if label[o.id] == mine]
                if max(same, key=_key) is not b:
                    continue
                later_periods = len(labels) - 1 - labels.index(mine)
                if later_periods < count:
                    why.setdefault(b.id, {}).setdefault(f"{name} {mine}", set()).add(db)
        newest = max(series, key=_key)
        why.setdefault(newest.id, {}).setdefault("newest", set()).add(db)
    kept: dict[str, list[str]] = {}
    by_id = {b.id: b for b in backups}
    for bid, reasons in why.items():
        held = set(by_id[bid].databases or ("",))
        kept[bid] = [
            r if dbs == held else f"{r} ({', '.join(sorted(dbs))})"
            for r, dbs in sorted(reasons.items(), key=lambda kv: order.index(kv[0].split()[0]))
        ]
    return kept


@settings(max_examples=150, deadline=None)
@given(histories(), configs, st.sampled_from(ZONES))
def test_kept_set_is_exactly_section_4(
    backups: list[BackupRef], cfg: RetentionConfig, zone: str
) -> None:
    plan = plan_retention(backups, cfg, zone)
    got = {d.backup.id: list(d.reasons) for d in plan.decisions if d.keep}
    assert got == oracle(backups, cfg, zone)
    assert len(plan.decisions) == len(backups)


@settings(max_examples=150, deadline=None)
@given(histories(), configs, st.sampled_from(ZONES))
def test_pruning_twice_equals_pruning_once(
    backups: list[BackupRef], cfg: RetentionConfig, zone: str
) -> None:
    first = plan_retention(backups, cfg, zone)
    second = plan_retention(first.kept, cfg, zone)
    assert [d.backup.id for d in second.decisions if not d.keep] == []
    assert {d.backup.id: d.reasons for d in second.decisions} == {
        d.backup.id: d.reasons for d in first.decisions if d.keep
    }


@settings(max_examples=150, deadline=None)
@given(histories(), configs, st.sampled_from(ZONES), st.randoms(use_true_random=False))
def test_newest_kept_and_order_irrelevant(
    backups: list[BackupRef], cfg: RetentionConfig, zone: str, rnd: object
) -> None:
    plan = plan_retention(backups, cfg, zone)
    for (kind, db), good in _series(backups).items():
        # the newest backup holding each database is kept, whatever else it holds
        newest = max(good, key=_key)
        assert plan.by_id[newest.id].keep
        assert any(r.startswith("newest") for r in plan.by_id[newest.id].reasons)
        # never more than one backup per kept period, plus the newest
        kept = [b for b in plan.kept if b.kind == kind and db in b.databases]
        assert len(kept) <= 2 * (cfg.daily + cfg.weekly + cfg.monthly + 1)
    shuffled = list(backups)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan_retention(shuffled, cfg, zone) == plan
    # unsuccessful backups are never kept
    assert all(b.successful for b in plan.kept)


@settings(max_examples=100, deadline=None)
@given(histories(), st.sampled_from(ZONES))
def test_zero_and_absent_counts_keep_only_the_newest(backups: list[BackupRef], zone: str) -> None:
    for cfg in (RetentionConfig(), RetentionConfig(daily=0, weekly=0, monthly=0)):
        plan = plan_retention(backups, cfg, zone)
        expected = {max(good, key=_key).id for good in _series(backups).values()}
        assert {b.id for b in plan.kept} == expected
        assert all(
            len(d.reasons) == 1 and d.reasons[0].startswith("newest")
            for d in plan.decisions
            if d.keep
        )


@settings(max_examples=100, deadline=None)
@given(histories(), configs, configs, st.sampled_from(ZONES))
def test_larger_counts_never_delete_more(
    backups: list[BackupRef], a: RetentionConfig, b: RetentionConfig, zone: str
) -> None:
    small = RetentionConfig(
        daily=min(a.daily, b.daily),
        weekly=min(a.weekly, b.weekly),
        monthly=min(a.monthly, b.monthly),
    )
    large = RetentionConfig(
        daily=max(a.daily, b.daily),
        weekly=max(a.weekly, b.weekly),
        monthly=max(a.monthly, b.monthly),
    )
    kept_small = {x.id for x in plan_retention(backups, small, zone).kept}
    kept_large = {x.id for x in plan_retention(backups, large, zone).kept}
    assert kept_small <= kept_large


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(1, 40), st.sampled_from(ZONES))
def test_daily_covers_the_last_n_days_that_have_a_backup(
    backups: list[BackupRef], n: int, zone: str
) -> None:
    tz = ZoneInfo(zone)
    plan = plan_retention(backups, RetentionConfig(daily=n), zone)
    for (kind, db), good in _series(backups).items():
        days = sorted({b.started_at.astimezone(tz).date() for b in good}, reverse=True)[:n]
        kept_days = [
            b.started_at.astimezone(tz).date()
            for b in plan.kept
            if b.kind == kind
            and db in b.databases
            and any(
                r.startswith("daily ") and ("(" not in r or f"({db})" in r)
                for r in plan.reasons(b.id)
            )
        ]
        assert sorted(kept_days, reverse=True) == days


@st.composite
def nightly_years(draw: st.DrawFn) -> list[BackupRef]:
    """A nightly schedule over one to four years in the policy's zone: jitter, missed
    nights, extra manual backups, and the DST changes every year brings."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    days = draw(st.integers(365, 4 * 365))
    rnd = random.Random(draw(st.integers(0, 2**32)))  # small draws: a seed, not the data
    first = datetime(2022, 1, 1, 2, 0, tzinfo=zone)
    out: list[BackupRef] = []
    seen: set[str] = set()
    for day in range(days):
        if rnd.random() < 0.05:
            continue  # the scheduler was down that night
        local = (first + timedelta(days=day)).replace(minute=rnd.randrange(0, 40))
        moments = [local.astimezone(UTC)]
        if rnd.random() < 0.03:  # a manual backup the same day
            moments.append((local + timedelta(hours=rnd.randrange(1, 20))).astimezone(UTC))
        for moment in moments:
            backup_id = f"{moment:%Y%m%dT%H%M%SZ}-logical"
            if backup_id not in seen:  # a manual backup at the next night's minute: one id
                seen.add(backup_id)
                out.append(BackupRef(backup_id, "logical", moment))
    return out


@settings(max_examples=10, deadline=None)
@given(nightly_years(), configs, st.sampled_from(ZONES))
def test_years_of_nightly_backups(
    backups: list[BackupRef], cfg: RetentionConfig, zone: str
) -> None:
    plan = plan_retention(backups, cfg, zone)
    got = {d.backup.id: list(d.reasons) for d in plan.decisions if d.keep}
    assert got == oracle(backups, cfg, zone)
    again = plan_retention(plan.kept, cfg, zone)
    assert again.deleted == [] and len(again.kept) == len(plan.kept)
