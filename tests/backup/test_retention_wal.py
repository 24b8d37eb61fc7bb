"""``retention.wal``: WAL for point-in-time recovery over the last DURATION only, kept
separately from the base backups (issue 25, item 4), over 70 simulated days.

Each simulated day archives WAL and takes a base backup into a real ``file://``
repository (manifests and segments stored as objects), then prunes as the scheduler
would that day.  After every prune the repository must hold:

* every segment from the start of the base backup point-in-time recovery starts from
  (the newest kept one consistent at least DURATION before the newest) to the end of
  the archive: the promised window, unbroken;
* the start..stop segments of every other kept base backup: each still restores to its
  consistent point;
* every history file;
* and no other WAL: what the duration lets go is gone.

Days are simulated by the ``now`` prune is given (the harness of tests/backup/test_prune.py);
the objects are real files.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit.backup.prune import PruneResult, prune
from drkit.backup.retention import BackupRef, plan_retention, plan_wal
from drkit.catalog import Manifest, list_backups, make_backup_id, write_manifest
from drkit.config import RetentionConfig, load_policy
from drkit.errors import CheckFailed
from drkit.lsn import format_lsn
from drkit.restore.plan import plan_recovery
from drkit.restore.window import CatalogView
from drkit.storage import Repository
from drkit.wal import Segment
from tests.fix_cli import DrkitRunner
from tests.prune_support import write_prune_policy

DAY0 = datetime(2026, 9, 1, 3, 0, tzinfo=UTC)
DAYS = 70
PER_DAY = 4  # segments archived per day; the day's base backup spans the 2nd and 3rd
KEEP_FOR = timedelta(days=14)
SIZE = 1024 * 1024  # 1 MiB segments: verify reads whole ones


def seg(position: int, timeline: int = 1) -> str:
    return Segment(position, timeline).name(SIZE)


#: when each of a day's segments is archived: the base backup at 03:00 starts in the
#: 2nd and is consistent at 03:01 in the 3rd
ARCHIVED_AT = (timedelta(minutes=30), timedelta(hours=3), timedelta(hours=3, minutes=2))


def archive_day(repo: Repository, day: int, root: Path) -> None:
    for k in range(1, PER_DAY + 1):
        name = seg(PER_DAY * day + k)
        repo.backend.put_bytes(f"prod/wal/{name}", b"\0" * SIZE)
        at = DAY0 - timedelta(hours=3) + timedelta(days=day)
        at += ARCHIVED_AT[k - 1] if k <= len(ARCHIVED_AT) else timedelta(hours=20)
        os.utime(root / "prod" / "wal" / name, (at.timestamp(), at.timestamp()))


def base_backup(repo: Repository, day: int) -> str:
    started = DAY0 + timedelta(days=day)
    backup_id = make_backup_id(started, "physical")
    obj = repo.store(f"backups/{backup_id}/base.tar", io.BytesIO(b"base" * 100))
    write_manifest(
        repo,
        Manifest(
            id=backup_id,
            kind="physical",
            environment="prod",
            databases=["app"],
            server_version="16.4",
            started_at=started,
            finished_at=started + timedelta(minutes=2),
            consistent_at=started + timedelta(minutes=1),
            objects=[obj],
            wal_start=format_lsn((PER_DAY * day + 2) * SIZE + 0x28),
            wal_stop=format_lsn((PER_DAY * day + 3) * SIZE + 0x100),
            wal_start_segment=seg(PER_DAY * day + 2),
            wal_stop_segment=seg(PER_DAY * day + 3),
            timeline=1,
            extra={"wal_segment_size": SIZE},
        ),
    )
    return backup_id


def wal_left(root: Path) -> set[str]:
    return {p.name for p in (root / "prod" / "wal").iterdir()}


def check_repository(root: Path, repo: Repository, result: PruneResult, last_day: int) -> None:
    """The repository after one day's prune holds exactly the WAL the promise needs."""
    kept = {m.id: m for m in list_backups(repo)}
    assert set(kept) == {b.id for b in result.plan.kept}
    newest = max(kept.values(), key=lambda m: m.restorable_at)
    anchor = result.wal_plan.anchor
    assert anchor is not None
    # point-in-time recovery reaches back the whole duration, from the newest kept base
    # backup that is old enough (the oldest kept one while none is)
    old_enough = [m for m in kept.values() if m.restorable_at <= newest.restorable_at - KEEP_FOR]
    expected = (
        max(old_enough, key=lambda m: m.restorable_at)
        if old_enough
        else min(kept.values(), key=lambda m: m.restorable_at)
    )
    assert anchor.id == expected.id
    if old_enough:
        assert result.wal_plan.pitr_from is not None
        assert result.wal_plan.pitr_from <= newest.restorable_at - KEEP_FOR
    start = PER_DAY * ((expected.started_at - DAY0).days) + 2
    needed = {seg(p) for p in range(start, PER_DAY * last_day + PER_DAY + 1)}
    for m in kept.values():
        if m.restorable_at < expected.restorable_at:
            day = (m.started_at - DAY0).days
            needed |= {seg(PER_DAY * day + 2), seg(PER_DAY * day + 3)}
            assert result.wal_scope(m.id) == "consistent point only"
        else:
            assert result.wal_scope(m.id) == "point-in-time"
    assert wal_left(root) == needed | {"00000002.history"}


def test_seventy_days_of_base_backups_with_wal_retention(
    tmp_path: Path, run_drkit: DrkitRunner
) -> None:
    root = tmp_path / "repo"
    policy_dir = write_prune_policy(
        tmp_path, {"wal_archiving": True}, daily=7, weekly=4, monthly=3, wal="14d"
    )
    policy = load_policy("prod", policy_dir)
    repo = Repository.for_policy(policy)
    repo.backend.put_bytes("prod/wal/00000002.history", b"1\t0/5000000\tno recovery target\n")
    most = 0
    for day in range(DAYS):
        archive_day(repo, day, root)
        base_backup(repo, day)
        result = prune(repo, policy, now=DAY0 + timedelta(days=day, hours=1))
        check_repository(root, repo, result, day)
        most = max(most, len(wal_left(root)))
    # without retention.wal the same history holds 163 WAL files (from the oldest
    # monthly backup on); the 14-day window and the consistent points need at most:
    assert most <= 90
    last = prune(repo, policy, now=DAY0 + timedelta(days=DAYS, hours=1), dry_run=True)
    assert last.wal_deleted == []  # idempotent: the day's prune left nothing to delete
    consistent_only = [b.id for b in last.wal_plan.consistent_only]
    assert consistent_only  # the monthly and the older weekly backups

    # recovery never claims a point the WAL no longer reaches: a time after a base
    # backup left at its consistent point is refused (exit 3), not recovered short
    trimmed = next(m for m in list_backups(repo) if m.id == consistent_only[0])
    with pytest.raises(CheckFailed, match="after the last WAL reachable without a gap"):
        plan_recovery(repo, trimmed.restorable_at + timedelta(hours=6))
    assert last.wal_plan.pitr_from is not None
    inside = plan_recovery(repo, last.wal_plan.pitr_from + timedelta(hours=6))
    assert inside.manifest.id == last.wal_plan.anchor.id  # type: ignore[union-attr]
    window = CatalogView(policy, repo).window  # what drkit status shows
    assert window.continuous_from is not None
    assert window.continuous_from >= last.wal_plan.pitr_from

    # the dry run says it, in text and in JSON
    dry = run_drkit("prune", "prod", "--dry-run", "--json", policy_dir=policy_dir)
    assert dry.code == 0, dry.stderr
    wal = dry.json()["wal"]
    assert wal["retention"] == "14d"
    assert wal["pitr_from_backup"] == last.wal_plan.anchor.id  # type: ignore[union-attr]
    assert wal["consistent_only"] == consistent_only
    rows = {b["id"]: b for b in dry.json()["backups"]}
    assert all(rows[i]["wal"] == "consistent point only" for i in consistent_only)
    text = run_drkit(
        "prune", "prod", "--dry-run", policy_dir=policy_dir, env={"COLUMNS": "250"}, check=True
    ).stdout
    assert f"from backup {wal['pitr_from_backup']}" in text and "(retention.wal 14d)" in text
    assert f"{len(consistent_only)} older kept base backup(s) keep only the WAL" in text
    assert f"{consistent_only[0]}" in text and "WAL: consistent point only" in text

    # verify reads each backup's start..stop and says which restore to that point only
    oldest = consistent_only[-1]
    verified = run_drkit("verify", "prod", oldest, "--json", policy_dir=policy_dir)
    assert verified.code == 0, verified.stdout + verified.stderr
    verdict = verified.json()["backups"][0]
    assert verdict["wal_chain"] == "complete"
    assert verdict["wal_scope"] == "consistent point only"
    assert "restores to its consistent point only" in verdict["wal_note"]
    assert verdict["recoverable_to"] == rows[oldest]["started_at"].replace("00:00Z", "01:00Z")
    anchor = run_drkit(
        "verify", "prod", wal["pitr_from_backup"], "--json", policy_dir=policy_dir
    ).json()["backups"][0]
    assert anchor["wal_scope"] == "point-in-time"


def physical_ref(day: int, stop: bool = True) -> BackupRef:
    when = DAY0 + timedelta(days=day)
    return BackupRef(
        make_backup_id(when, "physical"),
        "physical",
        when,
        consistent_at=when + timedelta(minutes=1),
        wal_start_segment=seg(PER_DAY * day + 2),
        wal_stop_segment=seg(PER_DAY * day + 3) if stop else None,
    )


def test_a_clock_ahead_never_shortens_the_window() -> None:
    refs = [physical_ref(day) for day in (0, 7, 14, 21)]
    plan = plan_retention(refs, RetentionConfig(daily=10), "UTC")
    ahead = plan_wal(plan, KEEP_FOR, DAY0 + timedelta(days=400))  # the host clock a year ahead
    on_time = plan_wal(plan, KEEP_FOR, DAY0 + timedelta(days=21, hours=1))
    assert ahead.anchor == on_time.anchor == refs[1]
    assert [b.id for b in ahead.consistent_only] == [refs[0].id]
    # a clock behind the newest backup: the window reaches back from the clock, further
    behind = plan_wal(plan, KEEP_FOR, DAY0 + timedelta(days=15))
    assert behind.anchor == refs[0] and behind.consistent_only == ()


def test_a_kept_backup_without_its_stop_segment_keeps_all_wal_from_its_start() -> None:
    refs = [physical_ref(0), physical_ref(7, stop=False), physical_ref(14), physical_ref(30)]
    plan = plan_retention(refs, RetentionConfig(daily=10), "UTC")
    wal = plan_wal(plan, KEEP_FOR, DAY0 + timedelta(days=31))
    assert wal.anchor == refs[1]  # not refs[2]: refs[1]'s consistent point is unknown
    assert [b.id for b in wal.consistent_only] == [refs[0].id]
    names = [seg(p) for p in range(0, PER_DAY * 31)]
    assert wal.select(names) == [seg(p) for p in range(0, PER_DAY * 7 + 2) if p not in (2, 3)]
