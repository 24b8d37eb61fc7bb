"""The ``--from-backup`` run: SRC's schema and rows come from a logical backup.

The schema (tables and columns from the pre-data SQL, keys from the post-data SQL) is
read from the archive itself, so the plan, the rules check and ``--dry-run`` never touch
production nor DST.  Rows are parsed out of ``pg_restore --section=data`` and go through
the same strategies as a live copy.  ``where`` and subset filters are then applied in
DST to the already sanitized rows (``DELETE ... WHERE NOT filter``, children first), so
they may only read columns the rules keep.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from drkit.backup.catalog import resolve_backup
from drkit.errors import DatabaseError, SafetyRefused, UsageError
from drkit.pg.binaries import find_binary, find_client
from drkit.pg.connect import connect, first_line
from drkit.pg.conninfo import describe, for_subprocess
from drkit.sanitize.frombackup import (
    CopyBlock,
    add_constraints,
    dump_object,
    parse_data_section,
    read_post_data,
    restore_from_stream,
    unquote,
)
from drkit.sanitize.plan import Plan, TablePlan, build_plan
from drkit.sanitize.rules import is_masked
from drkit.sanitize.schema import Column, Schema, Table
from drkit.sanitize.subset import _topological, select_rows
from drkit.sanitize.transform import RowTransformer
from drkit.storage.repository import Repository, StoredObject

if TYPE_CHECKING:
    from drkit.sanitize.engine import ProgressFn, _Run

log = logging.getLogger(__name__)

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_RE = re.compile(rf"^CREATE (?:UNLOGGED )?TABLE ({_IDENT})\.({_IDENT}) \($", re.M)
_COLUMN_RE = re.compile(rf"^    ({_IDENT}) (.*?),?$")
_STOPS = (" DEFAULT ", " NOT NULL", " GENERATED ", " COLLATE ", " CONSTRAINT ", " NULL")
_STRING_TYPES = {"text", "character varying", "varchar", "character", "char", "citext", "name"}


def _column_from_sql(name: str, rest: str) -> Column:
    cut = min((rest.find(s) for s in _STOPS if s in rest), default=len(rest))
    type_text = rest[:cut].strip()
    base = re.sub(r"\(.*\)", "", type_text).strip().lower()
    is_array = base.endswith("[]")
    base = base.removesuffix("[]").strip()
    base = base.split(".")[-1].strip('"')
    if base in _STRING_TYPES:
        typname, category = "text", "S"
    elif base in ("json", "jsonb"):
        typname, category = base, "U"
    elif base in ("inet", "cidr"):
        typname, category = base, "I"
    else:
        typname, category = base, "X"
    if is_array:
        return Column(name, type_text, "_" + typname, "A", category, False, False)
    generated = " GENERATED ALWAYS AS (" in rest and rest.rstrip(",").endswith("STORED")
    return Column(name, type_text, typname, category, "", generated, " NOT NULL" in rest)


def schema_from_sql(pre_data: str, post_data: str) -> Schema:
    tables: dict[str, Table] = {}
    for match in _CREATE_RE.finditer(pre_data):
        schema_name, table_name = unquote(match.group(1)), unquote(match.group(2))
        table = Table(schema_name, table_name, 0)
        body_start = match.end() + 1
        body_end = pre_data.find("\n);", body_start)
        for line in pre_data[body_start:body_end].splitlines():
            if line.startswith("    CONSTRAINT "):
                continue
            col = _COLUMN_RE.match(line)
            if col:
                table.columns.append(_column_from_sql(unquote(col.group(1)), col.group(2)))
        tables[table.key] = table
    schema = Schema(tables, [])
    add_constraints(schema, post_data)
    for m in re.finditer(rf"^CREATE SEQUENCE ({_IDENT})\.({_IDENT})$", pre_data, re.M):
        schema.sequences.append((unquote(m.group(1)), unquote(m.group(2))))
    return schema


def _section_text(
    repo: Repository, obj: StoredObject, pg_restore: str, env: dict[str, str], section: str
) -> str:
    if section == "post-data":
        return read_post_data(repo, obj, pg_restore, env)
    args = [pg_restore, f"--section={section}", "-f", "-"]
    with restore_from_stream(
        repo, obj, args, env, f"pg_restore ({section} of the backup)", stdout=-1
    ) as proc:
        text = proc.stdout.read().decode("utf-8", "replace")
    return text


def _restore_section(
    repo: Repository, obj: StoredObject, pg_restore: str, dsn: str, section: str
) -> None:
    conninfo, env = for_subprocess(dsn)
    args = [
        pg_restore,
        f"--section={section}",
        "--no-owner",
        "--no-acl",
        "--exit-on-error",
        "--single-transaction",
        "-d",
        conninfo,
    ]
    with restore_from_stream(
        repo, obj, args, env, f"pg_restore --section={section} into {describe(dsn)}"
    ):
        pass


def _check_filters_read_kept_columns(plan: Plan) -> None:
    masked = {tp.key: {c.name for c, s in tp.columns if is_masked(s)} for tp in plan.tables}
    for tp in plan.tables:
        if tp.where is not None and (bad := tp.where.columns & masked[tp.key]):
            raise UsageError(
                f"{plan.rules.source}: tables.{tp.table.name}.where reads the masked column "
                f"{sorted(bad)[0]}: with --from-backup filters run on sanitized rows; "
                "filter on kept columns or copy from the live database"
            )
    subset = plan.rules.subset
    if subset is not None and (bad := subset.where.columns & masked.get(subset.key, set())):
        raise UsageError(
            f"{plan.rules.source}: subset.start.where reads the masked column {sorted(bad)[0]}: "
            "with --from-backup filters run on sanitized rows"
        )


def run_from_backup(run: _Run, ref: str, on_progress: ProgressFn | None) -> None:
    from drkit.sanitize.engine import (
        TableReport,
        _empty_database,
        _target_tables,
        count_target_tables,
    )

    options = run.options
    repo = Repository.for_policy(run.src)
    manifest = resolve_backup(repo, ref, kind="logical")
    database = run.src.database.database_names()[0]
    obj = dump_object(manifest, database)
    run.report.source = f"backup {manifest.id}"
    # the dump's archive format is its pg_dump's: a pg_restore of the backup's major (or newer)
    major = int(manifest.server_version.split(".")[0]) if manifest.server_version else 0
    pg_restore = find_client("pg_restore", major) if major else find_binary("pg_restore")
    _, plain_env = for_subprocess("")
    pre = _section_text(repo, obj, pg_restore, plain_env, "pre-data")
    post = _section_text(repo, obj, pg_restore, plain_env, "post-data")
    schema = schema_from_sql(pre, post)
    del pre, post
    plan = build_plan(run.rules, schema)
    run.finish_plan(plan)
    _check_filters_read_kept_columns(plan)
    counts = manifest.row_counts.get(obj.database or database, {})
    run.phase("plan")
    if options.dry_run:
        run.report.target_tables = max(count_target_tables(run.dst_dsn), 0)
        for tp in plan.tables:
            rows = 0 if tp.action == "schema-only" else counts.get(tp.key)
            selection = (
                "rows: none"
                if tp.action == "schema-only"
                else ("where (applied after loading)" if tp.where else "all rows")
            )
            run.report.tables.append(
                TableReport(tp.key, tp.action, rows, selection, tp.strategies_text())
            )
        if run.rules.subset is not None:
            log.info("subset sizes are known only after loading when reading a backup")
        return
    write = not options.scan_only
    if write:
        run.report.target_tables = _target_tables(run.dst_dsn)
        if run.report.target_tables and not options.force:
            raise SafetyRefused(
                f"database {describe(run.dst_dsn)} of {run.dst.name} already holds "
                f"{run.report.target_tables} tables: rerun with --force to empty it first"
            )
        if run.report.target_tables:
            _empty_database(run.dst_dsn)
        _restore_section(repo, obj, pg_restore, run.dst_dsn, "pre-data")
        run.phase("schema")
    by_key = plan.by_key()
    reports = {
        tp.key: TableReport(
            tp.key,
            tp.action,
            0,
            "all rows" if tp.action != "schema-only" else "rows: none",
            tp.strategies_text(),
        )
        for tp in plan.tables
    }
    dst = connect(run.dst_dsn, autocommit=False) if write else None
    try:
        if dst is not None:
            dst.execute("SET LOCAL synchronous_commit = off")

        def on_block(block: CopyBlock, rows: Iterator[bytes]) -> None:
            tp = by_key.get(f"{block.schema}.{block.table}")
            if tp is None or tp.action == "schema-only":
                return
            if not write and not tp.masked:
                return
            started = time.monotonic()
            count = _load_block(run, tp, block, rows, dst, on_progress)
            reports[tp.key].rows = count
            reports[tp.key].seconds = time.monotonic() - started

        args = [pg_restore, "--section=data", "-f", "-"]
        with restore_from_stream(
            repo, obj, args, plain_env, "pg_restore (data of the backup)", stdout=-1
        ) as proc:
            section = parse_data_section(proc.stdout, on_block)
        if section.skipped:
            log.warning("backup data entries not copied: %s", "; ".join(section.skipped[:3]))
        if dst is not None:
            dst.commit()
    except psycopg.Error as exc:
        raise DatabaseError(f"loading {describe(run.dst_dsn)}: {first_line(exc)}") from None
    finally:
        if dst is not None:
            dst.close()
    run.phase("data" if write else "read")
    if write:
        _apply_filters(run, plan, reports)
        _restore_section(repo, obj, pg_restore, run.dst_dsn, "post-data")
        with connect(run.dst_dsn) as conn:
            for name, value, called in section.sequences:
                conn.execute("SELECT setval(%s::regclass, %s, %s)", [name, value, called])
        run.phase("constraints")
    run.report.tables = [reports[tp.key] for tp in plan.tables]
    run.scan(plan)


def _load_block(
    run: _Run,
    tp: TablePlan,
    block: CopyBlock,
    rows: Iterator[bytes],
    dst: psycopg.Connection[Any] | None,
    on_progress: ProgressFn | None,
) -> int:
    strategies = {c.name: s for c, s in tp.columns}
    unknown = [c for c in block.columns if c not in strategies]
    if unknown:
        raise UsageError(f"the backup's {tp.key} has column {unknown[0]} the schema lacks")
    transformer = RowTransformer([(c, strategies[c]) for c in block.columns], run.compiler)
    count = 0
    batch: list[bytes] = []
    size = 0
    copy_cm: Any = None
    copy: Any = None
    if dst is not None:
        copy_cm = dst.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(block.schema, block.table),
                sql.SQL(", ").join(sql.Identifier(c) for c in block.columns),
            )
        )
        copy = copy_cm.__enter__()
    try:
        for line in rows:
            batch.append(line)
            size += len(line)
            if size >= 1 << 20:
                count += _flush(transformer, batch, copy, tp.key, on_progress)
                batch, size = [], 0
        count += _flush(transformer, batch, copy, tp.key, on_progress)
    except BaseException as exc:
        if copy_cm is not None:
            copy_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if copy_cm is not None:
        copy_cm.__exit__(None, None, None)
    return count


def _flush(
    transformer: RowTransformer,
    batch: list[bytes],
    copy: Any,
    key: str,
    on_progress: ProgressFn | None,
) -> int:
    if not batch:
        return 0
    data = b"".join(batch)
    if not data.endswith(b"\n"):
        data += b"\n"
    if not transformer.passthrough:
        data = transformer.block(data)
    if copy is not None:
        copy.write(data)
    if on_progress is not None:
        on_progress(key, len(batch))
    return len(batch)


def _apply_filters(run: _Run, plan: Plan, reports: dict[str, Any]) -> None:
    """Row filters on the loaded (sanitized) rows, children first."""
    with connect(run.dst_dsn, autocommit=False) as conn:
        try:
            selections = select_rows(conn, plan, run.rules.subset)
            tables = {tp.key: tp.table for tp in plan.tables}
            for key in reversed(_topological(tables)):
                sel = selections[key]
                if sel.everything or sel.none:
                    continue
                where = sel.where_sql("t")
                assert where is not None
                table = tables[key]
                cur = conn.execute(
                    sql.SQL("DELETE FROM ONLY {} t WHERE ({}) IS NOT TRUE").format(
                        sql.Identifier(table.schema, table.name), where
                    )
                )
                deleted = max(cur.rowcount, 0)
                report = reports[key]
                report.rows = (report.rows or 0) - deleted
                report.selection = sel.reason + " (applied after loading)"
            conn.commit()
        except psycopg.Error as exc:
            raise DatabaseError(f"applying row filters in DST: {first_line(exc)}") from None
