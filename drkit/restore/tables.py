"""Tables put back into a live database: ``drkit restore ENV <target> --table S.T
--target-db URL [--as NEWNAME] [--force]``.

The rules (one set, whatever the backup's kind, :func:`parse_choice` and
:func:`guard_destinations`):

* ``--as NEWNAME`` (or ``--as SCHEMA.NEWNAME``) restores one table next to the live one;
  with several ``--table`` it is refused (exit 2): one new name cannot name two tables.
* A table that already exists in the target database under the name it would get is
  never replaced, unless ``--force`` is given without ``--as``; ``--as`` naming an
  existing table is refused even with ``--force`` (exit 4, before anything is done, and
  again by PostgreSQL itself inside the restore's transaction).

From a physical backup (:func:`restore_tables_at`) the cluster is recovered to the
target into a scratch data directory by point-in-time recovery's own code
(:func:`drkit.restore.pitr.restore_point_in_time`: the point reached is checked before
the scratch server is promoted; a recovery that stopped short is never promoted and
nothing reaches the live database).  In the scratch copy, which nobody else sees, the
table is renamed to its new name with its constraints, indexes and owned sequences
(:func:`_rename_aside`: each gets a name free in the target schema, so none collides
with the live table's), then ``pg_dump -t`` writes it, definition and data, with its
indexes, constraints, defaults and triggers; ``pg_restore --single-transaction``
publishes it into the target database: the table appears whole, or not at all.  The
scratch server and its directory are removed afterwards, on failure and Ctrl-C too.

Foreign keys to a table outside the restored set: under ``--as`` they are dropped from
the copy (it is for looking at and taking rows back; it must neither hold rows of the
live table it references in place nor fail on rows deleted since); without ``--as``
they are kept when the referenced table exists in the target database (if a live row
one needs is missing, the restore fails and nothing changes) and dropped when it does
not.  Each one dropped is named in the result and the log.  Foreign keys between
restored tables are kept.  A live table that other tables reference cannot be replaced
(``--force``): PostgreSQL refuses to drop it, the transaction rolls back, and the live
table stays as it was.

The schema a table lives in is created in the target database when it is missing
(before the transaction: an empty schema may remain after a failure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from drkit.catalog import iso
from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, SafetyRefused, UsageError
from drkit.pg import (
    Owner,
    PipeProcess,
    PostgresServer,
    cluster_os_user,
    connect,
    count_rows,
    describe,
    find_client,
    for_subprocess,
    restore_args,
    scratch_directory,
    server_major,
    split_key,
    table_key,
)
from drkit.progress import Meter, OnProgress
from drkit.restore.documents import RestoredTable, TableRestoreDocument
from drkit.restore.target import RecoveryTarget
from drkit.storage import Repository
from drkit.streams import spool_dir

log = logging.getLogger(__name__)

#: PostgreSQL's limit on an identifier, in bytes
NAME_BYTES = 63

TableName = tuple[str | None, str]


@dataclass(frozen=True)
class TableChoice:
    """What ``--table``, ``--as`` and ``--force`` ask for, checked."""

    tables: list[TableName]
    rename: TableName | None = None
    force: bool = False


def parse_table_name(name: str) -> TableName:
    """``--table`` value -> (schema or None for any schema, name)."""
    if not name.strip():
        raise UsageError("--table needs a table name (T or SCHEMA.T)")
    if "." in name:
        schema, table = split_key(name)
        if schema and table:
            return schema, table
    return None, name


def parse_choice(tables: list[str], rename: str | None, force: bool) -> TableChoice:
    """Check ``--table``/``--as``/``--force`` together (exit 2 on a contradiction)."""
    if rename is not None and not tables:
        raise UsageError("--as NEWNAME names the copy of one --table: give the table")
    if rename is not None and len(tables) > 1:
        raise UsageError(
            f"--as names one table and {len(tables)} --table were given: restore them one "
            "at a time, each with its own --as"
        )
    if rename is not None and not rename.strip():
        raise UsageError("--as needs a table name (NEWNAME or SCHEMA.NEWNAME)")
    parsed = [parse_table_name(t) for t in tables]
    new = parse_table_name(rename) if rename else None
    if new is not None and len(new[1].encode()) > NAME_BYTES:
        # PostgreSQL would cut it short: the guard would look at one name, the table get another
        raise UsageError(f"--as {rename}: a table name has at most {NAME_BYTES} bytes")
    return TableChoice(parsed, new, force)


def destination(choice: TableChoice, source: tuple[str, str]) -> tuple[str, str]:
    """Where ``source`` (schema, table) lands in the target database."""
    if choice.rename is None:
        return source
    schema, name = choice.rename
    return (schema or source[0], name)


def guard_destinations(dsn: str, choice: TableChoice, pairs: list[tuple[str, str]]) -> None:
    """Refuse (exit 4) a destination that exists in the target database, unless it is the
    table itself restored over with ``--force`` (no ``--as``); and (exit 1) a destination
    schema the target's role may not create in (:func:`_guard_privileges`)."""
    with connect(dsn) as conn:
        _guard_privileges(conn, dsn, {destination(choice, p)[0] for p in pairs})
        for source in pairs:
            schema, name = destination(choice, source)
            if _relation_oid(conn, schema, name) is None:
                continue
            where = f"{table_key(schema, name)} in {describe(dsn)}"
            if choice.rename is not None:
                raise SafetyRefused(
                    f"{where} already exists: --as never replaces a table; choose a new name"
                )
            if not choice.force:
                raise SafetyRefused(
                    f"{where} already exists: restore it next to the live one with --as "
                    "NEWNAME, or replace it with --force"
                )


def _guard_privileges(conn: psycopg.Connection[Any], dsn: str, schemas: set[str]) -> None:
    """One line naming the privilege the target's role lacks, before anything is changed
    (and, where the schema is known, before the recovery): CREATE on each destination
    schema, or, for one that is missing, CREATE on the database to make it.  A schema
    that exists needs nothing on the database: a role owning only its tables will do."""
    for schema in sorted(schemas):
        row = conn.execute(
            "SELECT current_user, (SELECT has_schema_privilege(oid, 'CREATE') "
            "FROM pg_namespace WHERE nspname = %s), "
            "has_database_privilege(current_database(), 'CREATE')",
            (schema,),
        ).fetchone()
        assert row is not None
        user, on_schema, on_database = str(row[0]), row[1], bool(row[2])
        where = f"table restore into {describe(dsn)}: role {user}"
        if on_schema is None and not on_database:
            raise DatabaseError(
                f"{where} cannot create the missing schema {schema} (no CREATE on the "
                "database): create the schema for it first, or grant it CREATE on the database"
            )
        if on_schema is False:
            raise DatabaseError(
                f"{where} has no CREATE on schema {schema}: grant it, or restore as the "
                "schema's owner"
            )


def _missing_schemas(conn: psycopg.Connection[Any], schemas: set[str]) -> list[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (sorted(schemas),)
    ).fetchall()
    return sorted(schemas - {str(r[0]) for r in rows})


@dataclass
class TableRestoreResult:
    backup_id: str
    target: str  # the recovery target, as pitr labels it
    reached_at: datetime | None
    database: str  # the database of the backup the tables came from
    target_db: str  # host:port/db restored into (no password)
    replaced: bool
    tables: list[RestoredTable] = field(default_factory=list)
    dropped_foreign_keys: list[str] = field(default_factory=list)
    scratch: Literal["removed", "cleanup failed"] = "removed"

    def document(self, duration: float) -> TableRestoreDocument:
        """The restore's document; ``duration``: the seconds it took, as the caller timed it."""
        return TableRestoreDocument(
            ok=True,
            backup_id=self.backup_id,
            target=self.target,
            reached_at=iso(self.reached_at),
            database=self.database,
            target_db=self.target_db,
            replaced=self.replaced,
            tables=list(self.tables),
            dropped_foreign_keys=list(self.dropped_foreign_keys),
            scratch_cluster=self.scratch,
            duration_seconds=duration,
        )


class _ScratchWatch:
    """The :class:`~drkit.restore.RecoveryObserver` of a table restore: it is handed the
    scratch server before it starts, so that it is torn down whatever happens."""

    pause_at: str | None = None

    def __init__(self) -> None:
        self.server: PostgresServer | None = None

    def on_server(self, server: PostgresServer) -> None:
        self.server = server

    def on_paused(self, result: Any) -> None:  # never called: no pause_at
        return None


def restore_tables_at(
    policy: Policy,
    point: RecoveryTarget,
    choice: TableChoice,
    target_db: str,
    *,
    database: str | None = None,
    timeline: str | int = "current",
    repo: Repository | None = None,
    on_progress: OnProgress | None = None,
) -> TableRestoreResult:
    """Recover ``policy``'s cluster to ``point`` in a scratch directory, then publish the
    chosen tables of ``database`` into ``target_db`` (see the module docstring)."""
    from drkit.restore.pitr import restore_point_in_time  # psycopg, the WAL package

    names = policy.database.database_names()
    if database is None and len(names) > 1:
        raise UsageError(
            f"the policy has {len(names)} databases ({', '.join(names)}): say which one the "
            "tables are in with --database NAME"
        )
    database = database or names[0]
    known = [(s, t) for s, t in choice.tables if s is not None]
    guard_destinations(target_db, choice, known)  # before hours of recovery
    owner = Owner.cluster(cluster_os_user())
    work = scratch_directory("drkit-tables-", owner)
    watch = _ScratchWatch()
    try:
        recovered = restore_point_in_time(
            policy,
            None,
            work / "data",
            point=point,
            target_action="promote",
            archive=False,
            timeline=timeline,
            repo=repo,
            on_progress=on_progress,
            observer=watch,
        )
        assert watch.server is not None, "recovery started no server"
        source = watch.server.dsn(database)
        result = TableRestoreResult(
            backup_id=recovered.backup_id,
            target=recovered.target,
            reached_at=recovered.reached_at,
            database=database,
            target_db=describe(target_db),
            replaced=choice.rename is None and choice.force,
        )
        publish_tables(source, target_db, choice, result, on_progress)
    finally:
        if watch.server is not None:
            watch.server.destroy()
        shutil.rmtree(work, ignore_errors=True)
    if (watch.server is not None and watch.server.is_running()) or work.exists():
        result.scratch = "cleanup failed"
        log.error("table restore: the scratch cluster in %s could not be removed", work)
    return result


def publish_tables(
    source: str,
    target_db: str,
    choice: TableChoice,
    result: TableRestoreResult,
    on_progress: OnProgress | None = None,
) -> None:
    """Move the chosen tables from ``source`` (a scratch database drkit may change) into
    ``target_db`` in one transaction, renamed as ``choice`` says; fills ``result``."""
    with connect(source) as conn:
        pairs = [_resolve(conn, t, source) for t in choice.tables]
        counts = count_rows(conn, pairs)
        guard_destinations(target_db, choice, pairs)
        with connect(target_db) as live:
            schemas = {destination(choice, p)[0] for p in pairs}
            taken = _names_in(live, schemas | _referenced_schemas(conn, pairs))
        # under --as a foreign key to another table is dropped; else kept when the table
        # it references exists in the target (or is restored with it)
        keep = None if choice.rename is not None else {*taken, *pairs}
        with conn.transaction():
            for pair in pairs:
                result.dropped_foreign_keys += _drop_foreign_keys(conn, pair, keep)
        if choice.rename is not None:
            (pair,) = pairs
            _rename_aside(conn, pair, destination(choice, pair), taken)
        major = server_major(conn)
    moved = [destination(choice, p) for p in pairs]
    with connect(target_db) as live:
        # only a missing schema is created: CREATE SCHEMA IF NOT EXISTS asks for CREATE
        # on the database even when the schema exists
        for schema in _missing_schemas(live, {s for s, _ in moved}):
            live.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        target_major = server_major(live)
    with _dumped(source, moved, major) as dump, Meter(on_progress, "pg_restore", "tables"):
        pg_restore = find_client("pg_restore", max(major, target_major))
        args, env = restore_args(
            pg_restore,
            target_db,
            keep_owners=True,
            clean=choice.rename is None and choice.force,
            archive=dump,
        )
        with PipeProcess(args, env=env, what=f"pg_restore into {describe(target_db)}") as proc:
            proc.wait()
    with connect(target_db) as live:
        published = count_rows(live, moved)
    for pair, where in zip(pairs, moved, strict=True):
        want, got = counts[table_key(*pair)], published.get(table_key(*where))
        if got != want:
            raise CheckFailed(
                f"{table_key(*where)} in {describe(target_db)} holds {got} rows, the "
                f"recovered {table_key(*pair)} {want}: check the target database"
            )
        result.tables.append(
            RestoredTable(source=table_key(*pair), table=table_key(*where), rows=want)
        )


def _resolve(conn: psycopg.Connection[Any], wanted: TableName, dsn: str) -> tuple[str, str]:
    """(schema, table) of a ``--table`` in the recovered database, or exit 2."""
    schema, name = wanted
    rows = conn.execute(
        "SELECT n.nspname, c.relkind = 'p' OR EXISTS (SELECT 1 FROM pg_inherits i "
        "WHERE i.inhparent = c.oid) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relname = %s AND c.relkind IN ('r', 'p') "
        "AND (%s::text IS NULL OR n.nspname = %s) ORDER BY 1",
        (name, schema, schema),
    ).fetchall()
    label = table_key(schema, name) if schema else name
    if not rows:
        raise UsageError(f"the backup holds no table {label}: nothing restored")
    if len(rows) > 1:
        schemas = ", ".join(str(r[0]) for r in rows)
        raise UsageError(
            f"table {label} is in several schemas ({schemas}): name it as SCHEMA.{name}"
        )
    if rows[0][1]:  # its rows live in other tables, which pg_dump -t leaves out
        raise UsageError(
            f"table {label} has partitions or child tables: restore each of them by name "
            "(nothing restored)"
        )
    return str(rows[0][0]), name


def _relation_oid(conn: psycopg.Connection[Any], schema: str, name: str) -> int | None:
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return int(row[0]) if row is not None else None


def _referenced_schemas(conn: psycopg.Connection[Any], pairs: list[tuple[str, str]]) -> set[str]:
    """The schemas of the tables the foreign keys of ``pairs`` reference."""
    rows = conn.execute(
        "SELECT DISTINCT n.nspname FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.contype = 'f' AND k.conrelid "
        "= ANY(SELECT c2.oid FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace "
        "WHERE (n2.nspname, c2.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))",
        ([s for s, _ in pairs], [t for _, t in pairs]),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _names_in(conn: psycopg.Connection[Any], schemas: set[str]) -> set[tuple[str, str]]:
    """Every relation name (tables, indexes, sequences...) of these schemas."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)",
        (sorted(schemas),),
    ).fetchall()
    return {(str(s), str(r)) for s, r in rows}


def free_name(old: str, table: str, new: str, schema: str, taken: set[tuple[str, str]]) -> str:
    """A name for ``old`` (a constraint, index or sequence of ``table``) on the copy
    ``new``: ``table``'s prefix replaced by ``new`` (``orders_pkey`` ->
    ``orders_old_pkey``), else ``new_`` prepended; a counter appended while the name is
    taken in ``schema``; never longer than PostgreSQL keeps."""
    base = new + old[len(table) :] if old.startswith(table) else f"{new}_{old}"
    for n in range(1000):
        suffix = f"_{n}" if n else ""
        room = NAME_BYTES - len(suffix.encode())
        head = base.encode()[:room].decode("utf-8", "ignore")
        candidate = head + suffix
        if (schema, candidate) not in taken:
            taken.add((schema, candidate))
            return candidate
    raise UsageError(f"no free name for {old} in schema {schema}: rename the live objects")


def _rename_aside(
    conn: psycopg.Connection[Any],
    source: tuple[str, str],
    wanted: tuple[str, str],
    taken: set[tuple[str, str]],
) -> None:
    """In the scratch database: rename ``source`` to ``wanted`` with its constraints,
    indexes and owned sequences on names free in the target (``taken``: its names, and
    the scratch schema's)."""
    schema, table = source
    new_schema, new = wanted
    with conn.transaction():
        oid = _relation_oid(conn, schema, table)
        assert oid is not None
        taken |= _names_in(conn, {new_schema})
        taken.add(wanted)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(new_schema)))
        if new_schema != schema:
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(
                    sql.Identifier(schema), sql.Identifier(table), sql.Identifier(new_schema)
                )
            )
        # indexes that back no constraint of the table, and its owned sequences: listed
        # before the constraints are renamed (renaming one renames its index)
        others = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c WHERE c.oid IN ("
            " SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = %(t)s AND NOT EXISTS"
            "  (SELECT 1 FROM pg_constraint k WHERE k.conrelid = %(t)s"
            "   AND k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))"
            " UNION SELECT objid FROM pg_depend WHERE classid = 'pg_class'::regclass"
            "  AND refobjid = %(t)s AND deptype IN ('a', 'i'))"
            " AND c.relkind IN ('i', 'I', 'S') ORDER BY 1",
            {"t": oid},
        ).fetchall()
        relation = sql.SQL("{}.{}").format(sql.Identifier(new_schema), sql.Identifier(table))
        for (name,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s ORDER BY 1", (oid,)
        ).fetchall():
            fresh = free_name(str(name), table, new, new_schema, taken)
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    relation, sql.Identifier(str(name)), sql.Identifier(fresh)
                )
            )
        for name, kind in others:
            fresh = free_name(str(name), table, new, new_schema, taken)
            word = sql.SQL("SEQUENCE" if kind == "S" else "INDEX")
            conn.execute(
                sql.SQL("ALTER {} {}.{} RENAME TO {}").format(
                    word,
                    sql.Identifier(new_schema),
                    sql.Identifier(str(name)),
                    sql.Identifier(fresh),
                )
            )
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(relation, sql.Identifier(new)))


def _drop_foreign_keys(
    conn: psycopg.Connection[Any],
    source: tuple[str, str],
    keep: set[tuple[str, str]] | None,
) -> list[str]:
    """In the scratch database: drop the foreign keys of ``source`` to tables outside
    ``keep`` (None: to any other table); returns each as ``constraint -> table``."""
    schema, table = source
    oid = _relation_oid(conn, schema, table)
    assert oid is not None
    dropped = []
    for name, ref_schema, ref_table in conn.execute(
        "SELECT k.conname, n.nspname, c.relname FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE k.conrelid = %s AND k.contype = 'f' AND k.confrelid <> k.conrelid ORDER BY 1",
        (oid,),
    ).fetchall():
        referenced = (str(ref_schema), str(ref_table))
        if keep is not None and referenced in keep:
            continue
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} DROP CONSTRAINT {}").format(
                sql.Identifier(schema), sql.Identifier(table), sql.Identifier(str(name))
            )
        )
        dropped.append(f"{name} -> {table_key(*referenced)}")
        log.warning(
            "table restore: foreign key %s of %s to %s left out (%s)",
            name,
            table_key(schema, table),
            table_key(*referenced),
            "the copy is restored under a new name"
            if keep is None
            else "no such table in the target database",
        )
    return dropped


@contextlib.contextmanager
def _dumped(dsn: str, tables: list[tuple[str, str]], major: int) -> Iterator[Path]:
    """``pg_dump -Fc`` of exactly these tables (definition, data, indexes, constraints,
    owned sequences) into a private temporary file, removed afterwards."""
    pg_dump = find_client("pg_dump", major)
    conninfo, env = for_subprocess(dsn)
    fd, name = tempfile.mkstemp(prefix="drkit-tables-", suffix=".dump", dir=spool_dir())
    os.close(fd)
    path = Path(name)
    patterns = [a for s, t in tables for a in ("-t", f"{_pattern(s)}.{_pattern(t)}")]
    args = [pg_dump, "-Fc", "--strict-names", *patterns, "-f", str(path), "-d", conninfo]
    try:
        with PipeProcess(args, env=env, what=f"pg_dump of the tables from {describe(dsn)}") as p:
            p.wait()
        yield path
    finally:
        path.unlink(missing_ok=True)


def _pattern(name: str) -> str:
    """A name as a pg_dump pattern that matches exactly it (quoted: no wildcards)."""
    return '"' + name.replace('"', '""') + '"'
