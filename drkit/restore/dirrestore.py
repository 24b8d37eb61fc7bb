"""A directory-format dump (``backup --jobs``) fetched back into a local directory.

pg_restore reads a directory-format archive from a directory only (never stdin), so the
objects of the dump are fetched, ``jobs`` at a time, into a private directory (under
``$DRKIT_TMPDIR``): each is decrypted and decompressed as it streams, its stored size
and sha256 checked against the manifest and its decoded size against the raw size.  The
directory is handed out only once every object passed, so pg_restore never starts on a
damaged backup; it is removed whatever happens.

Names come from the manifest's keys and are checked (a plain file name, each once, with a
``toc.dat``) before anything is written, so a crafted manifest cannot write elsewhere.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from drkit.backup import MEMBER_NAME, TOC
from drkit.errors import CheckFailed
from drkit.storage import Encoding, Repository, StoredObject
from drkit.streams import CHUNK, spool_dir


def member_name(obj: StoredObject) -> str:
    """The file name in the dump directory an object of a directory dump holds."""
    parent, _, stored = obj.key.rpartition("/")
    name = Encoding(obj.compression, bool(obj.encryption_recipients)).strip(stored)
    if not parent.endswith(".dir") or not MEMBER_NAME.fullmatch(name) or name in (".", ".."):
        raise CheckFailed(f"{obj.key}: not a file of a directory-format dump")
    return name


@contextlib.contextmanager
def fetched_directory(
    repo: Repository,
    members: list[StoredObject],
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Path]:
    """The dump directory, every object verified, in a temp directory removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="drkit-restore-", dir=spool_dir()))
    try:
        fetch_directory(repo, members, path, jobs=jobs, progress=progress)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fetch_directory(
    repo: Repository,
    members: list[StoredObject],
    path: Path,
    *,
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Fetch every object of a directory dump into the empty directory ``path``, checked;
    the first failure (CheckFailed, StorageError) is raised once the fetches in flight end."""
    names = [member_name(o) for o in members]
    if len(set(names)) != len(names) or TOC not in names:
        where = members[0].key.rpartition("/")[0] if members else "the backup"
        raise CheckFailed(f"{where}: the manifest does not list one {TOC} and unique files")
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="drkit-get") as pool:
        futures = [
            pool.submit(_fetch_one, repo, obj, path / name, progress)
            for obj, name in zip(members, names, strict=True)
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and f.exception() is not None]
        if failed:
            for other in futures:
                other.cancel()
            failed[0].result()
        for future in futures:
            future.result()


def _fetch_one(
    repo: Repository, obj: StoredObject, target: Path, progress: Callable[[int], None] | None
) -> None:
    written = 0
    with repo.open_decoded(obj) as stream, open(target, "xb") as out:
        while chunk := stream.read(CHUNK):
            out.write(chunk)
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))
    if written != obj.raw_size:
        raise CheckFailed(f"{obj.key}: decodes to {written} bytes, manifest says {obj.raw_size}")
