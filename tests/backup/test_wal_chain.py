"""WAL chain checks (verify) and WAL pruning keys, on a file:// repository without a server."""

from __future__ import annotations

import io
from pathlib import Path

from drkit.backup.retention import wal_to_delete
from drkit.backup.walchain import check_backup_wal, recovery_timeline
from drkit.catalog import Manifest
from drkit.storage import FileBackend, Repository, RepositoryConfig
from tests.builders import build_physical_manifest


def repo_at(tmp_path: Path) -> Repository:
    config = RepositoryConfig(url=f"file://{tmp_path}")
    return Repository(FileBackend(tmp_path), "prod", config)


SEG = 1024 * 1024  # the smallest segment size PostgreSQL allows


def put(repo: Repository, name: str, data: bytes = b"x" * SEG) -> None:
    repo.store(f"wal/{name}", io.BytesIO(data))  # type: ignore[arg-type]


def manifest(start: str, stop: str, tli: int = 1, wal_stop: str = "0/500100") -> Manifest:
    return build_physical_manifest(
        start,
        stop,
        wal_start="0/300028",
        wal_stop=wal_stop,
        timeline=tli,
        server_version="15.18",
        extra={"wal_segment_size": SEG},
    )


def test_complete_chain_and_window_across_a_timeline_switch(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    for n in range(3, 8):
        put(repo, f"0000000100000000000000{n:02X}")
    put(repo, "00000002.history", b"1\t0/700100\tno recovery target specified\n")
    put(repo, "000000020000000000000007")
    put(repo, "000000020000000000000008")
    problems, details = check_backup_wal(
        repo, manifest("000000010000000000000003", "000000010000000000000005")
    )
    assert problems == []
    assert details["wal_chain"] == "complete"
    assert details["last_wal"] == "000000020000000000000008"
    assert details["recoverable_to"] is not None
    # every file of the window was read: segments 3..7 on timeline 1, then 7..8 on 2
    # (the switch segment is read from the new timeline), and 00000002.history
    assert details["wal_checked"] == {"files": 7, "damaged": 0, "by": {"zstd frame checksum": 7}}
    assert recovery_timeline(
        repo, manifest("000000010000000000000003", "000000010000000000000005")
    ) == (2, True)


def flip(repo: Repository, name: str) -> None:
    path = next(
        (Path(str(repo.backend.location).removeprefix("file://")) / "prod/wal").glob(name + "*")
    )
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_file_of_the_window_is_read_and_a_damaged_one_ends_it(tmp_path: Path) -> None:
    """verify reads what it reports: a damaged segment after the backup's stop ends the
    window before it (a problem naming it); one before the stop makes the backup
    unrestorable.  Each WAL file is read once for all backups of a run."""
    from drkit.backup.walchain import WalReading

    repo = repo_at(tmp_path)
    for n in range(3, 9):
        put(repo, f"0000000100000000000000{n:02X}")
    backup = manifest("000000010000000000000003", "000000010000000000000004")
    flip(repo, "000000010000000000000006")
    problems, details = check_backup_wal(repo, backup)
    assert details["wal_chain"] == "damaged"
    assert details["last_wal"] == "000000010000000000000005"
    assert len(problems) == 1 and "000000010000000000000006" in problems[0], problems
    assert "window ends at 000000010000000000000005" in problems[0]
    assert details["wal_checked"]["files"] == 4 and details["wal_checked"]["damaged"] == 1

    flip(repo, "000000010000000000000004")
    reading = WalReading()
    problems, details = check_backup_wal(repo, backup, reading)
    assert details["wal_chain"] == "damaged"
    assert "000000010000000000000004" in problems[0] and "cannot be restored" in problems[0]
    # a second backup of the same run sharing the chain: nothing is read twice
    reads: list[str] = []
    real = repo.backend.open_read
    repo.backend.open_read = lambda key: reads.append(key) or real(key)  # type: ignore[method-assign]
    check_backup_wal(repo, backup, reading)
    assert reads == []


def test_gap_is_named(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    for n in (3, 4, 6):
        put(repo, f"0000000100000000000000{n:02X}")
    problems, details = check_backup_wal(
        repo, manifest("000000010000000000000003", "000000010000000000000006")
    )
    assert details["wal_chain"] == "gap"
    assert len(problems) == 1 and "000000010000000000000005" in problems[0]


def test_timeline_that_branched_before_the_backup_is_not_followed(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    put(repo, "00000002.history", b"1\t0/400000\treason\n")  # left timeline 1 at 0/400000
    backup = manifest("000000010000000000000005", "000000010000000000000005", 1, "0/500100")
    assert recovery_timeline(repo, backup) == (1, False)


def test_wal_before_the_oldest_kept_start_is_pruned(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 8)]
    for name in names:
        put(repo, name)
    put(repo, "000000010000000000000002.00000028.backup")
    put(repo, "00000002.history")
    put(repo, "000000020000000000000004.partial")
    keys = [i.key for i in repo.list("wal/")]
    doomed = {k.rsplit("/", 1)[-1] for k in wal_to_delete(keys, "000000010000000000000005")}
    assert doomed == {
        "000000010000000000000001.zst",
        "000000010000000000000002.zst",
        "000000010000000000000003.zst",
        "000000010000000000000004.zst",
        "000000010000000000000002.00000028.backup.zst",
        "000000020000000000000004.partial.zst",
    }
    assert wal_to_delete(keys, None) == []  # no kept base backup: keep all WAL


def test_an_uncompressed_segments_checksum_file_goes_and_stays_with_it(tmp_path: Path) -> None:
    """compression: none keeps a ``.sha256`` file beside each WAL object: pruning takes it
    with its segment (history files, kept forever, keep theirs)."""
    config = RepositoryConfig(url=f"file://{tmp_path}", compression={"algorithm": "none"})
    repo = Repository(FileBackend(tmp_path), "prod", config)
    keys = [
        f"prod/wal/{n}{suffix}"
        for n in ("000000010000000000000001", "000000010000000000000009", "00000002.history")
        for suffix in ("", ".sha256")
    ]
    doomed = {k.rsplit("/", 1)[-1] for k in wal_to_delete(keys, "000000010000000000000005")}
    assert doomed == {"000000010000000000000001", "000000010000000000000001.sha256"}
    assert repo.suffix == ""
