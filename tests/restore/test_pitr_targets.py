"""Every recovery target kind, named restore points, and --continue, against real WAL.

Marker rows are committed between the targets (each in its own transaction, its xid
recorded); each restore is checked by the markers the recovered server holds.
``--continue`` is checked by the data directory's inode, by a file drkit never writes
surviving in it, and by the base backup's objects being gone from the repository
before it runs (an unpack would fail).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from drkit.catalog import list_backups
from tests.fix_cli import DrkitRunner, checks_by_name, drill
from tests.wal_support import (
    Archived,
    archived_cluster,
    file_repo_block,
    has_wal,
    markers,
    repo_of,
    restored_dsn,
    shared_dir,
)

pytestmark = pytest.mark.slow

ONLY_M1 = "SELECT array_agg(label ORDER BY id) = ARRAY['m1'] FROM marker"


@pytest.fixture
def file_archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


def commit_marker(arch: Archived, label: str) -> int:
    """Insert a marker in its own transaction; returns that transaction's ID."""
    with psycopg.connect(arch.dsn(), autocommit=False) as conn:
        conn.execute("INSERT INTO marker (label) VALUES (%s)", (label,))
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def restore(run_drkit: DrkitRunner, arch: Archived, *args: str) -> Any:
    """``drkit restore ENV ARGS --json`` on an existing data directory (--continue)."""
    return run_drkit("restore", arch.env, *args, "--json", policy_dir=arch.policy_dir, timeout=600)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_every_target_kind_and_continue(file_archived: Archived, run_drkit: DrkitRunner) -> None:
    arch = file_archived
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    backup = run_drkit("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    commit_marker(arch, "m1")
    made = run_drkit("restore-point", arch.env, "rp1", "--json", policy_dir=arch.policy_dir)
    assert made.code == 0, made.stderr
    rp1 = made.json()
    xid2 = commit_marker(arch, "m2")
    after_m2 = str(arch.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    commit_marker(arch, "m3")
    arch.switch_and_wait(has_wal(arch))

    # the restore point: archived before it was recorded, listed, never recorded twice
    assert has_wal(arch)(rp1["segment"])
    listed = run_drkit("backups", arch.env, "--json", policy_dir=arch.policy_dir)
    assert listed.code == 0, listed.stderr
    assert [p["name"] for p in listed.json()["restore_points"]] == ["rp1"]
    again = run_drkit("restore-point", arch.env, "rp1", policy_dir=arch.policy_dir)
    assert again.code == 4 and "rp1" in one_line(again.stderr)
    assert repo_of(arch).get_json("restore-points/rp1.json")["lsn"] == rp1["lsn"]

    # a drill to the restore point: the policy's SQL check sees m1 alone
    drill_dir = arch.root / "drill-policies"
    drill_dir.mkdir()
    doc = yaml.safe_load((arch.policy_dir / "prod.yaml").read_text())
    doc["drill"] = {"checks": {"sql": [{"name": "m1 only", "query": ONLY_M1}]}}
    (drill_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    scratch = arch.root / "scratch"
    scratch.mkdir(mode=0o755)
    drilled = drill(run_drkit, drill_dir, scratch, "--target-name", "rp1", "--json", timeout=600)
    report = drilled.json()
    checks = checks_by_name(report)
    assert report["recovery_point"]["target"] == "name:rp1", drilled.stderr
    assert checks["restore base backup + WAL"]["status"] == "PASS"
    assert checks["sql: m1 only"]["status"] == "PASS"

    # --target-xid --exclusive: just before the transaction that inserted m2
    pgdata = arch.new_pgdata()
    result = restore(
        run_drkit, arch, "--target-xid", str(xid2), "--exclusive", "--pgdata", str(pgdata)
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["target_kind"] == "xid" and report["state"] == "promoted"
    assert markers(restored_dsn(arch, report["port"]), arch) == ["m1"]

    # --target-lsn: up to a WAL position taken after m2 committed
    pgdata = arch.new_pgdata()
    result = restore(run_drkit, arch, "--target-lsn", after_m2, "--pgdata", str(pgdata))
    assert result.code == 0, result.stderr
    assert markers(restored_dsn(arch, result.json()["port"]), arch) == ["m1", "m2"]

    # --immediate: the base backup's consistent point, before any marker
    pgdata = arch.new_pgdata()
    result = restore(run_drkit, arch, "--immediate", "--pgdata", str(pgdata))
    assert result.code == 0, result.stderr
    assert markers(restored_dsn(arch, result.json()["port"]), arch) == []

    # a name drkit did not record: refused before anything is written
    pgdata = arch.new_pgdata()
    result = restore(run_drkit, arch, "--target-name", "nope", "--pgdata", str(pgdata))
    assert result.code == 3 and "nope" in one_line(result.stderr)
    assert not pgdata.exists() or not any(pgdata.iterdir())

    # an LSN past the archive: refused before anything is written
    pgdata = arch.new_pgdata()
    result = restore(run_drkit, arch, "--target-lsn", "FF/0", "--pgdata", str(pgdata))
    assert result.code == 3 and "after the last WAL reachable" in one_line(result.stderr)
    assert not pgdata.exists() or not any(pgdata.iterdir())

    # a transaction the archive never ends: replay runs out, and nothing is promoted
    pgdata = arch.new_pgdata()
    result = restore(run_drkit, arch, "--target-xid", str(xid2 + 100000), "--pgdata", str(pgdata))
    assert result.code == 3, result.stderr
    assert "did not end in it" in result.stderr and "not promoted" in result.stderr
    assert not (pgdata / "postmaster.pid").exists()

    # --target-name, paused: then moved on with --continue, in the same directory
    pgdata = arch.new_pgdata()
    result = restore(
        run_drkit, arch, "--target-name", "rp1", "--target-action", "pause", "--pgdata", str(pgdata)
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "paused" and report["lsn"] == rp1["lsn"]
    dsn = restored_dsn(arch, report["port"])
    assert markers(dsn, arch) == ["m1"]
    inode = os.stat(pgdata).st_ino
    (pgdata / "sentinel").write_text("drkit never writes this\n")
    repo = repo_of(arch)
    for manifest in list_backups(repo, "physical"):  # an unpack would now fail
        for obj in manifest.objects:
            repo.delete(obj.key)

    result = restore(
        run_drkit, arch, "--continue", "--target-xid", str(xid2), "--target-action", "pause",
        "--pgdata", str(pgdata),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["continued"] is True and report["state"] == "paused"
    assert "fetch_unpack" not in report["phases_seconds"]
    assert markers(dsn, arch) == ["m1", "m2"]
    assert os.stat(pgdata).st_ino == inode and (pgdata / "sentinel").exists()
    owner = os.stat(pgdata).st_uid  # what drkit rewrote stays the cluster user's
    assert {os.stat(pgdata / n).st_uid for n in ("drkit-recovery.json", "drkit-restored.json")} == {
        owner
    }

    # behind the point replayed: refused in one line, the server left as it was
    for behind in (["--target-name", "rp1"], ["--target-xid", str(xid2)], ["--immediate"]):
        result = restore(run_drkit, arch, "--continue", *behind, "--pgdata", str(pgdata))
        assert result.code == 3, result.stderr
        assert "not after the point" in one_line(result.stderr)
    assert markers(dsn, arch) == ["m1", "m2"]
    result = restore(
        run_drkit, arch, "--continue", "--point-in-time", "latest", "--timeline", "7",
        "--pgdata", str(pgdata),
    )  # fmt: skip
    assert result.code == 3 and "follows timeline 1" in one_line(result.stderr)

    result = restore(
        run_drkit, arch, "--continue", "--point-in-time", "latest", "--pgdata", str(pgdata)
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["state"] == "promoted" and report["continued"] is True
    assert markers(dsn, arch) == ["m1", "m2", "m3"]
    assert os.stat(pgdata).st_ino == inode and (pgdata / "sentinel").exists()

    # a promoted server is no paused recovery
    result = restore(
        run_drkit, arch, "--continue", "--point-in-time", "latest", "--pgdata", str(pgdata)
    )
    assert result.code == 4 and "left recovery" in one_line(result.stderr)

    # a base backup that records no next transaction ID cannot be said to precede an xid
    root = Path(arch.repo_block["url"].removeprefix("file://"))
    for path in (root / arch.env / "backups").glob("*/manifest.json"):
        doc = json.loads(path.read_text())
        del doc["extra"]["next_xid"]
        path.write_text(json.dumps(doc))
    pgdata = arch.new_pgdata()
    result = restore(run_drkit, arch, "--target-xid", str(xid2), "--pgdata", str(pgdata))
    assert result.code == 3 and "records its next transaction ID" in one_line(result.stderr)
    assert not pgdata.exists() or not any(pgdata.iterdir())


@pytest.mark.parametrize(
    "args, says",
    [
        (["--target-xid", "5", "--target-lsn", "0/1"], "exactly one recovery target"),
        (["--target-name", "a", "--exclusive"], "--exclusive goes with"),
        (["--immediate", "--exclusive"], "--exclusive goes with"),
        (["--point-in-time", "latest", "--exclusive"], "--exclusive goes with"),
        (["--exclusive"], "--exclusive needs a target"),
        (["--target-lsn", "12"], "--target-lsn must be an LSN"),
        (["--target-xid", "abc"], "--target-xid must be a transaction ID"),
        (["--target-name", "../x"], "--target-name must be"),
        (["--continue", "--pgdata", "/nonexistent"], "--continue needs the later target"),
        (["--continue", "--immediate"], "--continue needs --pgdata"),
        (["--target-xid", "7"], "--target-xid needs --pgdata"),
    ],
)
def test_target_options_are_checked_before_anything_runs(
    args: list[str], says: str, run_drkit: DrkitRunner, tmp_path: Any
) -> None:
    result = run_drkit("restore", "prod", *args, policy_dir=tmp_path)
    assert result.code == 2, result.stderr
    assert says in one_line(result.stderr)
