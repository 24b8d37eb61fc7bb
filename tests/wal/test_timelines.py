"""Production's timeline record and the chain walk of point-in-time recovery, without a
server: real ``file://`` repositories, real ``wal-push`` calls (the wal-push path records
a timeline; a restore test's data directory never does)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from drkit.backup.walchain import WalIndex, backup_on_timeline, reach_on_timeline
from drkit.catalog import Manifest
from drkit.config import Policy
from drkit.errors import CheckFailed
from drkit.storage import FileBackend, Repository, RepositoryConfig
from drkit.wal import (
    RESTORE_MARKER,
    note_pushed,
    parse_history,
    promote_timeline,
    push_wal,
    recorded_timeline,
    write_restore_marker,
)
from tests.builders import build_physical_manifest, pg_wal_dir, write_policy

SEGMENT = 16 * 1024 * 1024


def repo_at(root: Path) -> Repository:
    return Repository(FileBackend(root), "prod", RepositoryConfig(url=f"file://{root}"))


def put(repo: Repository, name: str, data: bytes = b"x" * 1000) -> None:
    repo.store(f"wal/{name}", io.BytesIO(data))  # type: ignore[arg-type]


def manifest(start: str, stop: str, wal_stop: str, tli: int = 1) -> Manifest:
    return build_physical_manifest(
        start, stop, wal_start="0/3000028", wal_stop=wal_stop, timeline=tli
    )


def data_dir(root: Path) -> Path:
    return pg_wal_dir(root / "pgdata")


def policy_for(root: Path) -> Policy:

    from drkit.config import load_policy

    directory = write_policy(
        root / "policies",
        "prod",
        "postgresql://u@localhost/app",
        {"url": f"file://{root / 'repo'}"},
        wal_archiving=True,
    )
    return load_policy("prod", directory)


def test_a_restore_test_never_records_its_timeline(tmp_path: Path) -> None:
    repo = repo_at(tmp_path / "repo")
    policy = policy_for(tmp_path)
    prod = data_dir(tmp_path / "prod")
    seg = prod / "000000010000000000000003"
    seg.write_bytes(b"\0" * SEGMENT)
    push_wal(policy, seg, repo=repo, batch=0)
    assert recorded_timeline(repo) == 1

    copy = data_dir(tmp_path / "copy")
    write_restore_marker(copy.parent, {"environment": "prod"})
    history = copy / "00000002.history"
    history.write_text("1\t0/3000100\tno recovery target specified\n")
    push_wal(policy, history, repo=repo, batch=0)
    assert (copy.parent / RESTORE_MARKER).exists()
    assert recorded_timeline(repo) == 1  # stored, but not production's

    # the same file from a server that is not a restore test (a failover): recorded
    primary = data_dir(tmp_path / "primary")
    (primary / "00000002.history").write_bytes(history.read_bytes())
    push_wal(policy, primary / "00000002.history", repo=repo, batch=0)
    assert recorded_timeline(repo) == 2
    # an older timeline pushing later does not move it back
    assert note_pushed(repo, prod, ["000000010000000000000004"]) is None
    assert recorded_timeline(repo) == 2


def test_promote_timeline_needs_the_history_file(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    with pytest.raises(CheckFailed, match=r"00000003\.history"):
        promote_timeline(repo, 3, "test")
    put(repo, "00000003.history", b"1\t0/5000000\tx\n2\t0/6000000\ty\n")
    assert promote_timeline(repo, 3, "test")["timeline"] == 3
    assert promote_timeline(repo, 1, "test")["previous"] == 3
    assert recorded_timeline(repo) == 1


def test_reach_stops_at_a_gap_and_counts_what_lies_beyond(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    for n in (3, 4, 5, 7, 8):
        put(repo, f"0000000100000000000000{n:02X}")
    backup = manifest("000000010000000000000003", "000000010000000000000004", "0/4000100")
    reach = reach_on_timeline(repo, backup, 1)
    assert reach.last_segment == "000000010000000000000005"
    assert reach.missing == "000000010000000000000006"
    assert reach.gap and reach.newer_segments == 2 and not reach.required_missing
    assert reach.newest_segment == "000000010000000000000008"


def test_reach_follows_the_chosen_timeline_only(tmp_path: Path) -> None:
    """A copy branched from timeline 1 at 0/5000100 and archived timeline-2 segments;
    production went on on timeline 1.  Each timeline has its own unbroken reach, and
    the other's segments are not counted as lying beyond a gap."""
    repo = repo_at(tmp_path)
    for n in range(3, 9):
        put(repo, f"0000000100000000000000{n:02X}")
    put(repo, "00000002.history", b"1\t0/5000100\tno recovery target specified\n")
    for n in (5, 6):
        put(repo, f"0000000200000000000000{n:02X}")
    backup = manifest("000000010000000000000003", "000000010000000000000004", "0/4000100")
    on_one = reach_on_timeline(repo, backup, 1)
    assert on_one.last_segment == "000000010000000000000008" and not on_one.gap
    history = parse_history("1\t0/5000100\tx\n")
    on_two = reach_on_timeline(repo, backup, 2, history=history)
    assert on_two.last_segment == "000000020000000000000006" and not on_two.gap
    assert backup_on_timeline(backup, 2, history)
    late = manifest("000000010000000000000006", "000000010000000000000006", "0/6000100")
    assert not backup_on_timeline(late, 2, history)  # timeline 2 left before it ended
    assert len(WalIndex.load(repo).objects) == 9
