"""Point-in-time recovery and physical drills from a copy (``--repo NAME``): base backup
AND WAL read from the copy, so that losing the primary repository loses nothing the copy
holds.

Attacks: the primary repository removed entirely before the restore (a restore_command
that still read it would end recovery at the base backup, and drkit's end checks would
refuse); a gap in the copy's WAL (the never-promote-on-less checks run against the copy's
archive, not the primary's); a restore_command naming a copy the policy no longer has
(one line, exit 1 as any wal-fetch error, never a guess at another repository); and a
prefetch spool naming the copy, asked for the primary (never served from the copy); and
``--continue`` of a recovery from the copy without ``--repo`` (refused before anything).
The loss and the gap are attacked twice: with a ``file://`` copy, and with an S3 copy
(moto over HTTP), whose restore_command reads the bucket from the recovered server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drkit.config import load_policy
from drkit.pg import chown_tree, cluster_os_user
from drkit.storage import Repository
from drkit.wal import find_wal_key, write_repo_hint
from drkit.wal.fetch import SPOOL_DIR
from tests import builders
from tests.fix_cli import DrkitRunner, checks_by_name, drill
from tests.fix_s3 import S3Server
from tests.wal_support import (
    Archived,
    archived_cluster,
    backup_with_markers,
    file_repo_block,
    markers,
    pitr,
    restored_dsn,
    shared_dir,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def copied() -> Iterator[Archived]:
    """A cluster archiving into a ``file://`` primary, with a ``file://`` copy ``offsite``."""
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        (root / "copy").mkdir(mode=0o755)
        path = arch.policy_dir / "prod.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["copies"] = {"offsite": {"url": f"file://{root / 'copy'}"}}
        path.write_text(yaml.safe_dump(doc))
        chown_tree(arch.policy_dir, cluster_os_user())
        yield arch


@pytest.fixture
def copied_to_s3(s3_server: S3Server) -> Iterator[Archived]:
    """A cluster archiving into a ``file://`` primary, with an S3 copy ``offsite`` (the
    S3 server's credentials are in the environment before the cluster starts, so its
    archive_command and every server a restore starts have them)."""
    bucket = s3_server.create_bucket()
    copy = {"url": f"s3://{bucket}/drkit", "endpoint_url": s3_server.endpoint}
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        path = arch.policy_dir / "prod.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["copies"] = {"offsite": {**copy, "region": "us-east-1"}}
        path.write_text(yaml.safe_dump(doc))
        chown_tree(arch.policy_dir, cluster_os_user())
        yield arch


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def lean_fetch(*args: str) -> subprocess.CompletedProcess[str]:
    """The restore_command's lean entry, as PostgreSQL would start it (no prefetch
    helper sent ahead: what lands in the spool is what the test asked for)."""
    return subprocess.run(
        [sys.executable, "-m", "drkit.wal", "fetch", *args],
        env={**os.environ, "DRKIT_WAL_PREFETCH": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def recovered_from_the_copy_alone(arch: Archived, run_drkit: DrkitRunner) -> tuple[str, str, Path]:
    """Markers m1 and m2 archived and copied to ``offsite``, the primary repository
    removed entirely, then PITR to latest from the copy: promoted with both markers, its
    restore_command naming the copy.  The first and last WAL of the markers, and the
    recovered data directory."""
    first, last = backup_with_markers(arch, run_drkit, "m1", "m2")
    done = run_drkit("copy", arch.env, policy_dir=arch.policy_dir)
    assert done.code == 0, done.stderr
    shutil.rmtree(arch.root / "repo")  # the primary repository, gone entirely

    pgdata, result = pitr(run_drkit, arch, "latest", "--repo", "offsite")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "promoted"
    assert markers(restored_dsn(arch, report["port"]), arch) == ["m1", "m2"]
    conf = (pgdata / "postgresql.auto.conf").read_text()
    assert "fetch --repo offsite prod" in conf, conf
    return first, last, pgdata


def a_gap_in_the_copy_is_refused(
    arch: Archived, run_drkit: DrkitRunner, first: str, last: str
) -> None:
    """The copy loses ``first``, a segment below the newest (``last``): PITR to latest
    from it is refused (exit 3) naming that segment, and nothing is promoted."""
    copy = Repository.for_policy(load_policy(arch.env, arch.policy_dir).for_copy("offsite"))
    found = find_wal_key(copy, first)
    assert found is not None and find_wal_key(copy, last) is not None
    copy.delete(found)
    gapped, refused = pitr(run_drkit, arch, "latest", "--repo", "offsite")
    assert refused.code == 3, refused.stderr
    assert first in one_line(refused.stderr)
    assert not (gapped / "postmaster.pid").exists()


def test_with_the_primary_repository_lost_pitr_and_a_drill_from_the_copy_replay_its_wal(
    copied: Archived, run_drkit: DrkitRunner
) -> None:
    arch = copied
    first, last, pgdata = recovered_from_the_copy_alone(arch, run_drkit)
    # --continue on it from the primary would mix two repositories' WAL: refused first
    moved = run_drkit(
        "restore",
        arch.env,
        "--continue",
        "--point-in-time",
        "latest",
        "--pgdata",
        str(pgdata),
        policy_dir=arch.policy_dir,
    )
    assert moved.code == 4, moved.stderr
    assert "from the copy offsite" in one_line(moved.stderr)

    # a physical drill of the copy: the whole archive it holds, replayed from it
    scratch = arch.root / "scratch"
    scratch.mkdir(mode=0o755)
    drilled = drill(
        run_drkit,
        arch.policy_dir,
        scratch,
        "--point-in-time",
        "latest",
        "--repo",
        "offsite",
        "--json",
    )
    drilled_report = drilled.json()
    checks = checks_by_name(drilled_report)
    assert checks["restore base backup + WAL"]["status"] == "PASS", drilled.stderr
    replayed = checks["WAL replayed to the end of the archive"]
    assert replayed["status"] == "PASS" and last in replayed["expected"], replayed

    # a table put back from the copy's physical backup and WAL, beside the live one
    put_back = run_drkit(
        "restore", arch.env, "--point-in-time", "latest", "--target-db", arch.dsn(),
        "--table", "marker", "--as", "marker_from_copy", "--repo", "offsite",
        policy_dir=arch.policy_dir, env={"DRKIT_TMPDIR": str(scratch)}, timeout=600,
    )  # fmt: skip
    assert put_back.code == 0, put_back.stderr
    labels = arch.execute("SELECT label FROM marker_from_copy ORDER BY id")
    assert [r[0] for r in labels] == ["m1", "m2"]

    # a spool naming the copy (as a recovery from it writes, and removes at its end)
    # serves a line naming the copy, never one naming the primary
    offsite = load_policy(arch.env, arch.policy_dir).for_copy("offsite")
    write_repo_hint(offsite, pgdata / "pg_wal")
    probe = pgdata / "pg_wal" / "drkit-test-probe"
    primary = lean_fetch(arch.env, first, str(probe), str(arch.policy_dir))
    assert primary.returncode == 1, primary.stderr
    assert not probe.exists()
    served = lean_fetch("--repo", "offsite", arch.env, first, str(probe), str(arch.policy_dir))
    assert served.returncode == 0 and probe.exists(), served.stderr
    # the prefetch helper reads the copy it is named, through the policy (no hint)
    spool = pgdata / "pg_wal" / SPOOL_DIR
    (spool / "repo.json").unlink()
    assert not (spool / last).exists()
    for copy_args in ([], ["--repo", "offsite"]):
        helper = [*copy_args, arch.env, str(arch.policy_dir), str(spool), last]
        subprocess.run([sys.executable, "-m", "drkit.wal", "prefetch", *helper], check=False)
        assert (spool / last).exists() == bool(copy_args), copy_args
    # and with no hint, the full path reads the copy through the policy too
    probe.unlink()
    full = lean_fetch("--repo", "offsite", arch.env, first, str(probe), str(arch.policy_dir))
    assert full.returncode == 0, full.stderr
    assert probe.stat().st_size == (spool / last).stat().st_size  # a whole segment

    # the copy loses a segment below the newest: refused, named, nothing promoted
    a_gap_in_the_copy_is_refused(arch, run_drkit, first, last)


def test_with_the_primary_repository_lost_pitr_from_an_s3_copy_replays_its_wal(
    copied_to_s3: Archived, run_drkit: DrkitRunner
) -> None:
    """The same promise as above with the copy in S3: the base backup, every segment and
    the restore_command's WAL come from the bucket, and a gap in the bucket is refused."""
    arch = copied_to_s3
    first, last, _ = recovered_from_the_copy_alone(arch, run_drkit)
    a_gap_in_the_copy_is_refused(arch, run_drkit, first, last)


def test_a_restore_command_naming_a_copy_the_policy_no_longer_has_fails_in_one_line(
    tmp_path: Path, run_drkit: DrkitRunner
) -> None:
    (tmp_path / "repo").mkdir()
    policy_dir = builders.write_policy(
        tmp_path / "policies",
        repository={"url": f"file://{tmp_path / 'repo'}"},
        copies={"offsite": {"url": f"file://{tmp_path / 'copy'}"}},
    )
    segment = "000000010000000000000001"
    dest = tmp_path / "pg_wal"
    dest.mkdir()
    lean = lean_fetch(
        "--repo", "gone", "prod", segment, str(dest / "RECOVERYXLOG"), str(policy_dir)
    )
    assert lean.returncode == 1, lean.stderr
    line = one_line(lean.stderr)
    assert line.startswith(f"drkit: wal-fetch {segment}: --repo gone: prod has no copy")
    plain = run_drkit(
        "wal-fetch",
        "prod",
        segment,
        str(dest / "RECOVERYXLOG"),
        "--repo",
        "gone",
        policy_dir=policy_dir,
    )
    assert plain.code == 1, plain.stderr
    assert "--repo gone: prod has no copy" in one_line(plain.stderr)
    assert not (dest / "RECOVERYXLOG").exists()
    assert os.listdir(dest) in ([], [".drkit-prefetch"])
