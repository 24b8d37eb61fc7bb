"""The directory format of a logical backup: ``pg_dump -Fd -j N``, each file of the dump
its own object.

:func:`drkit.backup.logical.dump_database` chooses this format for a database (``--jobs``,
or above the policy's ``backup.parallel_threshold``) and hands :func:`dump_directory`
the database's snapshot (:class:`Snapshot`: its pg_dump, its name, the row counting in
it), so the row counts in the manifest are exactly the rows in the dump, as for the
custom format.  pg_dump writes the directory into a private local spool; while it runs,
every file it has finished is compressed (and encrypted), stored as
``<db>.dir/<file>[.zst][.age]`` and removed from the spool, so local disk holds only the
files not yet stored.

When is a file finished?  pg_dump (and each of its worker processes) creates, writes and
closes each file of the directory exactly once; ``toc.dat`` comes last.  A file in the
spool that none of the pg_dump processes holds open (their ``/proc/PID/fd``) is
therefore complete.  Each upload also checks the file did not change while it was read
(size, mtime, inode before and after), and once pg_dump has exited the spool must be
empty after the last uploads: a file pg_dump wrote again after it was stored fails the
backup rather than leave a stale object.  When ``/proc`` cannot be read, nothing is
stored before pg_dump exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from drkit.errors import CheckFailed, SubprocessError
from drkit.pg import PipeProcess, for_subprocess
from drkit.progress import Meter, OnProgress
from drkit.storage import Repository, StoredObject
from drkit.streams import spool_dir

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
SPOOL_PREFIX = "drkit-dump-"
_SPOOL_RE = re.compile(rf"^{SPOOL_PREFIX}(\d+)-")
TOC = "toc.dat"
#: the names pg_dump gives the files of a dump directory (``toc.dat``, ``1234.dat``)
MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")


class Snapshot(Protocol):
    """What a dump needs of the database's snapshot (a
    :class:`drkit.backup.logical.DumpSnapshot`)."""

    pg_dump: str
    snapshot: str
    db_size: int
    dump_estimate: int | None

    def start_counting(self) -> None: ...

    def counted(self) -> dict[str, int]: ...


def sweep_stale_spools(root: Path) -> None:
    """Remove the spools of drkit processes that no longer run (killed mid-backup)."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _SPOOL_RE.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        log.info("removing %s, left by an interrupted backup", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _spool() -> Iterator[Path]:
    root = spool_dir()
    sweep_stale_spools(root)
    path = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=root)).resolve()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dump_directory(
    snap: Snapshot,
    repo: Repository,
    dsn: str,
    base: str,
    database: str,
    jobs: int,
    on_progress: OnProgress | None = None,
) -> tuple[list[StoredObject], dict[str, int]]:
    """Dump ``database`` in ``snap`` with ``jobs`` workers, each file stored under the
    key prefix ``base`` as soon as it is finished: the objects (``toc.dat`` first) and
    the row counts."""
    with _spool() as spool:
        out = spool / "dump"
        conninfo, env = for_subprocess(dsn, database)
        args = [snap.pg_dump, "-Fd", f"--jobs={jobs}", "-Z0", f"--snapshot={snap.snapshot}"]
        # --verbose: pg_dump writes to its stderr pipe often, so it dies of SIGPIPE soon
        # after a killed drkit instead of dumping on into an orphaned spool
        args += ["--verbose", "-f", str(out), "-d", conninfo]
        meter = Meter(on_progress, "dump", database, total=snap.dump_estimate, estimate=True)
        progress = meter if on_progress else None
        with (
            meter,
            DumpUploader(repo, base, database, jobs, progress) as uploader,
            PipeProcess(args, env=env, what=f"pg_dump of {database}") as dump,
        ):
            snap.start_counting()
            while dump.proc.poll() is None:
                if out.is_dir():
                    uploader.offer(out, finished_only=dump.proc.pid)
                uploader.check()
                time.sleep(POLL_SECONDS)
            try:
                dump.wait()
            except SubprocessError as exc:
                if "no space left on device" in str(exc).lower():
                    raise SubprocessError(
                        f"{exc} (the local spool {spool}: free space there, or set "
                        "DRKIT_TMPDIR to a larger filesystem)"
                    ) from None
                raise
            counts = snap.counted()
            uploader.offer(out, finished_only=None)  # pg_dump is done: every file is whole
            objects = uploader.finish(out)
        return objects, counts


class DumpUploader:
    """Stores finished files of the dump directory, ``jobs`` at a time, then removes them."""

    def __init__(
        self,
        repo: Repository,
        base: str,
        database: str,
        jobs: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._repo = repo
        self._base = base
        self._database = database
        self._progress = progress
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="drkit-up")
        self._submitted: dict[str, Future[StoredObject]] = {}

    def __enter__(self) -> DumpUploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def offer(self, directory: Path, *, finished_only: int | None) -> None:
        """Submit every file not yet submitted that pg_dump (process ``finished_only`` and
        its workers) has finished with; ``None``: pg_dump exited, every file is whole."""
        names = sorted(e.name for e in os.scandir(directory) if e.name not in self._submitted)
        if not names:
            return
        busy = files_held_open(finished_only, directory) if finished_only else set()
        for name in names:
            if busy is None or name in busy:
                continue
            path = directory / name
            if not path.is_file() or path.is_symlink() or not MEMBER_NAME.fullmatch(name):
                raise CheckFailed(f"pg_dump of {self._database} wrote an unexpected {name}")
            self._submitted[name] = self._pool.submit(self._store, path)

    def check(self) -> None:
        """Raise the first upload failure, so the dump stops early."""
        for future in self._submitted.values():
            if future.done() and future.exception() is not None:
                future.result()

    def finish(self, directory: Path) -> list[StoredObject]:
        objects = [f.result() for f in self._submitted.values()]
        left = sorted(os.listdir(directory))
        if left:  # written again after it was stored: the stored object may be stale
            raise CheckFailed(
                f"pg_dump of {self._database} wrote {left[0]} again after it was stored: "
                "backup abandoned, run it again"
            )
        if TOC not in self._submitted:
            raise CheckFailed(f"pg_dump of {self._database} wrote no {TOC}")
        return sorted(objects, key=lambda o: (not _is_toc(o, self._base), o.key))

    def _store(self, path: Path) -> StoredObject:
        before = path.stat()
        with open(path, "rb") as raw:
            obj = self._repo.store(
                self._base + path.name,
                raw,
                database=self._database,
                on_raw_bytes=self._progress,
                size_hint=before.st_size,
            )
        after = path.stat()
        same = (before.st_size, before.st_mtime_ns, before.st_ino) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ino,
        )
        if not same or obj.raw_size != after.st_size:
            raise CheckFailed(
                f"{path.name} of the dump of {self._database} changed while it was stored"
            )
        path.unlink()
        return obj


def _is_toc(obj: StoredObject, base: str) -> bool:
    return obj.key.rsplit("/", 1)[-1].startswith(TOC)


def files_held_open(pid: int, directory: Path) -> set[str] | None:
    """Names in ``directory`` that process ``pid`` or one of its children holds open;
    None when that cannot be known (then no file counts as finished)."""
    try:
        pids = [pid, *_children(pid)]
        prefix = f"{directory}/"
        held: set[str] = set()
        for proc in pids:
            fd_dir = f"/proc/{proc}/fd"
            try:
                fds = os.listdir(fd_dir)
            except FileNotFoundError:  # exited
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"{fd_dir}/{fd}")
                except FileNotFoundError:
                    continue
                if target.startswith(prefix):
                    held.add(target[len(prefix) :].removesuffix(" (deleted)"))
        return held
    except OSError as exc:
        log.debug("cannot see pg_dump's open files (%s): storing after it exits", exc)
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found
