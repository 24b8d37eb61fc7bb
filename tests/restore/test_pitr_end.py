"""Recovery that knows where it must end, and a verify that reads what it claims.

Attacks with ordinary faults on a real cluster archiving through ``drkit wal-push``:

* one flipped byte in a middle (compressed) segment after the base backup: PostgreSQL
  reads a failed ``wal-fetch`` as the end of the archive, so ``restore latest`` must
  exit 3 naming the segment and never promote; ``verify latest`` must read that
  segment and name it; the drill must FAIL;
* S3 answering 500 for one segment during replay: retried inside ``wal-fetch``; when
  it lasts, the restore exits 3 without promoting;
* a time target after the last commit but before the segment switch that archived it
  is inside the window and restores; the point reached is read from the recovered
  server, ``--target-action shutdown`` included;
* a ``compression: none`` repository copied with ``cp -r`` (no extended attributes)
  still verifies, and a flipped byte in the copy is found.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.pg import chown_tree, cluster_os_user
from drkit.storage import FileBackend, Repository
from drkit.wal import find_wal_key
from tests.fix_cli import DrkitRunner, checks_by_name, drill
from tests.fix_pg import assert_scratch_gone
from tests.fix_s3 import S3Server
from tests.reliability.faultproxy import Fault, FaultProxy
from tests.wal_support import (
    Archived,
    add_marker,
    archived_cluster,
    backup_with_markers,
    file_repo_block,
    markers,
    pitr,
    repo_of,
    restored_dsn,
    server_now,
    shared_dir,
)

pytestmark = pytest.mark.slow


def s3_block(s3: S3Server) -> dict[str, Any]:
    return {
        "url": f"s3://{s3.create_bucket()}/drkit",
        "endpoint_url": s3.endpoint,
        "region": "us-east-1",
    }


@pytest.fixture(params=["file", "s3"])
def archived(request: pytest.FixtureRequest) -> Iterator[Archived]:
    with shared_dir() as root:
        block = (
            file_repo_block(root)
            if request.param == "file"
            else s3_block(request.getfixturevalue("s3_server"))
        )
        with archived_cluster(root, block) as arch:
            yield arch


def flip_a_byte(repo: Repository, name: str) -> tuple[str, bytes]:
    """Damage WAL object ``name`` in place (bit rot); returns its key and good bytes."""
    key = find_wal_key(repo, name)
    assert key is not None, name
    good = repo.backend.get_bytes(key)
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01
    if isinstance(repo.backend, FileBackend):
        with open(repo.backend.root / key, "r+b") as f:  # same inode, same attributes
            f.write(bytes(damaged))
    else:
        repo.backend.put_bytes(key, bytes(damaged))
    return key, good


def put_back(repo: Repository, key: str, good: bytes) -> None:
    if isinstance(repo.backend, FileBackend):
        with open(repo.backend.root / key, "r+b") as f:
            f.write(good)
    else:
        repo.backend.put_bytes(key, good)


def assert_never_promoted(arch: Archived, pgdata: Path) -> None:
    """The recovered server is down, still in archive recovery, on no new timeline."""
    assert not (pgdata / "postmaster.pid").exists()
    assert not [p.name for p in (pgdata / "pg_wal").iterdir() if p.name.endswith(".history")]
    control = subprocess.run(
        [arch.cluster.bin("pg_controldata"), str(pgdata)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    state = next(ln for ln in control.splitlines() if ln.startswith("Database cluster state:"))
    assert state.split(":", 1)[1].strip() in ("in archive recovery", "shut down in recovery"), state


def test_a_flipped_byte_in_a_middle_segment_never_promotes(
    archived: Archived, run_drkit: DrkitRunner
) -> None:
    """On 8f47402: exit 0, "promoted", holding m1 only; verify said the chain is complete."""
    arch = archived
    segments = backup_with_markers(arch, run_drkit, "m1", "m2", "m3", "m4")
    repo = repo_of(arch)
    key, good = flip_a_byte(repo, segments[1])
    assert key.endswith(".zst")

    pgdata, result = pitr(run_drkit, arch, "latest", env={"DRKIT_WAL_FETCH_ATTEMPTS": "2"})
    assert result.code == 3, result.stderr
    assert segments[1] in result.stderr and "not promoted" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert_never_promoted(arch, pgdata)

    verified = run_drkit("verify", arch.env, "latest", "--json", policy_dir=arch.policy_dir)
    assert verified.code == 3, verified.stderr
    verdict = verified.json()["backups"][0]
    assert verdict["wal_chain"] == "damaged"
    assert any(segments[1] in p for p in verdict["problems"]), verdict
    # the window verify reports ends before the damaged segment
    assert verdict["last_wal"] == segments[0], verdict

    put_back(repo, key, good)
    ok = run_drkit("verify", arch.env, "latest", "--json", policy_dir=arch.policy_dir)
    assert ok.code == 0, ok.stdout + ok.stderr
    checked = ok.json()["backups"][0]["wal_checked"]
    assert checked["files"] >= 5 and checked["damaged"] == 0, checked
    _, result = pitr(run_drkit, arch, "latest")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "promoted"
    assert markers(restored_dsn(arch, report["port"]), arch) == ["m1", "m2", "m3", "m4"]


@pytest.fixture
def file_archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


def test_the_drill_fails_when_replay_stops_short_of_the_archive(
    file_archived: Archived, run_drkit: DrkitRunner
) -> None:
    """On 8f47402 the drill said PASS: the rows lost were within the RPO objective."""
    arch = file_archived
    doc = yaml.safe_load((arch.policy_dir / "prod.yaml").read_text())
    doc["objectives"] = {"rpo": "1h", "rto": "30m"}
    doc["drill"] = {"checks": {"row_counts": True, "amcheck": False}}
    (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    segments = backup_with_markers(arch, run_drkit, "m1", "m2", "m3")
    repo = repo_of(arch)
    key, good = flip_a_byte(repo, segments[1])
    scratch = Path(arch.root / "scratch")
    scratch.mkdir()
    scratch.chmod(0o755)

    failed = run_drkit(
        "drill",
        "prod",
        "--json",
        policy_dir=arch.policy_dir,
        env={"DRKIT_TMPDIR": str(scratch), "DRKIT_WAL_FETCH_ATTEMPTS": "2"},
        timeout=600,
    )
    assert failed.code == 3, failed.stdout + failed.stderr
    report = failed.json()
    assert report["verdict"] == "FAIL"
    end = checks_by_name(report)["WAL replayed to the end of the archive"]
    assert end["status"] == "FAIL" and segments[1] in end["detail"], end
    assert_scratch_gone(scratch)

    put_back(repo, key, good)
    passed = drill(run_drkit, arch.policy_dir, scratch, "--json", timeout=600)
    assert passed.code == 0, passed.stdout + passed.stderr
    end = checks_by_name(passed.json())["WAL replayed to the end of the archive"]
    assert end["status"] == "PASS", end


def test_s3_errors_on_one_segment_are_retried_then_fail_closed(
    s3_server: S3Server, run_drkit: DrkitRunner
) -> None:
    """500s on one WAL object during replay: a few are retried through; when they go on,
    the restore exits 3 naming the segment, and nothing is promoted."""
    with shared_dir() as root, archived_cluster(root, s3_block(s3_server)) as arch:
        segments = backup_with_markers(arch, run_drkit, "m1", "m2", "m3")
        proxy = FaultProxy(s3_server.endpoint).start()
        try:
            via_proxy = root / "policies-via-proxy"
            via_proxy.mkdir()
            doc = yaml.safe_load((arch.policy_dir / "prod.yaml").read_text())
            doc["repository"]["endpoint_url"] = proxy.endpoint
            (via_proxy / "prod.yaml").write_text(yaml.safe_dump(doc))
            chown_tree(via_proxy, cluster_os_user())
            # one request per attempt, no prefetch: the retries are wal-fetch's own
            env = {
                "DRKIT_S3_MAX_ATTEMPTS": "1",
                "DRKIT_WAL_PREFETCH": "0",
                "DRKIT_WAL_FETCH_ATTEMPTS": "3",
            }

            proxy.set_faults(Fault("500", "GET", segments[1], times=2))
            pgdata, result = pitr(run_drkit, arch, "latest", policy_dir=via_proxy, env=env)
            assert result.code == 0, result.stderr
            assert proxy.outcomes("500") == 2
            report = result.json()
            assert markers(restored_dsn(arch, report["port"]), arch) == ["m1", "m2", "m3"]
            log = (pgdata / "log" / "drkit-recovery.log").read_text()
            retries = [ln for ln in log.splitlines() if "retrying" in ln and segments[1] in ln]
            assert len(retries) == 2, log

            proxy.set_faults(Fault("500", "GET", segments[1], times=None))
            env["DRKIT_WAL_FETCH_ATTEMPTS"] = "2"
            pgdata, result = pitr(run_drkit, arch, "latest", policy_dir=via_proxy, env=env)
            assert result.code == 3, result.stderr
            assert segments[1] in result.stderr and "not promoted" in result.stderr
            assert "InternalError" in result.stderr, result.stderr
            assert_never_promoted(arch, pgdata)
        finally:
            proxy.stop()


def test_a_time_after_the_last_commit_restores_and_the_point_comes_from_the_server(
    file_archived: Archived, run_drkit: DrkitRunner
) -> None:
    """On 8f47402: "recovery target ... was not reached" for a time inside the window, and
    shutdown reported the base backup's point (the log lines it parsed are not logged)."""
    arch = file_archived
    backup_with_markers(arch, run_drkit)
    committed = add_marker(arch, "m1")
    time.sleep(1.1)
    quiet = server_now(arch)  # after m1's commit, before the switch that archives it
    time.sleep(1.1)
    arch.execute("SELECT pg_switch_wal()")
    repo = repo_of(arch)
    deadline = time.monotonic() + 60
    while True:  # the switch's segment is in the archive
        newest = max(i.modified for i in repo.list("wal/"))
        if newest > quiet:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)

    _, result = pitr(run_drkit, arch, quiet.isoformat(), "--target-action", "pause")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "paused"
    assert markers(restored_dsn(arch, report["port"]), arch) == ["m1"]
    reached = datetime.fromisoformat(report["reached_at"].replace("Z", "+00:00"))
    assert abs((reached - committed).total_seconds()) < 1, (reached, committed)

    pgdata, result = pitr(run_drkit, arch, "latest", "--target-action", "shutdown")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "shut down" and not (pgdata / "postmaster.pid").exists()
    reached = datetime.fromisoformat(report["reached_at"].replace("Z", "+00:00"))
    assert abs((reached - committed).total_seconds()) < 1, (reached, committed)
    assert report["lsn"] is not None and report["end_lsn"] is not None

    # the same time with the last segment damaged: replay stops at it, which must not be
    # taken for "the planned WAL ended without a commit past the target"
    last = report["window"]["last_wal"]
    flip_a_byte(repo, last)
    pgdata, result = pitr(run_drkit, arch, quiet.isoformat(), env={"DRKIT_WAL_FETCH_ATTEMPTS": "1"})
    assert result.code == 3, result.stderr
    assert last in result.stderr and "not promoted" in result.stderr, result.stderr
    assert_never_promoted(arch, pgdata)


def test_a_pause_short_of_the_planned_end_is_never_promoted(
    file_archived: Archived, run_drkit: DrkitRunner
) -> None:
    """PostgreSQL pauses recovery by itself when the WAL raises a hot standby setting above
    the recovered server's (max_connections raised on the primary after its base backup):
    the point reached is compared with the plan before anything is promoted.  On 8f47402
    the restore waited for a promotion that never came, DRKIT_RECOVERY_TIMEOUT long."""
    arch = file_archived
    backup_with_markers(arch, run_drkit, "m1")
    arch.execute("ALTER SYSTEM SET max_connections = 60")  # the backup's config says 40
    arch.cluster.stop()
    arch.cluster.start()
    add_marker(arch, "m2")
    arch.switch_and_wait(lambda name: find_wal_key(repo_of(arch), name) is not None)

    pgdata, result = pitr(run_drkit, arch, "latest", env={"DRKIT_RECOVERY_TIMEOUT": "120"})
    assert result.code == 3, result.stderr
    assert "short of the planned end" in result.stderr and "max_connections" in result.stderr
    assert "not promoted" in result.stderr, result.stderr
    assert_never_promoted(arch, pgdata)


def test_a_plain_copy_of_an_uncompressed_repository_stays_verifiable(
    run_drkit: DrkitRunner,
) -> None:
    """compression: none keeps its sha256 in the repository itself: `cp -r` (no extended
    attributes) keeps it, and a flipped byte in the copy fails verify naming the segment.
    On 8f47402 the copy verified clean."""
    with shared_dir() as root:
        block = file_repo_block(root)
        block["compression"] = {"algorithm": "none"}
        with archived_cluster(root, block) as arch:
            segments = backup_with_markers(arch, run_drkit, "m1", "m2")
        source = Path(str(block["url"]).removeprefix("file://"))
        copy = root / "copy"
        subprocess.run(["cp", "-r", str(source), str(copy)], check=True)
        assert not os.listxattr(copy / "prod" / "wal" / segments[0])
        policy_dir = root / "policies-copy"
        policy_dir.mkdir()
        doc = yaml.safe_load((root / "policies" / "prod.yaml").read_text())
        doc["repository"]["url"] = f"file://{copy}"
        (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))

        clean = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
        assert clean.code == 0, clean.stdout + clean.stderr
        checked = clean.json()["backups"][0]["wal_checked"]
        assert set(checked["by"]) == {"sha256 file"}, checked

        segment = copy / "prod" / "wal" / segments[0]
        data = bytearray(segment.read_bytes())
        data[len(data) // 3] ^= 0x01
        segment.write_bytes(bytes(data))
        damaged = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
        assert damaged.code == 3, damaged.stdout + damaged.stderr
        problems = damaged.json()["backups"][0]["problems"]
        assert any(segments[0] in p and "sha256" in p for p in problems), problems

        # objects written before checksums were kept beside them still verify, and say how
        for sidecar in (copy / "prod" / "wal").glob("*.sha256"):
            sidecar.unlink()
        segment.write_bytes(bytes(data[: len(data) // 2]))  # and one is cut short
        legacy = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
        assert legacy.code == 3, legacy.stdout
        verdict = legacy.json()["backups"][0]
        assert any(segments[0] in p and "bytes" in p for p in verdict["problems"]), verdict
        assert "size only" in " ".join(verdict["wal_checked"]["by"]), verdict
