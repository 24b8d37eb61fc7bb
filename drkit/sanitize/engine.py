"""``drkit sanitize SRC DST``: SRC's schema and sanitized data into DST's database.

One orchestrator, always the same steps; every guard before anything is written:

1. guards: the rules load (exit 2), the direction guard and DST's identity (exit 4, see
   :mod:`drkit.sanitize.guards`: protected, ranks, DST is no other environment's database);
2. the build database: a fresh database next to DST (:mod:`drkit.pg.builddb`; exit 4
   without CREATEDB, ownership of DST, or with sessions on DST and no ``--force``);
3. schema: pre-data into the build (user mappings and large objects left out), and the
   schema read from a catalog; the plan checks the rules against it (exit 2), the
   drift guard (exit 3), and the strategies against unique indexes and CHECK constraints
   (exit 2, :mod:`drkit.sanitize.fit`);
4. pump: rows through the strategies into the build, ``--jobs`` tables at a time; raw
   values of masked columns never reach any database; the originals of rows a filter
   left out are read too (nothing written) so the scan knows them;
5. constraints: post-data (indexes, keys, triggers) and sequence values;
6. the leak scan of the build (exit 3), with row-level security refused, not obeyed;
7. publish: DST renamed aside, the build renamed to DST, in one transaction.

Any failure or interrupt before 7 drops the build: DST is exactly as it was.

The two sources differ only in where schema and rows come from.  Live
(:func:`_run_live`): one exported REPEATABLE READ snapshot of SRC (read only); schema from
SRC's catalog, ``pg_dump --schema-only`` for the DDL, ``COPY (SELECT ...) TO STDOUT``
per table.  Backup (:mod:`drkit.sanitize.backupsource`): the DDL restored from the
archive, the schema read from the build's catalog, rows parsed from its data section;
row filters then run in the build on the already sanitized rows, which is why they may
only read kept columns.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drkit.config import Policy
from drkit.errors import DatabaseError, OperationError, SafetyRefused, UsageError
from drkit.pg.binaries import find_client
from drkit.pg.builddb import build_aside
from drkit.pg.connect import connect, first_line, server_major
from drkit.pg.conninfo import describe, for_subprocess
from drkit.pg.pgrestore import LARGE_OBJECT_KINDS, SECRET_KINDS, restore_file
from drkit.pg.process import PipeProcess
from drkit.progress import Meter
from drkit.sanitize.emailmap import prime_from_connection
from drkit.sanitize.fit import check_constraints_fit
from drkit.sanitize.guards import STAMP, check_direction, guard_target, require_every_row
from drkit.sanitize.plan import Plan, TablePlan, build_plan
from drkit.sanitize.pump import pump
from drkit.sanitize.rules import resolve_rules
from drkit.sanitize.run import LeakFound as LeakFound
from drkit.sanitize.run import Options as Options
from drkit.sanitize.run import (
    ProgressFn,
    Run,
    TableReport,
    count_target_tables,
)
from drkit.sanitize.run import Report as Report
from drkit.sanitize.run import database_dsn as database_dsn
from drkit.sanitize.schema import Schema, read_schema
from drkit.sanitize.subset import Predicate, Selection, select_rows
from drkit.sanitize.transform import RowTransformer

log = logging.getLogger(__name__)

_BATCH = 1 << 20
# archive entries a sanitized copy never gets: credentials, and bytes no rule can mask
NOT_COPIED = SECRET_KINDS + LARGE_OBJECT_KINDS
_APP = "drkit-sanitize"


def sanitize(
    src: Policy,
    dst: Policy,
    options: Options,
    on_progress: ProgressFn | None = None,
) -> Report:
    """Run (or plan, or only scan) a sanitized copy; see the module docstring."""
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    check_direction(src, dst)
    rules = resolve_rules(src, dst, options.rules_path)
    run = Run(src, dst, rules, options)
    try:
        _build(run, on_progress)
    finally:
        run.close()
    run.report.phases["total"] = sum(v for k, v in run.report.phases.items() if k != "total")
    return run.report


def _build(run: Run, on_progress: ProgressFn | None) -> None:
    """The run after its rules loaded: guards, build aside, copy, scan, publish."""
    from drkit.sanitize.backupsource import run_from_backup  # only --from-backup reads it

    src, dst, options = run.src, run.dst, run.options
    if not options.scan_only:
        guard_target(src, dst, run.src_dsn, run.dst_dsn)
    if options.dry_run or options.scan_only:
        if options.from_backup is None:
            _run_live(run, on_progress)
        else:  # the backup's schema needs a database to be read from: a scratch one
            with build_aside(run.dst_dsn, force=False, scratch=True) as scratch:
                run.schema_dsn = scratch.dsn
                run_from_backup(run, options.from_backup, on_progress)
    else:
        tables = count_target_tables(run.dst_dsn)
        run.report.target_tables = max(tables, 0)
        if tables > 0 and not options.force:
            raise SafetyRefused(
                f"database {describe(run.dst_dsn)} of {dst.name} already holds {tables} "
                "tables: rerun with --force to replace it"
            )
        with build_aside(run.dst_dsn, force=options.force, keep_old=options.keep_old) as build:
            run.write_dsn = run.schema_dsn = build.dsn
            try:
                if options.from_backup is None:
                    _run_live(run, on_progress)
                else:
                    run_from_backup(run, options.from_backup, on_progress)
            except OperationError as exc:  # e.g. a constraint the copy violates
                raise type(exc)(
                    f"{exc} (building {dst.name}'s copy; the build is dropped, "
                    f"{dst.name} is unchanged)"
                ) from None
            build.set_stamp(STAMP, dst.name)
            build.copy_grants()
            build.publish()
        run.phase("publish")


@contextlib.contextmanager
def _source_snapshot(dsn: str, token: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
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


def _run_live(run: Run, on_progress: ProgressFn | None) -> None:
    options = run.options
    token = f"{_APP}-{secrets.token_hex(8)}"
    with contextlib.ExitStack() as stack:
        src_conn, snapshot = stack.enter_context(_source_snapshot(run.src_dsn, token))
        require_every_row(src_conn, run.src.name)
        archive = None
        if not (options.dry_run or options.scan_only):
            # pg_dump --schema-only reads the same snapshot while the plan is made here
            major = server_major(src_conn)
            archive = stack.enter_context(_schema_archive(run.src_dsn, snapshot, major))
        schema = read_schema(src_conn)
        plan = build_plan(run.rules, schema)
        run.finish_plan(plan)
        check_constraints_fit(src_conn, plan, run.sample_compiler())
        selections = select_rows(src_conn, plan, run.rules.subset)
        run.phase("plan")
        if options.dry_run:
            run.report.target_tables = max(count_target_tables(run.dst_dsn), 0)
            _dry_run(run, plan, selections, src_conn)
            return
        prime_from_connection(src_conn, plan, run.compiler)  # before any row moves
        if options.scan_only:
            _copy_all(run, plan, selections, snapshot, on_progress, write=False)
            _read_left_out(run, plan, selections, snapshot)
            run.phase("read")
            stack.close()
            run.scan(plan)
            return
        sequences = _sequence_values(src_conn, schema)
        assert archive is not None
        _pg_restore_section(run.write_dsn, archive.ready(), "pre-data", major, jobs=1)
        run.phase("schema")
        _copy_all(run, plan, selections, snapshot, on_progress, write=True)
        _read_left_out(run, plan, selections, snapshot)
        run.phase("data")
        src_conn.rollback()  # the snapshot is no longer needed
        _pg_restore_section(run.write_dsn, archive.ready(), "post-data", major, jobs=options.jobs)
        set_sequences(run.write_dsn, sequences)
        run.phase("constraints")
    run.scan(plan)


# ---------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------


class _SchemaDump:
    """``pg_dump --schema-only`` running in the background; :meth:`ready` waits for it."""

    def __init__(self, process: PipeProcess, path: Path) -> None:
        self._process = process
        self._path = path
        self._done = False

    def ready(self) -> Path:
        if not self._done:
            self._process.wait()  # a failed dump raises here, before anything restores it
            self._done = True
        return self._path


@contextlib.contextmanager
def _schema_archive(dsn: str, snapshot: str, major: int) -> Iterator[_SchemaDump]:
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
            dump = _SchemaDump(p, path)
            yield dump
            dump.ready()
    finally:
        path.unlink(missing_ok=True)


def _pg_restore_section(dsn: str, archive: Path, section: str, major: int, jobs: int) -> None:
    restore_file(
        find_client("pg_restore", major), archive, dsn, section=section, jobs=jobs, drop=NOT_COPIED
    )


def _sequence_values(
    conn: psycopg.Connection[Any], schema: Schema
) -> list[tuple[str, str, int, bool]]:
    values = []
    for nsp, name in schema.sequences:
        row = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(nsp, name))
        ).fetchone()
        if row is not None:
            values.append((nsp, name, int(row[0]), bool(row[1])))
    return values


def set_sequences(dsn: str, values: list[tuple[str, str, int, bool]]) -> None:
    with connect(dsn) as conn:
        for nsp, name, value, called in values:
            conn.execute(
                "SELECT setval(%s::regclass, %s, %s)",
                [sql.Identifier(nsp, name).as_string(conn), value, called],
            )


def _copy_query(tp: TablePlan, selection: Selection) -> sql.Composed:
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c, _ in tp.columns)
    where = selection.where_sql("t")
    base = sql.SQL("SELECT {} FROM ONLY {} t").format(
        columns, sql.Identifier(tp.table.schema, tp.table.name)
    )
    if where is not None:
        base = base + sql.SQL(" WHERE ") + where
    return sql.SQL("COPY ({}) TO STDOUT").format(base)


def _copy_all(
    run: Run,
    plan: Plan,
    selections: dict[str, Selection],
    snapshot: str,
    on_progress: ProgressFn | None,
    *,
    write: bool,
) -> None:
    work = [
        tp
        for tp in plan.tables
        if tp.action != "schema-only" and (write or any(s.MASKS for _, s in tp.columns))
    ]
    # the biggest first, so parallel jobs finish together
    work.sort(key=lambda tp: tp.table.estimated_rows, reverse=True)
    reports: dict[str, TableReport] = {}
    for tp in plan.tables:
        sel = selections[tp.key]
        reports[tp.key] = TableReport(
            tp.key,
            tp.action,
            0 if tp.action == "schema-only" else None,
            sel.reason or "all rows",
            tp.strategies_text(),
        )

    def one(tp: TablePlan) -> None:
        started = time.monotonic()
        rows = _copy_table(run, tp, selections[tp.key], snapshot, on_progress, write=write)
        reports[tp.key].rows = rows
        reports[tp.key].seconds = time.monotonic() - started

    if run.options.jobs == 1 or len(work) <= 1:
        for tp in work:
            one(tp)
    else:
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=run.options.jobs, thread_name_prefix="drkit-sanitize"
        )
        try:
            futures = [pool.submit(one, tp) for tp in work]
            for future in concurrent.futures.as_completed(futures):
                future.result()  # the first failure propagates
        except BaseException:
            # don't wait for the other tables: dropping the build ends their sessions
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    run.report.tables = [reports[tp.key] for tp in plan.tables]


def _read_left_out(run: Run, plan: Plan, selections: dict[str, Selection], snapshot: str) -> None:
    """Originals of the rows a filter left out, for the leak scan (nothing is written).

    A kept free-text column may quote a person whose own row was not copied; the scan
    must know that person's values too, so every transformed column is read from the
    whole table, in the same snapshot, through the same strategies.
    """
    for tp in plan.tables:
        if not tp.masked:
            continue
        sel = selections[tp.key]
        if sel.everything and tp.action != "schema-only":
            continue
        copied = None if sel.none or tp.action == "schema-only" else sel.predicate
        rest = Selection(predicate=_not(copied) if copied is not None else None, reason="left out")
        _copy_table(run, tp, rest, snapshot, None, write=False)


def _not(predicate: Predicate) -> Predicate:
    def rest(alias: str) -> sql.Composable:
        return sql.SQL("({}) IS NOT TRUE").format(predicate(alias))

    return rest


def _copy_table(
    run: Run,
    tp: TablePlan,
    selection: Selection,
    snapshot: str,
    on_progress: ProgressFn | None,
    *,
    write: bool,
) -> int:
    names = [(c.name, s) for c, s in tp.columns]
    transformer = RowTransformer(names, run.compiler)
    src = connect(run.src_dsn, autocommit=False)
    dst = connect(run.write_dsn, autocommit=False) if write else None
    rows = 0
    try:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        src.execute("SET row_security = off")
        if dst is not None:
            dst.execute("SET LOCAL synchronous_commit = off")
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(src.cursor().copy(_copy_query(tp, selection)))
            inp = None
            if dst is not None:
                target = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(tp.table.schema, tp.table.name),
                    sql.SQL(", ").join(sql.Identifier(n) for n, _ in names),
                )
                inp = stack.enter_context(dst.cursor().copy(target))
            # reltuples (-1: never analyzed) is the estimate when every row is copied
            estimate = tp.table.estimated_rows if selection.everything else selection.rows
            with Meter(
                on_progress,
                "copy" if write else "read",
                tp.key,
                total=estimate if estimate is not None and estimate > 0 else None,
                unit="rows",
                estimate=selection.everything,
            ) as meter:
                rows = pump(
                    out,
                    inp.write if inp is not None else None,
                    transformer,
                    tp.key,
                    (lambda _key, n: meter(n)) if on_progress is not None else None,
                )
        if dst is not None:
            dst.commit()
        src.rollback()
    except psycopg.Error as exc:
        raise DatabaseError(f"copying {tp.key}: {first_line(exc)}") from None
    except ValueError as exc:  # a strategy could not read a value (e.g. json on non-JSON)
        raise DatabaseError(f"copying {tp.key}: {exc}") from None
    finally:
        src.close()
        if dst is not None:
            dst.close()
    return rows


def _dry_run(
    run: Run, plan: Plan, selections: dict[str, Selection], conn: psycopg.Connection[Any]
) -> None:
    for tp in plan.tables:
        sel = selections[tp.key]
        if sel.none:
            rows = 0
        else:
            query = sql.SQL("SELECT count(*) FROM ONLY {} t").format(
                sql.Identifier(tp.table.schema, tp.table.name)
            )
            where = sel.where_sql("t")
            if where is not None:
                query = query + sql.SQL(" WHERE ") + where
            row = conn.execute(query).fetchone()
            rows = int(row[0]) if row else 0
        run.report.tables.append(
            TableReport(tp.key, tp.action, rows, sel.reason or "all rows", tp.strategies_text())
        )
    run.phase("plan")
