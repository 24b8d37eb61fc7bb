"""Every WAL segment size PostgreSQL allows: a 1 MB-segment cluster across a log boundary.

With 1 MB segments one "log" holds 0x1000 segments, so names run
``…0000000000000FFF`` -> ``…0000000100000000``; arithmetic that assumes 16 MB segments
(0x100 per log) fails on the first name above ``…FF``.  ``pg_resetwal -l`` moves a fresh
cluster to just below the boundary, so crossing it takes a few WAL switches.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit.pg import LocalCluster, chown_tree, cluster_os_user, run_as
from drkit.pg.binaries import find_binary
from drkit.storage import Repository
from drkit.wal import (
    archive_command,
    find_wal_key,
    load_wal_policy,
    prepare_file_repository,
    segment_size_from_control,
)
from tests.builders import pg_wal_dir
from tests.fix_cli import DrkitRunner
from tests.wal_support import Archived, file_repo_block, restored_dsn, shared_dir

pytestmark = pytest.mark.slow

MB = 1024 * 1024
START = "000000010000000000000FFD"  # three segments below the log boundary


@pytest.fixture
def small_segments() -> Iterator[Archived]:
    with shared_dir() as root:
        block = file_repo_block(root)
        user = cluster_os_user()
        policy_dir = root / "policies"
        policy_dir.mkdir()
        prepare_file_repository(str(block["url"]), "prod", user)
        cluster = LocalCluster.create(
            root / "pg",
            settings={
                "archive_mode": "on",
                "archive_command": archive_command("prod", policy_dir, user),
                "max_wal_size": "64MB",
                "min_wal_size": "8MB",
            },
            fast=True,
            start=False,
            initdb_args=["--wal-segsize=1"],
        )
        arch = Archived(root, cluster, policy_dir, block)
        try:
            run_as(
                [find_binary("pg_resetwal", cluster.major), "-l", START, str(cluster.data_dir)],
                user,
                timeout=120,
            )
            cluster.start()
            arch.write_policy(cluster.dsn())
            yield arch
        finally:
            arch.stop_restored()
            cluster.destroy()


def test_control_file_gives_the_segment_size(small_segments: Archived) -> None:
    data = (small_segments.cluster.data_dir / "global" / "pg_control").read_bytes()
    assert segment_size_from_control(data) == MB
    rows = small_segments.execute("SHOW wal_segment_size")
    assert rows[0][0] == "1MB"


def test_one_mb_segments_archive_fetch_prefetch_and_recover_across_the_boundary(
    small_segments: Archived, run_drkit: DrkitRunner
) -> None:
    arch = small_segments
    repo = Repository.for_policy(load_wal_policy("prod", arch.policy_dir))

    def has(name: str) -> bool:
        return find_wal_key(repo, name) is not None

    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    backup = run_drkit("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    assert backup.json()["wal_start"].startswith("0/FF")  # segment 0xFFx of 1 MB

    switched: list[str] = []
    for i in range(6):
        arch.execute(f"INSERT INTO marker (label) VALUES ('m{i}')")
        switched.append(arch.switch_and_wait(has))
    crossing = ["000000010000000000000FFF", "000000010000000100000000"]  # the log boundary
    assert all(has(n) for n in crossing), [i.key for i in repo.list("wal/")]
    for name in crossing + switched:
        key = find_wal_key(repo, name)
        assert key is not None
        with repo.backend.open_read(key):
            pass

    verify = run_drkit("verify", "prod", backup.json()["id"], "--json", policy_dir=arch.policy_dir)
    assert verify.code == 0, verify.stderr + verify.stdout

    # wal-fetch in a 1 MB data directory: the segment, then the prefetch helper brings the
    # next ones across the boundary (it used to die on "segment part 1000 is out of range")
    scratch = arch.root / "fetchdir"
    (scratch / "global").mkdir(parents=True)
    shutil.copy(arch.cluster.data_dir / "global" / "pg_control", scratch / "global")
    (scratch / "pg_wal").mkdir()
    chown_tree(scratch, cluster_os_user())
    dest = scratch / "pg_wal" / "RECOVERYXLOG"
    got = run_drkit(
        "wal-fetch", "prod", "000000010000000000000FFE", str(dest), policy_dir=arch.policy_dir
    )
    assert got.code == 0, got.stderr
    assert dest.stat().st_size == MB
    spool = scratch / "pg_wal" / ".drkit-prefetch"
    wanted = ["000000010000000000000FFF", "000000010000000100000000"]
    deadline = time.monotonic() + 60
    while not all((spool / n).exists() for n in wanted):
        assert time.monotonic() < deadline, f"prefetch did not arrive: {sorted(spool.iterdir())}"
        time.sleep(0.1)
    assert (spool / wanted[1]).stat().st_size == MB

    # point-in-time recovery replays through the boundary
    pgdata = arch.new_pgdata()
    result = run_drkit(
        "restore",
        "prod",
        "--point-in-time",
        "latest",
        "--pgdata",
        str(pgdata),
        "--json",
        policy_dir=arch.policy_dir,
        timeout=600,
    )
    log = pgdata / "log" / "drkit-recovery.log"
    detail = log.read_text(errors="replace") if log.exists() else ""
    assert result.code == 0, result.stderr + detail
    assert "out of range" not in detail
    rows = arch.execute(
        "SELECT label FROM marker ORDER BY id", restored_dsn(arch, result.json()["port"])
    )
    assert [r[0] for r in rows] == [f"m{i}" for i in range(6)]


def test_push_refuses_a_file_of_another_size_than_the_clusters(
    small_segments: Archived, run_drkit: DrkitRunner
) -> None:
    """A 16 MB file in a 1 MB cluster's pg_wal, and a 5-byte one: exit 1, nothing stored;
    the real segment is archived afterwards."""
    arch = small_segments
    pgdata = arch.root / "fake"
    (pgdata / "global").mkdir(parents=True)
    pg_wal_dir(pgdata)
    shutil.copy(arch.cluster.data_dir / "global" / "pg_control", pgdata / "global")
    name = "000000010000000200000005"
    path: Path = pgdata / "pg_wal" / name
    repo = Repository.for_policy(load_wal_policy("prod", arch.policy_dir))
    for wrong in (b"x" * (16 * MB), b"short"):
        path.write_bytes(wrong)
        refused = run_drkit("wal-push", "prod", str(path), policy_dir=arch.policy_dir)
        assert refused.code == 1, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "not a whole" in refused.stderr and name in refused.stderr
        assert find_wal_key(repo, name) is None
    real = bytes(range(256)) * (MB // 256)
    path.write_bytes(real)
    pushed = run_drkit("wal-push", "prod", str(path), policy_dir=arch.policy_dir)
    assert pushed.code == 0, pushed.stderr
    key = find_wal_key(repo, name)
    assert key is not None
    dest = pgdata / "pg_wal" / "RECOVERYXLOG"
    assert run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=arch.policy_dir).code == 0
    assert dest.read_bytes() == real
