"""Continuous archiving, base backups and point-in-time recovery, end to end.

A real cluster archives through ``drkit wal-push`` (run by PostgreSQL as its own OS
user), ``drkit backup --physical`` takes a base backup, marker rows are committed at
known times, and ``drkit restore --point-in-time`` recovers new clusters whose rows are
then counted.  Runs against ``file://`` and S3 (moto / MinIO).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drkit.lsn import parse_lsn
from drkit.wal import find_wal_key
from tests.fix_cli import DrkitRunner
from tests.fix_pg import pg_versions
from tests.fix_s3 import S3Server
from tests.wal_support import (
    Archived,
    add_marker,
    archived_cluster,
    backup_with_markers,
    file_repo_block,
    has_wal,
    markers,
    pitr,
    repo_of,
    restored_dsn,
    server_now,
    shared_dir,
)

pytestmark = pytest.mark.slow


@pytest.fixture(params=["file", "s3"])
def archived(request: pytest.FixtureRequest, pg_major: int | None) -> Iterator[Archived]:
    with shared_dir() as root:
        if request.param == "file":
            block = file_repo_block(root)
        else:
            s3: S3Server = request.getfixturevalue("s3_server")
            bucket = s3.create_bucket()
            block = {"url": f"s3://{bucket}/drkit", "endpoint_url": s3.endpoint}
            block["region"] = "us-east-1"
        with archived_cluster(root, block, major=pg_major) as arch:
            yield arch


@pg_versions()
def test_archive_backup_and_point_in_time_recovery(
    archived: Archived, run_cli: DrkitRunner
) -> None:
    arch = archived
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    arch.execute("INSERT INTO marker (label) SELECT 'filler' FROM generate_series(1, 20000)")
    arch.execute("DELETE FROM marker")

    backup = run_cli("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    manifest = backup.json()
    assert manifest["kind"] == "physical"
    assert manifest["wal_start"] and manifest["wal_stop"] and manifest["timeline"] == 1
    repo = repo_of(arch)
    # the manifest exists only once the stop segment is archived
    from drkit.catalog import read_manifest

    full = read_manifest(repo, manifest["id"])
    assert find_wal_key(repo, str(full.wal_stop_segment)) is not None
    assert "START WAL LOCATION" in str(full.backup_label)

    time.sleep(1.1)
    add_marker(arch, "m1")
    time.sleep(1.1)
    between = server_now(arch)
    time.sleep(1.1)
    add_marker(arch, "m2")
    time.sleep(1.1)
    add_marker(arch, "m3")
    arch.switch_and_wait(has_wal(arch))

    verify = run_cli("verify", arch.env, manifest["id"], "--json", policy_dir=arch.policy_dir)
    assert verify.code == 0, verify.stderr + verify.stdout
    assert verify.json()["backups"][0]["wal_chain"] == "complete"

    # -- latest: every marker (this cluster is promoted onto timeline 2, archiving off)
    _, result = pitr(run_cli, arch, "latest")
    assert result.code == 0, result.stderr
    latest = result.json()
    assert latest["timeline"] == 2 and latest["followed_timeline"] == 1
    assert markers(restored_dsn(arch, latest["port"]), arch) == ["m1", "m2", "m3"]

    # -- to a time between m1 and m2: exactly m1; --archive-mode preserve makes it the new
    #    primary, archiving its timeline (2 again: the first copy archived nothing) and
    #    recording it as production's
    _, result = pitr(run_cli, arch, between.isoformat(), "--archive-mode", "preserve")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["backup_id"] == manifest["id"]
    assert report["state"] == "promoted" and report["archive_mode"] == "preserve"
    assert report["timeline"] == 2
    wait_for(lambda: find_wal_key(repo, "00000002.history") is not None)
    reached = datetime.fromisoformat(report["reached_at"].replace("Z", "+00:00"))
    assert reached <= between
    dsn_t3 = restored_dsn(arch, report["port"])
    assert markers(dsn_t3, arch) == ["m1"]

    # -- write on timeline 2, then recover from the timeline-1 base backup across the switch
    add_marker(arch, "t3-m4", dsn_t3)
    arch.switch_and_wait(has_wal(arch), dsn_t3)
    assert repo.get_json("timeline.json")["timeline"] == 2
    time.sleep(1.1)
    after_m4 = server_now(arch, dsn_t3)
    time.sleep(1.1)
    add_marker(arch, "t3-m5", dsn_t3)
    arch.switch_and_wait(has_wal(arch), dsn_t3)
    _, result = pitr(run_cli, arch, after_m4.isoformat())
    assert result.code == 0, (
        result.stderr + "\n" + "\n".join(f"{i.key} {i.modified}" for i in repo.list("wal/"))
    )
    crossed = result.json()
    assert crossed["backup_id"] == manifest["id"]  # the timeline-1 base backup
    assert markers(restored_dsn(arch, crossed["port"]), arch) == ["m1", "t3-m4"]

    # -- a base backup of the new primary (timeline 2); `latest` now starts from it
    policy3 = arch.write_policy(dsn_t3, arch.root / "policies-t3")
    backup3 = run_cli("backup", arch.env, "--physical", "--json", policy_dir=policy3)
    assert backup3.code == 0, backup3.stderr
    assert backup3.json()["timeline"] == 2
    add_marker(arch, "t3-m6", dsn_t3)
    arch.switch_and_wait(has_wal(arch), dsn_t3)
    _, result = pitr(run_cli, arch, "latest")
    assert result.code == 0, result.stderr
    assert result.json()["backup_id"] == backup3.json()["id"]
    assert markers(restored_dsn(arch, result.json()["port"]), arch) == [
        "m1",
        "t3-m4",
        "t3-m5",
        "t3-m6",
    ]


def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_unreachable_targets_and_guards(archived: Archived, run_cli: DrkitRunner) -> None:
    arch = archived
    before_backup = server_now(arch) - timedelta(seconds=5)
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    backup = run_cli("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    add_marker(arch, "m1")
    time.sleep(1.1)
    mid = server_now(arch)
    time.sleep(1.1)
    add_marker(arch, "m2")
    arch.switch_and_wait(has_wal(arch))

    # --target-action pause: recovery stops at the target, read-only, not promoted
    _, result = pitr(run_cli, arch, mid.isoformat(), "--target-action", "pause")
    assert result.code == 0, result.stderr
    paused = result.json()
    assert paused["state"] == "paused"
    paused_dsn = restored_dsn(arch, paused["port"])
    assert markers(paused_dsn, arch) == ["m1"]
    assert arch.execute("SELECT pg_is_in_recovery()", paused_dsn)[0][0] is True

    # before the oldest backup: exit 3, naming the window, nothing written
    pgdata, result = pitr(run_cli, arch, before_backup.isoformat())
    assert result.code == 3, result.stderr
    assert "reachable window" in result.stderr
    assert not pgdata.exists() or not any(pgdata.iterdir())

    # after the last archived WAL: exit 3
    future = (server_now(arch) + timedelta(hours=1)).isoformat()
    pgdata, result = pitr(run_cli, arch, future)
    assert result.code == 3, result.stderr
    assert "reachable window" in result.stderr

    # a naive timestamp is a usage error
    pgdata, result = pitr(run_cli, arch, "2026-11-27T10:15:00")
    assert result.code == 2, result.stderr

    # a non-empty data directory is refused
    pgdata = arch.new_pgdata()
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("15\n")
    result = run_cli(
        "restore",
        arch.env,
        "--point-in-time",
        "latest",
        "--pgdata",
        str(pgdata),
        policy_dir=arch.policy_dir,
    )
    assert result.code == 4, result.stderr
    assert (pgdata / "PG_VERSION").read_text() == "15\n"

    # --no-start prepares the directory for recovery and leaves it stopped
    pgdata, result = pitr(run_cli, arch, "latest", "--no-start")
    assert result.code == 0, result.stderr
    assert result.json()["started"] is False
    assert (pgdata / "recovery.signal").exists()
    conf = (pgdata / "postgresql.auto.conf").read_text()
    assert "drkit.wal fetch prod %f %p" in conf
    assert not (pgdata / "postmaster.pid").exists()

    # a WAL gap inside the backup's range: verify names it and exits 3
    from drkit.catalog import list_backups

    repo = repo_of(arch)
    kept = list_backups(repo, "physical")[-1]
    key = find_wal_key(repo, str(kept.wal_start_segment))
    assert key is not None
    repo.backend.delete(key)
    verify = run_cli("verify", arch.env, kept.id, policy_dir=arch.policy_dir)
    assert verify.code == 3, verify.stdout + verify.stderr
    assert str(kept.wal_start_segment) in verify.stdout + verify.stderr
    assert "recovery_target_timeline = '1'" in conf  # production's, never 'latest'
    assert not (pgdata / "postmaster.pid").exists()


def test_recovery_settings_are_rewritten_not_stacked(tmp_path: Path) -> None:
    """A second write (a drill restarting recovery past its pause, or a base backup of a
    recovered cluster) leaves one drkit block and no earlier recovery target."""
    from drkit.restore.recovery_conf import write_recovery_config

    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("# Do not edit this file manually!\nwork_mem = '8MB'\n")
    common: dict[str, Any] = {
        "restore_command": "fetch %f %p",
        "action": "promote",
        "port": 5433,
        "socket_dir": tmp_path,
        "archive": False,
    }
    write_recovery_config(
        tmp_path, target=None, pause_at="drkit 20261127T020000Z-physical", **common
    )
    target = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    write_recovery_config(tmp_path, target=target, **common)
    text = auto.read_text()
    assert text.count("# drkit point-in-time recovery") == 1
    assert text.count("port = 5433") == 1 and text.count("archive_mode = off") == 1
    assert "recovery_target_name" not in text and "recovery_target_time" in text
    assert text.startswith("# Do not edit this file manually!\nwork_mem = '8MB'\n")
    assert (tmp_path / "recovery.signal").exists()


# -- isolation of restored clusters, production's timeline, an honest `latest` ----------


@pytest.fixture
def file_archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


def wal_names(arch: Archived) -> set[str]:
    from drkit.backup.walchain import wal_name_of

    return {wal_name_of(i.key) for i in repo_of(arch).list("wal/")}


def test_restored_cluster_never_archives_into_the_source(
    file_archived: Archived, run_cli: DrkitRunner
) -> None:
    arch = file_archived
    backup_with_markers(arch, run_cli, "m1")
    pgdata, result = pitr(run_cli, arch, "latest")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "promoted" and report["timeline"] == 2
    assert report["archive_mode"] == "off"
    copy_dsn = restored_dsn(arch, report["port"])
    assert arch.execute("SHOW archive_mode", copy_dsn)[0][0] == "off"
    assert (pgdata / "drkit-restored.json").exists()
    # the copy writes and closes segments on its timeline 2 ...
    add_marker(arch, "copy-only", copy_dsn)
    arch.execute("CHECKPOINT", copy_dsn)
    arch.execute("SELECT pg_switch_wal()", copy_dsn)
    # ... while production goes on archiving (a point after which the copy's would be in)
    add_marker(arch, "m2")
    arch.switch_and_wait(has_wal(arch))
    assert not [n for n in wal_names(arch) if n.startswith("00000002")]
    assert repo_of(arch).get_json("timeline.json")["timeline"] == 1


def test_latest_follows_production_not_a_restored_copy(
    file_archived: Archived, run_cli: DrkitRunner
) -> None:
    """The attack of issue 11: a restored copy pushed its timeline-2 WAL into production's
    repository; a later `latest` must still follow production's timeline 1 and hold the
    rows production committed after the copy was made."""
    arch = file_archived
    backup_with_markers(arch, run_cli, "m1")
    copy, result = pitr(run_cli, arch, "latest")
    assert result.code == 0, result.stderr
    copy_dsn = restored_dsn(arch, result.json()["port"])
    add_marker(arch, "copy-only", copy_dsn)
    current = arch.execute("SELECT pg_walfile_name(pg_current_wal_lsn())", copy_dsn)[0][0]
    arch.execute("SELECT pg_switch_wal()", copy_dsn)
    # the copy's history file and closed timeline-2 segments, pushed from its data directory
    pushed = sorted(
        p
        for p in (copy / "pg_wal").iterdir()
        if p.name.startswith("00000002") and p.name < current and p.is_file()
    )
    assert any(p.name == "00000002.history" for p in pushed)
    for path in pushed:
        push = run_cli("wal-push", arch.env, str(path), policy_dir=arch.policy_dir)
        assert push.code == 0, push.stderr
    assert "00000002.history" in wal_names(arch)
    # the restore marker kept the copy's timeline from being recorded as production's
    assert repo_of(arch).get_json("timeline.json")["timeline"] == 1

    add_marker(arch, "m2")  # production, after the copy
    arch.switch_and_wait(has_wal(arch))
    _, result = pitr(run_cli, arch, "latest")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["followed_timeline"] == 1 and report["timeline_source"] == "recorded"
    assert report["production_timeline"] == 1 and 2 in report["other_timelines"]
    assert markers(restored_dsn(arch, report["port"]), arch) == ["m1", "m2"]

    # --timeline picks explicitly
    pgdata, result = pitr(run_cli, arch, "latest", "--timeline", "latest", "--no-start")
    assert result.code == 0, result.stderr
    assert result.json()["followed_timeline"] == 2
    assert "recovery_target_timeline = '2'" in (pgdata / "postgresql.auto.conf").read_text()
    _, result = pitr(run_cli, arch, "latest", "--timeline", "nine", "--no-start")
    assert result.code == 2, result.stderr

    # promote-timeline records explicitly; an unknown timeline is refused
    promoted = run_cli("promote-timeline", arch.env, "2", "--json", policy_dir=arch.policy_dir)
    assert promoted.code == 0, promoted.stderr
    assert promoted.json()["timeline"] == 2 and promoted.json()["previous"] == 1
    pgdata, result = pitr(run_cli, arch, "latest", "--no-start")
    assert result.code == 0, result.stderr
    assert result.json()["followed_timeline"] == 2
    bad = run_cli("promote-timeline", arch.env, "7", policy_dir=arch.policy_dir)
    assert bad.code == 3, bad.stderr
    assert "00000007.history" in bad.stderr
    back = run_cli("promote-timeline", arch.env, "--json", policy_dir=arch.policy_dir)
    assert back.code == 0, back.stderr
    assert back.json()["timeline"] == 1
    assert repo_of(arch).get_json("timeline.json")["timeline"] == 1


def test_latest_honours_the_target_action(file_archived: Archived, run_cli: DrkitRunner) -> None:
    arch = file_archived
    backup_with_markers(arch, run_cli, "m1", "m2")
    _, result = pitr(run_cli, arch, "latest", "--target-action", "pause")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "paused" and report["action"] == "pause"
    dsn = restored_dsn(arch, report["port"])
    assert arch.execute("SELECT pg_is_in_recovery()", dsn)[0][0] is True
    assert markers(dsn, arch) == ["m1", "m2"]

    pgdata, result = pitr(run_cli, arch, "latest", "--target-action", "shutdown")
    assert result.code == 0, result.stderr
    assert result.json()["state"] == "shut down"
    assert not (pgdata / "postmaster.pid").exists()


def test_latest_refuses_a_gap_unless_allowed(file_archived: Archived, run_cli: DrkitRunner) -> None:
    arch = file_archived
    first, gap, third = backup_with_markers(arch, run_cli, "m1", "m2", "m3")
    after_m3 = server_now(arch)
    repo = repo_of(arch)
    key = find_wal_key(repo, gap)
    assert key is not None
    repo.backend.delete(key)

    pgdata, result = pitr(run_cli, arch, "latest")
    assert result.code == 3, result.stderr
    assert gap in result.stderr and first in result.stderr and "--allow-gap" in result.stderr
    assert not pgdata.exists() or not any(pgdata.iterdir())

    # a time target past the gap: exit 3 with the unbroken window, which ends before it
    pgdata, result = pitr(run_cli, arch, after_m3.isoformat())
    assert result.code == 3, result.stderr
    assert f"WAL segment {gap} is missing" in result.stderr
    end = result.stderr.split(" .. ", 1)[1].split(" ", 1)[0]
    m2_at = datetime.fromisoformat(end.replace("Z", "+00:00"))
    assert m2_at < after_m3

    _, result = pitr(run_cli, arch, "latest", "--allow-gap")
    assert result.code == 0, result.stderr
    report = result.json()
    # what was left out: the segments past the gap, up to the newest point archived
    left_out = report["stopped_at_gap"]
    assert left_out["first_missing"] == gap and left_out["last_segment"] == first
    assert left_out["segments_beyond_gap"] == 1 and left_out["newest_segment"] == third
    newest = datetime.fromisoformat(left_out["newest_archived_at"].replace("Z", "+00:00"))
    assert newest > datetime.fromisoformat(left_out["end"].replace("Z", "+00:00"))
    assert markers(restored_dsn(arch, report["port"]), arch) == ["m1"]
    # replay reached the last record before the gap, read from the recovered server
    assert parse_lsn(report["lsn"]) >= parse_lsn(report["end_lsn"])
