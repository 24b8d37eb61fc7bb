"""Worked examples of grandfather-father-son retention: the seed plan's numbers, local days, DST, ISO weeks, WAL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from drkit.backup.retention import (
    BackupRef,
    lsn_to_segment,
    orphan_expired,
    plan_retention,
    wal_cutoff,
    wal_to_delete,
)
from drkit.config import RetentionConfig

ROME = ZoneInfo("Europe/Rome")


def ref(when: datetime, kind: str = "logical", ok: bool = True, **kw: object) -> BackupRef:
    when = when.astimezone(UTC)
    return BackupRef(f"{when:%Y%m%dT%H%M%SZ}-{kind}", kind, when, successful=ok, **kw)  # type: ignore[arg-type]


def daily_at_two(first: date, last: date) -> list[BackupRef]:
    out = []
    day = first
    while day <= last:
        out.append(ref(datetime(day.year, day.month, day.day, 2, 0, tzinfo=ROME)))
        day += timedelta(days=1)
    return out


def local_day(b: BackupRef) -> date:
    return b.started_at.astimezone(ROME).date()


def test_prod_seed_plan_two_years_of_daily_backups() -> None:
    backups = daily_at_two(date(2024, 11, 28), date(2026, 11, 27))  # ends on a Friday
    plan = plan_retention(backups, RetentionConfig(daily=30, weekly=8, monthly=6), "Europe/Rome")
    kept = sorted(local_day(b) for b in plan.kept)
    daily = [date(2026, 10, 29) + timedelta(days=i) for i in range(30)]
    weekly_outside = [date(2026, 10, 11), date(2026, 10, 18), date(2026, 10, 25)]  # Sundays
    monthly_outside = [date(2026, 6, 30), date(2026, 7, 31), date(2026, 8, 31), date(2026, 9, 30)]
    assert kept == sorted(daily + weekly_outside + monthly_outside)
    newest = plan.decisions[0]
    assert local_day(newest.backup) == date(2026, 11, 27)
    assert newest.reasons == ("daily 2026-11-27", "weekly 2026-W48", "monthly 2026-11", "newest")
    sunday = next(d for d in plan.decisions if local_day(d.backup) == date(2026, 11, 22))
    assert sunday.reasons == ("daily 2026-11-22", "weekly 2026-W47")
    assert plan.by_id[ref(datetime(2026, 10, 31, 2, tzinfo=ROME)).id].reasons == (
        "daily 2026-10-31",
        "monthly 2026-10",
    )
    assert plan.oldest_restorable() == datetime(2026, 6, 30, 2, tzinfo=ROME)


def test_staging_keeps_exactly_seven_not_one_more() -> None:
    backups = daily_at_two(date(2026, 11, 1), date(2026, 11, 27))
    plan = plan_retention(backups, RetentionConfig(daily=7), "Europe/Rome")
    assert sorted(local_day(b) for b in plan.kept) == [
        date(2026, 11, 21) + timedelta(days=i) for i in range(7)
    ]


def test_days_are_counted_only_when_they_have_a_backup() -> None:
    # a scheduler that was down for a month does not lose the history
    backups = daily_at_two(date(2026, 9, 1), date(2026, 9, 10)) + daily_at_two(
        date(2026, 11, 27), date(2026, 11, 27)
    )
    plan = plan_retention(backups, RetentionConfig(daily=3), "Europe/Rome")
    assert sorted(local_day(b) for b in plan.kept) == [
        date(2026, 9, 9),
        date(2026, 9, 10),
        date(2026, 11, 27),
    ]


def test_days_are_the_policy_timezone_days() -> None:
    late = ref(datetime(2026, 11, 26, 22, 30, tzinfo=UTC))  # 23:30 in Rome, 26th
    after_midnight = ref(datetime(2026, 11, 26, 23, 30, tzinfo=UTC))  # 00:30 in Rome, 27th
    plan = plan_retention([late, after_midnight], RetentionConfig(daily=2), "Europe/Rome")
    assert plan.reasons(late.id) == ("daily 2026-11-26",)
    assert plan.reasons(after_midnight.id) == ("daily 2026-11-27", "newest")
    in_utc = plan_retention([late, after_midnight], RetentionConfig(daily=1), "UTC")
    assert [b.id for b in in_utc.kept] == [after_midnight.id]


def test_dst_fall_back_hour_counts_once() -> None:
    # 2026-10-25: Rome goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice
    first = ref(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))
    second = ref(datetime(2026, 10, 25, 1, 30, tzinfo=UTC))
    day_before = ref(datetime(2026, 10, 24, 0, 30, tzinfo=UTC))
    plan = plan_retention([first, second, day_before], RetentionConfig(daily=2), ROME)
    assert plan.by_id[first.id].action == "DELETE"
    assert plan.reasons(second.id) == ("daily 2026-10-25", "newest")
    assert plan.reasons(day_before.id) == ("daily 2026-10-24",)


def test_iso_week_across_new_year() -> None:
    friday = ref(datetime(2027, 1, 1, 2, tzinfo=ROME))
    thursday = ref(datetime(2026, 12, 31, 2, tzinfo=ROME))
    plan = plan_retention([friday, thursday], RetentionConfig(weekly=2, monthly=2), ROME)
    assert plan.reasons(friday.id) == ("weekly 2026-W53", "monthly 2027-01", "newest")
    assert plan.reasons(thursday.id) == ("monthly 2026-12",)


def test_clock_jumping_back_newest_is_by_start_time() -> None:
    # the listing order (ids, arrival) does not matter: only started_at does
    a = BackupRef("b-listed-last", "logical", datetime(2026, 11, 27, 1, tzinfo=UTC))
    b = BackupRef("a-listed-first", "logical", datetime(2026, 11, 27, 3, tzinfo=UTC))
    plan = plan_retention([a, b], RetentionConfig(), "UTC")
    assert [x.id for x in plan.kept] == ["a-listed-first"]


def test_failed_backups_never_kept_and_newest_successful_survives() -> None:
    good = ref(datetime(2026, 11, 25, 2, tzinfo=ROME))
    bad = ref(datetime(2026, 11, 27, 2, tzinfo=ROME), ok=False)
    plan = plan_retention([good, bad], RetentionConfig(daily=5), ROME)
    assert plan.reasons(good.id) == ("daily 2026-11-25", "newest")
    assert plan.by_id[bad.id].action == "DELETE"
    assert plan.reasons(bad.id) == ("unsuccessful",)


def test_kinds_are_separate_series() -> None:
    logical = ref(datetime(2026, 11, 22, 2, tzinfo=ROME))
    physical = ref(datetime(2026, 11, 22, 3, tzinfo=ROME), kind="physical")
    plan = plan_retention([logical, physical], RetentionConfig(daily=1), ROME)
    assert {b.id for b in plan.kept} == {logical.id, physical.id}


def test_naive_start_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        BackupRef("x", "logical", datetime(2026, 11, 27))


def test_duplicate_ids_are_refused() -> None:
    b = ref(datetime(2026, 11, 27, tzinfo=UTC))
    with pytest.raises(ValueError, match="twice"):
        plan_retention([b, b], RetentionConfig(), "UTC")


def test_orphan_grace() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert orphan_expired(now - timedelta(hours=25), timedelta(hours=24), now)
    assert not orphan_expired(now - timedelta(hours=23), timedelta(hours=24), now)


def test_lsn_to_segment() -> None:
    assert lsn_to_segment("0/3000028", 1) == "000000010000000000000003"
    assert lsn_to_segment("1/A0000000", 2) == "0000000200000001000000A0"
    assert lsn_to_segment("0/FFFFFFFF", 1) == "0000000100000000000000FF"


def test_wal_older_than_oldest_kept_physical_is_deleted_and_needed_wal_never() -> None:
    old = ref(
        datetime(2026, 11, 1, 3, tzinfo=ROME),
        "physical",
        wal_start_segment="000000010000000000000003",
    )
    kept = ref(
        datetime(2026, 11, 22, 3, tzinfo=ROME),
        "physical",
        wal_start_segment="000000010000000000000010",
    )
    newest = ref(
        datetime(2026, 11, 27, 3, tzinfo=ROME),
        "physical",
        wal_start_segment="000000020000000000000020",
    )
    plan = plan_retention([old, kept, newest], RetentionConfig(daily=2), ROME)
    assert [b.id for b in plan.deleted] == [old.id]
    cutoff = wal_cutoff(plan)
    assert cutoff == "000000010000000000000010"
    names = [
        "prod/wal/000000010000000000000003.zst",
        "prod/wal/00000001000000000000000F",
        "prod/wal/00000001000000000000000F.00000028.backup",
        "prod/wal/000000010000000000000010.zst.age",
        "prod/wal/000000010000000000000011.partial",
        "prod/wal/00000002.history",
        "prod/wal/000000020000000000000020",
        "prod/wal/README",
    ]
    assert wal_to_delete(names, cutoff) == [
        "prod/wal/000000010000000000000003.zst",
        "prod/wal/00000001000000000000000F",
        "prod/wal/00000001000000000000000F.00000028.backup",
    ]


def test_no_kept_physical_backup_means_no_wal_is_deleted() -> None:
    logical = ref(datetime(2026, 11, 27, 2, tzinfo=ROME))
    plan = plan_retention([logical], RetentionConfig(daily=1), ROME)
    assert wal_cutoff(plan) is None
    assert wal_to_delete(["prod/wal/000000010000000000000001"], None) == []


def test_a_partial_backup_counts_only_for_the_databases_it_holds() -> None:
    """``drkit backup prod --database shop`` after the nightly full backup: the full one
    is still the newest backup holding ``main``, so no rule may delete it."""
    full = ref(datetime(2026, 11, 26, 2, tzinfo=ROME), databases=("main", "shop"))
    partial = ref(datetime(2026, 11, 27, 9, tzinfo=ROME), databases=("shop",))
    for cfg in (RetentionConfig(), RetentionConfig(daily=1)):
        plan = plan_retention([full, partial], cfg, "Europe/Rome")
        assert plan.by_id[full.id].keep, plan.by_id[full.id]
        assert "newest (main)" in plan.by_id[full.id].reasons
        assert plan.by_id[partial.id].reasons[-1] == "newest"
    # tiers are per database: a week of shop-only backups leaves main's own days alone
    shop_days = [
        ref(datetime(2026, 11, d, 12, tzinfo=ROME), databases=("shop",)) for d in range(20, 28)
    ]
    mains = [
        ref(datetime(2026, 11, d, 2, tzinfo=ROME), databases=("main", "shop")) for d in (17, 18, 19)
    ]
    plan = plan_retention(mains + shop_days, RetentionConfig(daily=2), "Europe/Rome")
    assert {b.id for b in plan.kept} == {
        mains[1].id,
        mains[2].id,
        shop_days[-2].id,
        shop_days[-1].id,
    }
    assert plan.by_id[mains[1].id].reasons == ("daily 2026-11-18 (main)",)
