"""Disk full: a ``file://`` repository on a 1 MiB tmpfs.

The backup fails with exit 1 and one line saying the device is full, leaves no manifest
and no temporary file, lists nothing, and works once there is room again.  The tmpfs
needs root (or CAP_SYS_ADMIN); without it the test fails saying so, it does not skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import files_under, listed_ids, make_age_key, verify_all


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            "the disk-full tests mount a 1 MiB tmpfs and need root or CAP_SYS_ADMIN: "
            f"{done.stderr.strip()}"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def grow(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
def test_full_disk_fails_cleanly_and_leaves_nothing(
    encrypted: bool,
    sample_db: tuple[str, str],
    tiny_fs: Path,
    pg_server: PgServer,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    name, url = sample_db
    # ~4 MB of hex text: about 2 MB after zstd, twice what the tmpfs holds
    pg_server.query(
        name,
        "CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v "
        "FROM generate_series(1, 60000) g",
    )
    repo = RepoTarget("file", f"file://{tiny_fs}/repo", root=tiny_fs / "repo")
    extra = {}
    if encrypted:
        identity, recipient = make_age_key(tmp_path / "keys")
        extra = {"encryption": {"recipients": [recipient], "identity_file": str(identity)}}
    policy_dir = make_policy("prod", url, repo, repository=extra)

    result = run_drkit("backup", "prod", policy_dir=policy_dir, timeout=120)
    assert result.code == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no space left on device" in lines[0]
    assert files_under(tiny_fs) == {}, "a manifest, object or temp file was left behind"
    assert listed_ids(run_drkit, policy_dir) == []

    # WAL archiving on the same full device: exit 1, nothing stored, PostgreSQL retries
    wal = tmp_path / "pg_wal" / "000000010000000000000001"
    wal.parent.mkdir()
    wal.write_bytes(os.urandom(2 * 1024 * 1024))
    pushed = run_drkit("wal-push", "prod", str(wal), policy_dir=policy_dir, timeout=120)
    assert pushed.code == 1, pushed.stderr
    assert "no space left on device" in pushed.stderr
    assert files_under(tiny_fs) == {}

    grow(tiny_fs, "64m")
    again = run_drkit("backup", "prod", "--json", policy_dir=policy_dir, timeout=120)
    assert again.code == 0, again.stderr
    assert listed_ids(run_drkit, policy_dir) == [again.json()["id"]]
    assert verify_all(run_drkit, policy_dir).code == 0


def test_a_full_spool_under_backup_jobs_says_so(
    sample_db: tuple[str, str],
    tiny_fs: Path,
    pg_server: PgServer,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    file_repo: RepoTarget,
) -> None:
    """``backup --jobs``: pg_dump's workers write the directory into the local spool; when
    it fills up, the line names the full device, not pg_dump's leader's "a worker process
    died unexpectedly"."""
    name, url = sample_db
    pg_server.query(
        name,
        "CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v "
        "FROM generate_series(1, 60000) g",
    )
    policy_dir = make_policy("prod", url, file_repo)
    env = {"DRKIT_TMPDIR": str(tiny_fs)}
    result = run_drkit("backup", "prod", "--jobs", "2", policy_dir=policy_dir, env=env, timeout=120)
    assert result.code == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no space left on device" in lines[0].lower(), lines[0]
    assert "worker process died" not in lines[0]
    assert files_under(tiny_fs) == {}, "the spool was left behind"
    assert listed_ids(run_drkit, policy_dir) == []
