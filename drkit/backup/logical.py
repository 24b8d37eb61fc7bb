"""Logical backups: ``drkit backup ENV``, every database ``pg_dump``'d in a snapshot whose
rows are counted, stored through the repository's encoding, the manifest published last.

One driver (:func:`backup_logical`) for both archive formats, the format being the only
variation: ``pg_dump -Fc`` streamed into one object ``<db>.dump`` (the default), or
with ``--jobs`` (or above the policy's ``backup.parallel_threshold``) ``pg_dump -Fd
-j N``, each file of the dump its own object (:mod:`drkit.backup.dirdump`).

For each database drkit opens a REPEATABLE READ transaction, exports its snapshot, runs
``pg_dump --snapshot`` on it and, while the dump streams, counts every table's rows in
that same snapshot on the exporting connection (:class:`DumpSnapshot`).  The counts in
the manifest are therefore exactly the rows in the dump.  Objects are stored first, the
manifest last; a backup that fails leaves no partial objects behind (best effort).

The statement that takes the snapshot also reads the server's WAL position, timeline
and clock (:class:`ServerReading`); with the cluster's system identifier they are the
backup's consistent point, which orders backups (:mod:`drkit.catalog.order`).  The
backup id and ``started_at`` come from the host clock (the id is the UTC start time and
the kind) and order nothing; the host clock's distance from the server's is recorded
so that a wrong host clock is seen (``drkit backups``, ``check``, ``status``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import psycopg

from drkit.backup.lock import HeldLock, backup_lock
from drkit.catalog import (
    CUSTOM,
    DIRECTORY,
    MANIFEST,
    Manifest,
    backup_prefix,
    make_backup_id,
    measured_skew,
    write_manifest,
)
from drkit.config import Policy
from drkit.errors import DatabaseError, DrkitError, UsageError
from drkit.pg import (
    PipeProcess,
    connect,
    count_rows,
    dump_size_estimate,
    find_client,
    first_line,
    for_subprocess,
    list_tables,
    server_major,
    server_version,
    system_identifier,
    widen_pipe,
)
from drkit.progress import Meter, OnProgress, watched
from drkit.storage import Repository, StoredObject

log = logging.getLogger(__name__)

ProgressCallback = OnProgress  # phase "dump", one item per database, in raw bytes


def object_base_name(database: str) -> str:
    """A database name as a safe object name (``/`` and friends escaped)."""
    return quote(database, safe="") or "_"


@dataclass(frozen=True)
class ServerReading:
    """What the server said at a backup's consistent point."""

    at: datetime  # the server's clock_timestamp()
    lsn: str | None  # its WAL insert position (a standby: its replay position)
    timeline: int | None  # None on a standby: only a primary names its timeline exactly
    system_identifier: str | None  # None when the role may not read pg_control_system()
    clock_skew: float  # the server's clock minus the host's, in seconds

    def manifest_fields(self) -> dict[str, Any]:
        """The :class:`~drkit.catalog.manifests.Manifest` fields this reading fills."""
        return {
            "consistent_at": self.at,
            "consistent_lsn": self.lsn if self.timeline is not None else None,
            "consistent_timeline": self.timeline if self.lsn is not None else None,
            "system_identifier": self.system_identifier,
            "clock_skew": self.clock_skew,
        }


#: the server's WAL position and timeline, in the statement that takes the snapshot
POSITION_SQL = (
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END::text, "
    "CASE WHEN pg_is_in_recovery() THEN NULL "
    "ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END"
)


def read_position(
    conn: psycopg.Connection[Any], sysid: str | None, leading: str = ""
) -> tuple[ServerReading, tuple[Any, ...]]:
    """Read the server's position and clock, timed against the host's, in one statement
    (``leading``: the caller's own constant columns, evaluated in the same statement and
    returned as the tuple)."""
    before = datetime.now(UTC)
    row = conn.execute(
        f"SELECT {leading}{', ' if leading else ''}clock_timestamp(), {POSITION_SQL}"
    ).fetchone()
    after = datetime.now(UTC)
    assert row is not None
    own, (at, lsn, tli) = tuple(row[:-3]), row[-3:]
    server_at: datetime = at.astimezone(UTC)
    reading = ServerReading(
        at=server_at,
        lsn=str(lsn) if lsn is not None else None,
        timeline=int(str(tli), 16) if tli else None,
        system_identifier=sysid,
        clock_skew=measured_skew(before, server_at, after),
    )
    return reading, own


def consistent_fields(readings: list[ServerReading]) -> dict[str, Any]:
    """The manifest fields of a backup of several databases: the earliest reading (its
    data is consistent from there on; every later snapshot is newer)."""
    return min(readings, key=lambda r: r.at).manifest_fields()


@dataclass
class DumpResult:
    """One database's dump: its objects (``toc.dat`` first in the directory format),
    the rows counted in its snapshot, and the server's version and reading."""

    objects: list[StoredObject]
    row_counts: dict[str, int]
    server_version: str
    reading: ServerReading
    format: str  # CUSTOM | DIRECTORY


def new_backup_id(repo: Repository, kind: str, lock: HeldLock) -> tuple[str, datetime]:
    """A fresh id from the host clock (the UTC start time plus the kind): never one that
    exists, complete or not — after the host clock went back, it waits for the next
    second rather than reuse one.  Ids order nothing.  The id is announced on the
    backup's ``lock`` before anything is stored under it, so prune keeps its objects."""
    while True:
        started = datetime.now(UTC).replace(microsecond=0)
        backup_id = make_backup_id(started, kind)
        if not repo.list(backup_prefix(backup_id)):
            lock.announce(backup_id)
            return backup_id, started
        time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)


class DumpSnapshot:
    """One database's dump transaction: the snapshot it exports for pg_dump, and the
    exact row count of every table, counted in that same snapshot while pg_dump runs.

    The connection is put in a read-only REPEATABLE READ transaction, which must stay
    open until pg_dump has attached to the snapshot (the caller rolls it back)."""

    def __init__(
        self, conn: psycopg.Connection[Any], database: str, *, estimate: bool = True
    ) -> None:
        sysid = system_identifier(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # the snapshot, and the server's position and clock when it was taken
        self.reading, row = read_position(
            conn, sysid, "pg_export_snapshot(), pg_database_size(current_database())"
        )
        self.snapshot: str = str(row[0])
        #: pg_database_size: indexes and free space too, an upper bound (storage sizing)
        self.db_size: int = int(row[1])
        #: what the dump should weigh, for progress (None: no honest estimate, or nobody
        #: watches: the estimate may wait for table locks, and the dump waits for it)
        self.dump_estimate: int | None = dump_size_estimate(conn) if estimate else None
        self.version = server_version(conn)
        self.pg_dump = find_client("pg_dump", server_major(conn))
        self._conn = conn
        self._counts: dict[str, int] = {}
        self._error: list[BaseException] = []
        self._counter = threading.Thread(target=self._count, name=f"count-{database}", daemon=True)

    def _count(self) -> None:
        # the tables are listed here, in the snapshot, once pg_dump has started: the
        # list is the snapshot's whenever it is read, and the dump need not wait for it
        try:
            self._counts.update(count_rows(self._conn, list_tables(self._conn)))
        except BaseException as exc:  # surfaced in the caller's thread by counted()
            self._error.append(exc)

    def start_counting(self) -> None:
        """Count the rows in a thread (call once pg_dump has started)."""
        self._counter.start()

    def counted(self) -> dict[str, int]:
        """The row counts, once counted; the counting's own error if it failed."""
        self._counter.join()
        if self._error:
            raise self._error[0]
        return self._counts


@contextlib.contextmanager
def dump_snapshot(dsn: str, database: str, *, estimate: bool = True) -> Iterator[DumpSnapshot]:
    """A :class:`DumpSnapshot` of ``database`` on its own connection, rolled back and
    closed afterwards; a database error becomes one DatabaseError line."""
    conn = connect(dsn, database, autocommit=False)
    try:
        yield DumpSnapshot(conn, database, estimate=estimate)
    except psycopg.Error as exc:
        raise DatabaseError(f"backup of database {database}: {first_line(exc)}") from None
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def dump_database(
    repo: Repository,
    policy: Policy,
    backup_id: str,
    database: str,
    on_progress: ProgressCallback | None = None,
    *,
    jobs: int | None = None,
    by_size: bool = False,
) -> DumpResult:
    """Dump ``database`` in a snapshot of its own: custom format, or with ``jobs`` the
    directory format with that many pg_dump workers; without ``jobs`` and with
    ``by_size``, the format :func:`jobs_for_size` picks for the size read in the snapshot
    (no connection of its own before the dump)."""
    from drkit.backup.dirdump import dump_directory

    dsn = policy.database.url.get_secret_value()
    name = f"{backup_prefix(backup_id)}{object_base_name(database)}"
    with dump_snapshot(dsn, database, estimate=watched(on_progress)) as snap:
        if jobs is None and by_size:
            jobs = jobs_for_size(policy, database, snap.db_size)
        if jobs is None:
            objects, counts = _dump_custom(snap, repo, dsn, f"{name}.dump", database, on_progress)
        else:
            objects, counts = dump_directory(
                snap, repo, dsn, f"{name}.dir/", database, jobs, on_progress
            )
        return DumpResult(
            objects, counts, snap.version, snap.reading, CUSTOM if jobs is None else DIRECTORY
        )


def _dump_custom(
    snap: DumpSnapshot,
    repo: Repository,
    dsn: str,
    key: str,
    database: str,
    on_progress: ProgressCallback | None,
) -> tuple[list[StoredObject], dict[str, int]]:
    """``pg_dump -Fc`` streamed into the one object ``key``."""
    conninfo, env = for_subprocess(dsn, database)
    args = [snap.pg_dump, "-Fc", "-Z0", f"--snapshot={snap.snapshot}", "-d", conninfo]
    meter = Meter(on_progress, "dump", database, total=snap.dump_estimate, estimate=True)
    with PipeProcess(args, env=env, what=f"pg_dump of {database}", stdout=-1) as dump:
        widen_pipe(dump.stdout)
        snap.start_counting()
        obj = repo.store(
            key,
            dump.stdout,  # type: ignore[arg-type]
            database=database,
            on_raw_bytes=meter if on_progress else None,
            # COPY text can outgrow the heap (numbers as digits); indexes are not dumped
            size_hint=2 * snap.db_size,
        )
        dump.wait()
        counts = snap.counted()
    meter.finish()
    return [obj], counts


def backup_logical(
    policy: Policy,
    *,
    databases: list[str] | None = None,
    jobs: int | None = None,
    on_progress: ProgressCallback | None = None,
    repo: Repository | None = None,
) -> Manifest:
    """Back up ``databases`` (default: the policy's), each in the format its size (or
    ``jobs``) calls for, and publish the manifest last."""
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    names = databases or policy.database.database_names()
    repo = repo or Repository.for_policy(policy)
    repo.check_encryption_available()
    with backup_lock(policy, "logical") as lock:  # a second concurrent one: exit 1
        return _run_locked(policy, repo, names, jobs, jobs is None, on_progress, lock)


def run_logical_backup(
    policy: Policy,
    *,
    databases: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
    repo: Repository | None = None,
) -> Manifest:
    """A logical backup of ``databases`` (default: the policy's), every one in the
    custom format whatever its size."""
    names = databases or policy.database.database_names()
    repo = repo or Repository.for_policy(policy)
    repo.check_encryption_available()
    with backup_lock(policy, "logical") as lock:  # a second concurrent one: exit 1
        return _run_locked(policy, repo, names, None, False, on_progress, lock)


def jobs_for_size(policy: Policy, database: str, db_size: int) -> int | None:
    """The pg_dump jobs of a database of ``db_size`` bytes (its ``pg_database_size``):
    the policy's ``backup.jobs`` (directory format) above ``backup.parallel_threshold``,
    else None (custom format)."""
    threshold = policy.backup.parallel_threshold
    if threshold is None or db_size <= threshold:
        return None
    log.info("database %s is above backup.parallel_threshold: directory format", database)
    return policy.backup.jobs


def _run_locked(
    policy: Policy,
    repo: Repository,
    names: list[str],
    jobs: int | None,
    by_size: bool,
    on_progress: ProgressCallback | None,
    lock: HeldLock,
) -> Manifest:
    backup_id, started = new_backup_id(repo, "logical", lock)
    log.info("backup %s of %s started", backup_id, ", ".join(names))
    try:
        results = [
            dump_database(repo, policy, backup_id, name, on_progress, jobs=jobs, by_size=by_size)
            for name in names
        ]
        formats = {name: r.format for name, r in zip(names, results, strict=True)}
        manifest = Manifest(
            id=backup_id,
            kind="logical",
            environment=policy.name,
            databases=names,
            server_version=results[0].server_version,
            started_at=started,
            finished_at=datetime.now(UTC),
            objects=[o for r in results for o in r.objects],
            row_counts={name: r.row_counts for name, r in zip(names, results, strict=True)},
            # recorded once a database is not in the default (custom) format
            dump_formats=formats if DIRECTORY in formats.values() else {},
            **consistent_fields([r.reading for r in results]),
        )
        write_manifest(repo, manifest)
    except BaseException:
        discard_partial(repo, backup_id)
        raise
    log.info(
        "backup %s finished: %d objects, %d bytes stored",
        backup_id,
        len(manifest.objects),
        manifest.size,
    )
    return manifest


def discard_partial(repo: Repository, backup_id: str) -> None:
    """Best effort: remove what a failed backup stored (prune catches what this misses).

    Never a published backup: a prefix that holds a manifest is complete (a backup fails
    before it publishes, so that one is another's, under an id taken twice) and stays."""
    try:
        infos = repo.list(backup_prefix(backup_id))
        if any(info.key.endswith("/" + MANIFEST) for info in infos):
            log.warning("backup %s has a manifest: its objects are left alone", backup_id)
            return
        for info in infos:
            repo.delete(info.key)
    except (DrkitError, OSError) as exc:
        log.warning("could not remove the partial backup %s: %s", backup_id, exc)
