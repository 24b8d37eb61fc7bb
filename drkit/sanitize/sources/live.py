"""The live source: SRC's database, read in one exported snapshot.

:func:`open_live` opens a REPEATABLE READ, read-only transaction on SRC with row-level
security off (and refuses a role that row-level security could hide rows from), and
exports its snapshot; every other read of the run joins that snapshot, so the schema,
the filters, the rows, the originals of left-out rows and the DDL all describe one
moment of SRC.  When the run writes, ``pg_dump --schema-only`` of that snapshot starts at
once and runs while the plan is made.

Rows: one ``COPY (SELECT ... FROM ONLY t WHERE <selection>) TO STDOUT`` per read, each by
its own ``psql`` on its own connection, so tables are read in parallel.  The filters run here, in the
snapshot, on the original rows.  Sequence values are read in the snapshot's transaction
when the DDL is restored, as the copy starts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError, SubprocessError
from drkit.pg import (
    PIPE_SIZE,
    PipeProcess,
    connect,
    describe,
    find_client,
    first_line,
    for_subprocess,
    restore_file,
    server_major,
    widen_pipe,
)
from drkit.sanitize.fit import check_constraints_fit
from drkit.sanitize.guards import require_every_row
from drkit.sanitize.plan import Plan, TablePlan
from drkit.sanitize.schema import Schema, read_schema
from drkit.sanitize.sources.base import NOT_COPIED, Read, Rows, SequenceValue
from drkit.sanitize.strategies import Compiler
from drkit.sanitize.subset import Selection, select_rows

_APP = "drkit-sanitize"


@contextlib.contextmanager
def open_live(dsn: str, name: str, *, ddl: bool) -> Iterator[LiveSource]:
    """SRC's database ``dsn`` (environment ``name``) in one snapshot; ``ddl``: the run
    will restore SRC's DDL (its schema dump starts now)."""
    token = f"{_APP}-{secrets.token_hex(8)}"
    with contextlib.ExitStack() as stack:
        conn, snapshot = stack.enter_context(_snapshot(dsn, token))
        require_every_row(conn, name)
        dump = None
        if ddl:  # pg_dump --schema-only reads the same snapshot while the plan is made
            dump = stack.enter_context(_schema_dump(dsn, snapshot, server_major(conn)))
        yield LiveSource(dsn, conn, snapshot, dump)


class LiveSource:
    label = "live"
    concurrent = True

    def __init__(
        self,
        dsn: str,
        conn: psycopg.Connection[Any],
        snapshot: str,
        dump: _SchemaDump | None,
    ) -> None:
        self._dsn = dsn
        self._conn = conn  # holds the snapshot
        self._snapshot = snapshot
        self._dump = dump
        self._schema: Schema | None = None
        self._sequences: list[SequenceValue] = []
        self._psql: str | None = None  # found at the first read

    def schema(self) -> Schema:
        self._schema = read_schema(self._conn)
        return self._schema

    def check_fit(self, plan: Plan, compiler: Compiler) -> None:
        check_constraints_fit(self._conn, plan, compiler)

    def select(self, plan: Plan) -> dict[str, Selection]:
        return select_rows(self._conn, plan, plan.rules.subset)

    def count(self, table: TablePlan, selection: Selection) -> int | None:
        if selection.none:
            return 0
        query = sql.SQL("SELECT count(*) FROM ONLY {} t").format(
            sql.Identifier(table.table.schema, table.table.name)
        )
        where = selection.where_sql("t")
        if where is not None:
            query = query + sql.SQL(" WHERE ") + where
        row = self._conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    def pre_data(self, dsn: str) -> None:
        self._sequences = self._read_sequences()
        self._restore(dsn, "pre-data", jobs=1)

    def rows(self, reads: Sequence[Read], *, only_these: bool = False) -> Iterator[Rows]:
        for read in reads:
            yield Rows(read, read.columns, functools.partial(self._copy_out, read))

    def post_data(self, dsn: str, jobs: int) -> None:
        self._conn.rollback()  # the snapshot is no longer needed
        self._restore(dsn, "post-data", jobs=jobs)

    def sequences(self) -> list[SequenceValue]:
        return self._sequences

    # -- pieces ---------------------------------------------------------------------

    def _restore(self, dsn: str, section: str, jobs: int) -> None:
        assert self._dump is not None, "opened without ddl"
        archive = self._dump.ready()
        pg_restore = find_client("pg_restore", self._dump.major)
        restore_file(pg_restore, archive, dsn, section=section, jobs=jobs, drop=NOT_COPIED)

    def _read_sequences(self) -> list[SequenceValue]:
        assert self._schema is not None, "the schema is read first"
        values = []
        for nsp, name in self._schema.sequences:
            ident = sql.Identifier(nsp, name)
            query = sql.SQL("SELECT last_value, is_called FROM {}").format(ident)
            row = self._conn.execute(query).fetchone()
            if row is not None:
                values.append((ident.as_string(self._conn), int(row[0]), bool(row[1])))
        return values

    @contextlib.contextmanager
    def _copy_out(self, read: Read) -> Iterator[Iterable[bytes | bytearray | memoryview]]:
        """A read's COPY on a connection of its own, in the run's snapshot, by ``psql``:
        psql (C) takes the server's rows one by one and the run reads them from a pipe a
        MiB at a time (psycopg hands COPY text one row per call: at millions of rows,
        seconds of the run's Python).  The statements reach psql on its stdin, never in
        its argument list, which every local user may read (a row filter's literals, the
        snapshot).  psql ends with the run: its next write to the pipe of a run that is
        gone kills it (SIGPIPE)."""
        if self._psql is None:
            self._psql = find_client("psql", server_major(self._conn))
        conninfo, env = for_subprocess(self._dsn)
        statements = [
            sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self._snapshot)),
            sql.SQL("SET row_security = off"),
            _copy_query(read),
        ]
        script = "".join(f"{statement.as_string(self._conn)};\n" for statement in statements)
        args = [self._psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1"]
        args += [f"--dbname={conninfo}", "--file=-"]
        what = f"reading {read.table.key} from {describe(self._dsn)}"
        with PipeProcess(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, what="psql"
        ) as process:
            # (psql writes nothing before it has read the COPY, the script's last statement)
            with contextlib.suppress(BrokenPipeError):  # psql gone: its exit says why
                process.stdin.write(script.encode())
            process.stdin.close()
            widen_pipe(process.stdout)
            yield _chunks(process, what)


def _chunks(process: PipeProcess, what: str) -> Iterator[bytes]:
    """What ``process`` writes to its stdout, as it comes (a pipe's worth at most at a
    time); once it ends, its exit is checked before the last chunk counts as the end:
    a read cut short (a lost connection, an error) fails, never ends early."""
    fd = process.stdout.fileno()
    while chunk := os.read(fd, PIPE_SIZE):
        yield chunk
    try:
        process.wait()
    except SubprocessError:
        raise DatabaseError(f"{what}: {_error_line(process.stderr_tail())}") from None


_PSQL_PREFIX = re.compile(r"^psql:(?:<stdin>:\d+:)?\s*(?:error:\s*)?(?:(?:ERROR|FATAL):\s*)?")


def _error_line(line: str) -> str:
    """psql's error line without its prefixes (``psql:<stdin>:4: ERROR:  ``)."""
    return _PSQL_PREFIX.sub("", line)


def _copy_query(read: Read) -> sql.Composed:
    table = read.table.table
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in read.columns)
    base = sql.SQL("SELECT {} FROM ONLY {} t").format(
        columns, sql.Identifier(table.schema, table.name)
    )
    where = read.selection.where_sql("t")
    if where is not None:
        base = base + sql.SQL(" WHERE ") + where
    return sql.SQL("COPY ({}) TO STDOUT").format(base)


@contextlib.contextmanager
def _snapshot(dsn: str, token: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    conn = connect(dsn, autocommit=False, application_name=token)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET row_security = off")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        yield conn, str(row[0])
    except psycopg.Error as exc:
        raise DatabaseError(f"reading {describe(dsn)}: {first_line(exc)}") from None
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        conn.close()


class _SchemaDump:
    """``pg_dump --schema-only`` running in the background; :meth:`ready` waits for it."""

    def __init__(self, process: PipeProcess, path: Path, major: int) -> None:
        self._process = process
        self._path = path
        self._done = False
        self.major = major

    def ready(self) -> Path:
        if not self._done:
            self._process.wait()  # a failed dump raises here, before anything restores it
            self._done = True
        return self._path


@contextlib.contextmanager
def _schema_dump(dsn: str, snapshot: str, major: int) -> Iterator[_SchemaDump]:
    """``pg_dump --schema-only -Fc`` of SRC in the run's snapshot, into a temp file; it
    runs while the caller goes on (and is killed if the caller fails first)."""
    pg_dump = find_client("pg_dump", major)
    conninfo, env = for_subprocess(dsn)
    fd, name = tempfile.mkstemp(
        prefix="drkit-schema-", suffix=".dump", dir=os.environ.get("DRKIT_TMPDIR") or None
    )
    os.close(fd)
    path = Path(name)
    try:
        args = [
            pg_dump,
            "--schema-only",
            "-Fc",
            "--no-publications",
            "--no-subscriptions",
            f"--snapshot={snapshot}",
            "-f",
            str(path),
            "-d",
            conninfo,
        ]
        with PipeProcess(args, env=env, what=f"pg_dump --schema-only of {describe(dsn)}") as p:
            dump = _SchemaDump(p, path, major)
            yield dump
            dump.ready()
    finally:
        path.unlink(missing_ok=True)
