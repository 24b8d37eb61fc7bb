"""Parallel logical backups: ``pg_dump -Fd -j N``, each file of the dump its own object.

The dump runs in the snapshot of a REPEATABLE READ transaction that also counts every
table's rows (as :mod:`drkit.backup.logical` does for the custom format), so the row
counts in the manifest are exactly the rows in the dump.  pg_dump writes the directory
into a private local spool; while it runs, every file it has finished is compressed
(and encrypted), stored as ``<db>.dir/<file>[.zst][.age]`` and removed from the spool,
so local disk holds only the files not yet stored.

When is a file finished?  pg_dump (and each of its worker processes) creates, writes and
closes each file of the directory exactly once; ``toc.dat`` comes last.  A file in the
spool that none of the pg_dump processes holds open (their ``/proc/PID/fd``) is
therefore complete.  Each upload also checks the file did not change while it was read
(size, mtime, inode before and after), and once pg_dump has exited the spool must be
empty after the last uploads: a file pg_dump wrote again after it was stored fails the
backup rather than leave a stale object.  When ``/proc`` cannot be read, nothing is
stored before pg_dump exits.  The manifest is written last, as for every backup.

:func:`backup_logical` is the entry point of ``drkit backup`` (and the scheduler): with
``--jobs`` every database uses the directory format; without it, databases larger than
the policy's ``backup.parallel_threshold`` do (with ``backup.jobs`` workers), the others
the custom format of :mod:`drkit.backup.logical`.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from drkit.backup.catalog import CUSTOM, DIRECTORY, Manifest, backup_prefix, write_manifest
from drkit.backup.lock import backup_lock
from drkit.backup.logical import (
    DumpResult,
    DumpSnapshot,
    ProgressCallback,
    ServerReading,
    consistent_fields,
    discard_partial,
    dump_database,
    dump_snapshot,
    new_backup_id,
    object_base_name,
    run_logical_backup,
)
from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, SubprocessError, UsageError
from drkit.pg.connect import connect, first_line
from drkit.pg.conninfo import for_subprocess
from drkit.pg.process import PipeProcess
from drkit.progress import Meter
from drkit.storage.repository import Repository, StoredObject

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
SPOOL_PREFIX = "drkit-dump-"
_SPOOL_RE = re.compile(rf"^{SPOOL_PREFIX}(\d+)-")
TOC = "toc.dat"


@dataclass
class DirectoryDump:
    objects: list[StoredObject]  # toc.dat first
    row_counts: dict[str, int]
    server_version: str
    reading: ServerReading


def backup_logical(
    policy: Policy,
    *,
    databases: list[str] | None = None,
    jobs: int | None = None,
    on_progress: ProgressCallback | None = None,
    repo: Repository | None = None,
) -> Manifest:
    """A logical backup, each database in the format its size (or ``jobs``) calls for."""
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    names = databases or policy.database.database_names()
    plan = plan_jobs(policy, names, jobs)
    if not plan:
        return run_logical_backup(policy, databases=databases, on_progress=on_progress, repo=repo)
    repo = repo or Repository.for_policy(policy)
    repo.check_encryption_available()
    with backup_lock(policy, "logical"):
        return _run_locked(policy, repo, names, plan, on_progress)


def plan_jobs(policy: Policy, names: list[str], jobs: int | None) -> dict[str, int]:
    """The databases to dump in directory format, with their pg_dump job counts."""
    if jobs is not None:
        return dict.fromkeys(names, jobs)
    threshold = policy.backup.parallel_threshold
    if threshold is None:
        return {}
    dsn = policy.database.url.get_secret_value()
    plan = {}
    for name in names:
        with connect(dsn, name) as conn:
            try:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            except psycopg.Error as exc:
                raise DatabaseError(f"size of database {name}: {first_line(exc)}") from None
        if row is not None and int(row[0]) > threshold:
            log.info("database %s is above backup.parallel_threshold: directory format", name)
            plan[name] = policy.backup.jobs
    return plan


def _run_locked(
    policy: Policy,
    repo: Repository,
    names: list[str],
    plan: dict[str, int],
    on_progress: ProgressCallback | None,
) -> Manifest:
    backup_id, started = new_backup_id(repo, "logical")
    log.info("backup %s of %s started", backup_id, ", ".join(names))
    objects: list[StoredObject] = []
    counts: dict[str, dict[str, int]] = {}
    formats: dict[str, str] = {}
    versions: list[str] = []
    readings: list[ServerReading] = []
    try:
        for name in names:
            result: DumpResult | DirectoryDump
            if name in plan:
                result = dump_directory(repo, policy, backup_id, name, plan[name], on_progress)
                objects += result.objects
                formats[name] = DIRECTORY
            else:
                result = dump_database(repo, policy, backup_id, name, on_progress)
                objects.append(result.obj)
                formats[name] = CUSTOM
            counts[name] = result.row_counts
            versions.append(result.server_version)
            readings.append(result.reading)
        manifest = Manifest(
            id=backup_id,
            kind="logical",
            environment=policy.name,
            databases=names,
            server_version=versions[0],
            started_at=started,
            finished_at=datetime.now(UTC),
            objects=objects,
            row_counts=counts,
            dump_formats=formats,
            **consistent_fields(readings),
        )
        write_manifest(repo, manifest)
    except BaseException:
        discard_partial(repo, backup_id)
        raise
    log.info(
        "backup %s finished: %d objects, %d bytes stored", backup_id, len(objects), manifest.size
    )
    return manifest


def spool_root() -> Path:
    return Path(os.environ.get("DRKIT_TMPDIR") or tempfile.gettempdir())


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
    root = spool_root()
    sweep_stale_spools(root)
    path = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=root)).resolve()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dump_directory(
    repo: Repository,
    policy: Policy,
    backup_id: str,
    database: str,
    jobs: int,
    on_progress: ProgressCallback | None = None,
) -> DirectoryDump:
    dsn = policy.database.url.get_secret_value()
    with dump_snapshot(dsn, database) as snap, _spool() as spool:
        return _dump(snap, repo, dsn, backup_id, database, jobs, spool, on_progress)


def _dump(
    snap: DumpSnapshot,
    repo: Repository,
    dsn: str,
    backup_id: str,
    database: str,
    jobs: int,
    spool: Path,
    on_progress: ProgressCallback | None,
) -> DirectoryDump:
    out = spool / "dump"
    conninfo, env = for_subprocess(dsn, database)
    args = [snap.pg_dump, "-Fd", f"--jobs={jobs}", "-Z0", f"--snapshot={snap.snapshot}"]
    # --verbose: pg_dump writes to its stderr pipe often, so it dies of SIGPIPE soon
    # after a killed drkit instead of dumping on into an orphaned spool
    args += ["--verbose", "-f", str(out), "-d", conninfo]
    base = f"{backup_prefix(backup_id)}{object_base_name(database)}.dir/"
    meter = Meter(on_progress, "dump", database, total=snap.db_size, estimate=True)
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
    return DirectoryDump(objects, counts, snap.version, snap.reading)


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
            if not path.is_file() or path.is_symlink() or not _SAFE_NAME.fullmatch(name):
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


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")


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
