"""The fetch before ``pg_restore --jobs``: a stored dump decoded into a private temporary
file while a thread writes it.  Attacked directly: every byte lands in order, and a write
that fails (a full disk) fails the fetch and leaves no file and no thread behind."""

from __future__ import annotations

import errno
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from drkit.progress import Meter
from drkit.restore import logical
from drkit.storage import Repository, RepositoryConfig, open_backend
from drkit.streams import CHUNK


def _stored(tmp_path: Path, data: bytes) -> tuple[Repository, Any]:
    config = RepositoryConfig(url=f"file://{tmp_path / 'repo'}")
    repo = Repository(open_backend(config), "prod", config)
    return repo, repo.store("backups/x/db.dump", io.BytesIO(data), database="db")


def _data() -> bytes:
    # several chunks, each different, so a block written twice or out of order shows
    return b"".join(os.urandom(1024) * (CHUNK // 1024) + bytes([i]) for i in range(7))


def test_the_fetched_file_holds_the_dump_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    repo, obj = _stored(tmp_path, data)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("DRKIT_TMPDIR", str(spool))
    real_fdopen = os.fdopen

    class Slow(io.RawIOBase):  # a slow disk: the writer thread lags behind the decoding
        def __init__(self, fd: int) -> None:
            self.file = real_fdopen(fd, "wb")

        def write(self, block: Any) -> int:
            time.sleep(0.02)
            return self.file.write(block)

        def close(self) -> None:
            self.file.close()
            super().close()

    monkeypatch.setattr(logical.os, "fdopen", lambda fd, _mode: Slow(fd))
    with logical._fetched(repo, obj, Meter(None, "fetch", "db")) as path:
        assert path.read_bytes() == data
    assert list(spool.iterdir()) == []


def test_a_full_disk_fails_the_fetch_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, obj = _stored(tmp_path, _data())
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("DRKIT_TMPDIR", str(spool))
    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, fd: int) -> None:
            self.file = real_fdopen(fd, "wb")
            self.left = 2 * CHUNK

        def write(self, block: Any) -> int:
            if self.left <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(block)
            return self.file.write(block)

        def close(self) -> None:
            self.file.close()
            super().close()

    monkeypatch.setattr(logical.os, "fdopen", lambda fd, _mode: Full(fd))
    before = threading.active_count()
    with (
        pytest.raises(OSError, match="No space left"),
        logical._fetched(repo, obj, Meter(None, "fetch", "db")),
    ):
        pytest.fail("a fetch whose file could not be written must not be restored")
    assert list(spool.iterdir()) == []
    assert threading.active_count() == before
