"""Logical restore: stream a stored dump back into ``pg_restore``, then check row counts.

Without ``--jobs`` the decoded object streams straight into ``pg_restore
--single-transaction``: if the stored bytes turn out corrupt (their sha256 is checked
at the end of the stream) pg_restore is killed before it commits, so the target is
left as it was.  With ``--jobs N`` the object first lands, verified, in a temporary
file (a parallel pg_restore needs a seekable archive), where the data offsets pg_dump
could not write to a pipe are filled in (:mod:`drkit.pg.archive`); the file is removed
whatever happens.

``latest`` (without ``--database`` or ``--target-db``) puts back every database of the
policy, each from the newest logical backup holding it: after ``drkit backup prod
--database shop`` the newest backup holds only ``shop``, and the main database comes
from the backup before it.  A policy database that no backup holds is refused before
anything is touched (restore the others by name with ``--database``).

``database`` restores one database of a multi-database backup (``--database NAME``).
``tables`` (``--table T``, repeatable) restores named tables with the rules of
:mod:`drkit.restore.tables`, the same as from a physical backup (``--as NEWNAME``,
``--force``, foreign keys, one transaction): the whole dump is restored into a scratch
database built next to the target (:func:`drkit.pg.builddb.build_aside`: it needs
CREATEDB, and room for the database on the target's server, as a physical table restore
needs room for the cluster), so that every constraint holds there as it did, and the
tables are published from there, with their indexes and constraints, by
:func:`drkit.restore.tables.publish_tables`.  ``T`` matches a table named ``T`` in any
schema, ``S.T`` only the one in schema ``S`` (``"a.b".T`` for a schema holding a dot),
checked against the archive's table of contents before anything is made: every name
must match a table, or nothing is restored (exit 2).  The row-count check covers exactly
the tables restored, under the names they were restored as.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from drkit.catalog import (
    Manifest,
    dump_entries,
    list_backups,
    newest_holding,
    resolve_backup,
)
from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, NotFoundError, SafetyRefused, UsageError
from drkit.pg import (
    OffsetFinder,
    PipeProcess,
    Resolved,
    connect,
    count_rows_concurrently,
    describe,
    find_client,
    first_line,
    is_superuser,
    list_file,
    list_tables,
    read_toc,
    resolve,
    restore_args,
    server_major,
    set_data_offsets,
    split_key,
    stream_toc,
    system_acl_entries,
    table_key,
    with_dbname,
)
from drkit.progress import Meter, MeteredReader, OnProgress
from drkit.restore.dirrestore import fetched_directory
from drkit.restore.documents import RestoredDatabase, RestoreDocument, RestoredTable
from drkit.restore.tables import (
    TableChoice,
    TableRestoreResult,
    guard_destinations,
    parse_choice,
    publish_tables,
)
from drkit.storage import Repository, StoredObject
from drkit.streams import CHUNK, WriteBehind, spool_dir

log = logging.getLogger(__name__)


@dataclass
class DatabaseRestore:
    database: str
    target: str  # host:port/db, no password
    backup_id: str = ""  # the backup it came from
    tables: int = 0
    rows: int = 0
    mismatches: list[str] = field(default_factory=list)
    #: --table: each table restored, under the name it was restored as
    restored: list[RestoredTable] = field(default_factory=list)
    dropped_foreign_keys: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    backup_id: str
    databases: list[DatabaseRestore]

    def document(self, duration: float) -> RestoreDocument:
        """The restore's document; ``duration``: the seconds it took, as the caller timed it."""
        return RestoreDocument(
            ok=not any(d.mismatches for d in self.databases),
            backup_id=self.backup_id,
            databases=[
                RestoredDatabase(
                    database=d.database,
                    target=d.target,
                    backup_id=d.backup_id,
                    tables=d.tables,
                    rows=d.rows,
                    mismatches=d.mismatches,
                    restored=list(d.restored),
                    dropped_foreign_keys=d.dropped_foreign_keys,
                )
                for d in self.databases
            ],
            duration_seconds=duration,
            duration=duration,
        )


def ensure_database(dsn: str) -> None:
    """Create the target database if it does not exist (via the ``postgres`` database on
    the same server).  Its name is libpq's: a url without a database (a service file,
    ``PGDATABASE``) names one all the same.  A failure that is not a missing database is
    reported as it is, never answered with a CREATE."""
    name = resolve(dsn).dbname
    try:
        with psycopg.connect(dsn, connect_timeout=15):
            return
    except psycopg.OperationalError as exc:
        failure = first_line(exc)
    try:
        admin = connect(dsn, "postgres")
    except DatabaseError:  # the server is not reachable either: its own reason
        raise DatabaseError(f"cannot connect to {describe(dsn)}: {failure}") from None
    with admin as conn:
        try:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if row is not None:  # it exists: the first connection failed for its own reason
                raise DatabaseError(f"cannot connect to {describe(dsn)}: {failure}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot create database {name}: {first_line(exc)}") from None
    log.info("created database %s", describe(dsn))


def user_table_count(dsn: str) -> int:
    with connect(dsn) as conn:
        return len(list_tables(conn))


def restore_targets(
    policy: Policy, manifest: Manifest, target_db: str | None, database: str | None = None
) -> list[tuple[StoredObject, str]]:
    dumps = dump_entries(manifest)  # one per database, whatever its dump format
    if database is not None:
        dumps = [o for o in dumps if o.database == database]
        if not dumps:
            raise UsageError(
                f"backup {manifest.id} does not hold database {database} (it holds "
                f"{', '.join(manifest.databases) or 'none'}): pick another backup"
            )
    if target_db is not None and len(dumps) > 1:
        raise UsageError(
            f"backup {manifest.id} holds {len(dumps)} databases; --target-db takes one: "
            "pick it with --database NAME (or restore without --target-db to put each back "
            "in its own database)"
        )
    base = policy.database.url.get_secret_value()
    return [(o, target_db or with_dbname(base, o.database or "")) for o in dumps]


def restore_logical(
    policy: Policy,
    ref: str | None,
    *,
    target_db: str | None = None,
    database: str | None = None,
    tables: list[str] | None = None,
    rename: str | None = None,
    jobs: int = 1,
    force: bool = False,
    on_progress: OnProgress | None = None,
    repo: Repository | None = None,
) -> RestoreResult:
    """Restore logical backup ``ref`` (an ID, ``latest`` or None) of ``policy``'s
    environment; row counts are compared with the manifest's.  ``tables`` and ``rename``
    (``--as``): see :mod:`drkit.restore.tables`."""
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    choice = parse_choice(tables or [], rename, force)
    wanted = choice.tables
    repo = repo or Repository.for_policy(policy)
    # latest: the newest *logical* backup, even when a base backup is newer
    manifest = resolve_backup(
        repo,
        ref,
        kinds=("logical",),
        database=database,
        other_kind_hint=f"restore a physical one with drkit restore {policy.name} "
        "--point-in-time TS --pgdata DIR",
    )
    targets = [
        (o, dsn, manifest) for o, dsn in restore_targets(policy, manifest, target_db, database)
    ]
    if (ref or "latest") == "latest" and database is None and target_db is None:
        targets += _other_databases_of_latest(policy, repo, manifest)
    if wanted and len(targets) > 1:
        raise UsageError(
            f"backup {manifest.id} holds {len(targets)} databases: --table needs --database NAME"
        )
    result = RestoreResult(manifest.id, [])
    if wanted:
        ((obj, dsn, source),) = targets
        ensure_database(dsn)
        guard_destinations(dsn, choice, [(s, t) for s, t in wanted if s is not None])
        result.databases.append(_restore_tables(repo, obj, dsn, source, choice, jobs, on_progress))
        targets = []  # restored: only the row counts are left to judge
    # Every guard first, before anything is touched.
    for obj, dsn, _source in targets:
        ensure_database(dsn)
        if not force and user_table_count(dsn) > 0:
            raise SafetyRefused(
                f"database {describe(dsn)} already holds tables: restoring {obj.database} over "
                "it needs --force (its objects of the same name are dropped and recreated)"
            )
    for obj, dsn, source in targets:
        name = obj.database or resolve(dsn).dbname
        expected = source.row_counts.get(name, {})
        restore_one(
            repo,
            obj,
            dsn,
            jobs=jobs,
            clean=force,
            on_progress=on_progress,
            members=source.directory_members(name),
        )
        with Meter(on_progress, "row counts", name, unit="rows"):
            outcome = compare_counts(dsn, expected, jobs)
        outcome.database = name
        outcome.backup_id = source.id
        result.databases.append(outcome)
    failures = [m for d in result.databases for m in d.mismatches]
    if failures:
        raise CheckFailed(
            f"restore of {manifest.id}: row counts differ from the manifest: "
            + "; ".join(failures[:5])
            + (f" (and {len(failures) - 5} more)" if len(failures) > 5 else "")
        )
    return result


def _other_databases_of_latest(
    policy: Policy, repo: Repository, latest: Manifest
) -> list[tuple[StoredObject, str, Manifest]]:
    """The policy databases ``latest`` does not hold, each from the newest logical backup
    holding it; refuses (nothing touched yet) when a policy database has none."""
    missing = [d for d in policy.database.database_names() if d not in latest.databases]
    if not missing:
        return []
    logical = list_backups(repo, "logical")
    base = policy.database.url.get_secret_value()
    out = []
    for database in missing:
        source = newest_holding(logical, database, "logical")
        obj = next((o for o in source.objects if o.database == database), None) if source else None
        if source is None or obj is None:
            raise NotFoundError(
                f"no logical backup in {repo.location} holds database {database}: restore the "
                f"others one by one with --database NAME, or run drkit backup {policy.name}"
            )
        out.append((obj, with_dbname(base, database), source))
    return out


def restore_one(
    repo: Repository,
    obj: StoredObject,
    dsn: str,
    *,
    jobs: int,
    clean: bool,
    on_progress: OnProgress | None = None,
    members: list[StoredObject] | None = None,
) -> None:
    """Restore one dump into ``dsn``.  ``members``: the objects of a directory-format
    dump (``obj`` is one of them).

    A role that is not a superuser restores without the dump's grants on system objects
    (:mod:`drkit.pg.pgrestore`), which only a superuser could make."""
    with connect(dsn) as conn:
        major = server_major(conn)
        superuser = is_superuser(conn)
    pg_restore = find_client("pg_restore", major)
    what = f"pg_restore of {obj.database} into {describe(dsn)}"
    database = obj.database or ""
    # the manifest knows the decoded size: streamed, pg_restore reads it all; with a
    # temporary file (--jobs) the fetch reads it all, then pg_restore runs
    streamed = jobs == 1 and members is None
    progress = Meter(
        on_progress, "pg_restore" if streamed else "fetch", database, total=obj.raw_size
    )
    if not streamed:  # a file or a directory: fetched whole and verified, then restored
        fetched = (
            fetched_directory(repo, members, jobs=jobs, progress=progress)
            if members is not None
            else _fetched(repo, obj, progress)
        )
        with progress, fetched as local, Meter(on_progress, "pg_restore", database):
            restore_archive(
                pg_restore, local, dsn, jobs=jobs, clean=clean, superuser=superuser, what=what
            )
        return
    with progress, repo.open_decoded(obj) as stream:
        head = b""
        listing_of: contextlib.AbstractContextManager[Path | None] = contextlib.nullcontext()
        if not superuser:
            toc, head = stream_toc(pg_restore, stream)
            listing_of = _listing(superuser, toc, what)
        with listing_of as listing:
            args, env = restore_args(
                pg_restore, dsn, listing=listing, keep_owners=True, clean=clean
            )
            with PipeProcess(args, env=env, what=what, stdin=-1) as proc:
                try:
                    chunk = head or stream.read(CHUNK)
                    while chunk:
                        proc.stdin.write(chunk)
                        progress(len(chunk))
                        chunk = stream.read(CHUNK)
                except BrokenPipeError:
                    proc.wait()  # pg_restore died: report its own error
                    raise
                proc.wait()


def restore_archive(
    pg_restore: str,
    archive: Path,
    dsn: str,
    *,
    jobs: int,
    clean: bool = False,
    superuser: bool,
    what: str,
) -> None:
    """``pg_restore`` of a local archive (a file or a directory) into ``dsn`` as a real
    restore runs it: owners and privileges as the dump says, but for a role that is not a
    ``superuser`` without the grants on system objects."""
    toc = "" if superuser else read_toc(pg_restore, archive)
    with _listing(superuser, toc, what) as listing:
        args, env = restore_args(
            pg_restore,
            dsn,
            listing=listing,
            jobs=jobs,
            keep_owners=True,
            clean=clean,
            archive=archive,
        )
        with PipeProcess(args, env=env, what=what) as proc:
            proc.wait()


@contextlib.contextmanager
def _listing(superuser: bool, toc: str, what: str) -> Iterator[Path | None]:
    """The ``-L`` list a restore as this role takes: None (everything) for a superuser;
    else without the grants on system objects, each named in the log."""
    if superuser:
        yield None
        return
    for entry in system_acl_entries(toc):
        log.warning(
            "%s: grants on %s left out (the role is not a superuser; a superuser grants "
            "them in the target database)",
            what,
            entry,
        )
    with list_file(toc, (), system_acls=False) as path:
        yield path


@contextlib.contextmanager
def _fetched(repo: Repository, obj: StoredObject, progress: Meter) -> Iterator[Path]:
    """The decoded, verified dump in a private temporary file, removed afterwards, with
    the data offsets a pipe-written dump lacks filled in (drkit.pg.archive)."""
    fd, tmp_name = tempfile.mkstemp(prefix="drkit-restore-", suffix=".dump", dir=spool_dir())
    tmp = Path(tmp_name)
    finder = OffsetFinder()
    try:
        # a thread writes while the next chunk is decoded: the file's writes (page cache,
        # throttled by the disk) took as long as decoding and checking
        with (
            os.fdopen(fd, "wb") as out,
            repo.open_decoded(obj) as stream,
            WriteBehind(out.write) as behind,
        ):
            reader = MeteredReader(stream, progress)
            while chunk := reader.read(CHUNK):
                behind.write(chunk)
                finder.feed(chunk)
        progress.finish()
        if finder.apply(tmp) is None:  # not proven while streaming: the file's own pass
            set_data_offsets(tmp)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


#: what ``pg_restore -t`` matches (pg_backup_archiver.c, _tocEntryRequired)
TABLE_ENTRY_KINDS = (
    "TABLE DATA",
    "TABLE",
    "SEQUENCE SET",
    "SEQUENCE",
    "MATERIALIZED VIEW DATA",
    "MATERIALIZED VIEW",
    "VIEW",
    "FOREIGN TABLE",
)
_TOC_LINE = re.compile(r"^\d+; \d+ \d+ (" + "|".join(TABLE_ENTRY_KINDS) + r") (.*)$")


def select_table_entries(
    toc: str, tables: list[tuple[str | None, str]]
) -> tuple[list[str], set[tuple[str, str]]]:
    """The lines of ``pg_restore -l`` output that ``tables`` select, and the
    (schema, name) pairs they restore.  Raises UsageError naming any table not found."""
    chosen: list[str] = []
    restored: set[tuple[str, str]] = set()
    found: set[tuple[str | None, str]] = set()
    for line in toc.splitlines():
        match = _TOC_LINE.match(line)
        if match is None:
            continue
        rest = match.group(2)  # "namespace tag owner" (names may hold spaces)
        for schema, table in tables:
            if schema is not None:
                hit = rest.startswith(f"{schema} {table} ")
                pair = (schema, table)
            else:
                namespace, _, tail = rest.partition(" ")
                hit = tail.startswith(f"{table} ")
                pair = (namespace, table)
            if hit:
                chosen.append(line)
                restored.add(pair)
                found.add((schema, table))
                break
    missing = [t for t in tables if t not in found]
    if missing:
        names = ", ".join(table_key(s, t) if s else t for s, t in missing)
        raise UsageError(f"the backup holds no table {names}: nothing restored")
    return chosen, restored


def _restore_tables(
    repo: Repository,
    obj: StoredObject,
    dsn: str,
    source: Manifest,
    choice: TableChoice,
    jobs: int,
    on_progress: OnProgress | None,
) -> DatabaseRestore:
    """The chosen tables of one dump into ``dsn`` (see the module docstring), their
    rows checked against the manifest's counts."""
    from drkit.pg import build_aside  # the scratch database next to the target

    with connect(dsn) as conn:
        major = server_major(conn)
        superuser = is_superuser(conn)
        reached = Resolved.of(conn.pgconn)
    pg_restore = find_client("pg_restore", major)
    name = obj.database or reached.dbname
    members = source.directory_members(name)
    progress = Meter(on_progress, "fetch", name, total=obj.raw_size)
    fetched = (
        fetched_directory(repo, members, jobs=jobs, progress=progress)
        if members is not None
        else _fetched(repo, obj, progress)
    )
    result = TableRestoreResult(
        backup_id=source.id,
        target=source.id,
        reached_at=source.consistent_at,
        database=name,
        target_db=reached.describe(),
        replaced=choice.rename is None and choice.force,
    )
    with fetched as local:
        # every name must be in the backup before a scratch database is made
        select_table_entries(read_toc(pg_restore, local), choice.tables)
        with build_aside(dsn, force=False, scratch=True) as build:
            what = f"pg_restore of {name} into a scratch database next to {reached.describe()}"
            with Meter(on_progress, "pg_restore", name):
                restore_archive(
                    pg_restore, local, build.dsn, jobs=jobs, superuser=superuser, what=what
                )
            publish_tables(build.dsn, dsn, choice, result, on_progress)
    expected = source.row_counts.get(name, {})
    outcome = DatabaseRestore(database=reached.dbname, target=reached.describe())
    for table in result.tables:
        want = expected.get(table.source)
        if want is not None and want != table.rows:
            outcome.mismatches.append(f"{table.table}: expected {want} rows, found {table.rows}")
        outcome.restored.append(table)
    outcome.tables = len(result.tables)
    outcome.rows = sum(t.rows for t in result.tables)
    outcome.dropped_foreign_keys = result.dropped_foreign_keys
    return outcome


def compare_counts(dsn: str, expected: dict[str, int], jobs: int = 1) -> DatabaseRestore:
    with connect(dsn) as conn:
        reached = Resolved.of(conn.pgconn)  # the server the restore went to, as libpq says
        present = {table_key(s, t) for s, t in list_tables(conn)}
    outcome = DatabaseRestore(database=reached.dbname, target=reached.describe())
    missing = [k for k in expected if k not in present]
    observed = count_rows_concurrently(dsn, [split_key(k) for k in expected if k in present], jobs)
    for key in missing:
        outcome.mismatches.append(f"{key}: table missing")
    for key, want in expected.items():
        if key in observed and observed[key] != want:
            outcome.mismatches.append(f"{key}: expected {want} rows, found {observed[key]}")
    outcome.tables = len(observed)
    outcome.rows = sum(observed.values())
    return outcome
