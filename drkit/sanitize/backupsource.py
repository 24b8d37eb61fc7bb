"""The ``--from-backup`` run: SRC's schema and rows come from a logical backup.

The backup's pre-data section is restored into the database the orchestrator hands over
(the build database, or a scratch one for ``--dry-run``/``--scan-only``) and the schema is
read from that catalog by the same reader as a live source, so inheritance, partitions
and domains look the same either way; production is never touched.  Rows are parsed out
of ``pg_restore --section=data`` and go through the same strategies as a live copy.  ``where`` and subset filters are then applied in
DST to the already sanitized rows (``DELETE ... WHERE NOT filter``, children first), so
they may only read columns the rules keep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drkit.backup.catalog import Manifest, resolve_backup
from drkit.errors import DatabaseError, UsageError
from drkit.pg.binaries import find_binary, find_client
from drkit.pg.connect import connect, first_line
from drkit.pg.conninfo import describe, for_subprocess
from drkit.pg.pgrestore import LARGE_OBJECT_KINDS, SECRET_KINDS, list_file, restore_args
from drkit.progress import Meter
from drkit.restore.dirrestore import fetched_directory
from drkit.sanitize.emailmap import prime_from_backup
from drkit.sanitize.frombackup import (
    CopyBlock,
    dump_object,
    parse_data_section,
    restore_from_stream,
)
from drkit.sanitize.plan import Plan, TablePlan, build_plan
from drkit.sanitize.pump import pump
from drkit.sanitize.rules import is_masked
from drkit.sanitize.run import ProgressFn, Run, TableReport, count_target_tables
from drkit.sanitize.schema import read_schema
from drkit.sanitize.subset import select_rows, topological
from drkit.sanitize.transform import RowTransformer
from drkit.storage.repository import Repository, StoredObject

log = logging.getLogger(__name__)


def _restore_section(
    repo: Repository, obj: StoredObject | Path, pg_restore: str, dsn: str, section: str
) -> None:
    _, plain_env = for_subprocess("")
    with restore_from_stream(
        repo, obj, [pg_restore, "-l"], plain_env, "pg_restore -l of the backup", stdout=-1
    ) as proc:
        toc = proc.stdout.read().decode("utf-8", "replace")
    with list_file(toc, SECRET_KINDS + LARGE_OBJECT_KINDS) as listing:
        args, env = restore_args(pg_restore, dsn, section=section, listing=listing)
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


def run_from_backup(run: Run, ref: str, on_progress: ProgressFn | None) -> None:
    repo = Repository.for_policy(run.src)
    database = run.src.database.database_names()[0]
    manifest = resolve_backup(repo, ref, kinds=("logical",), database=database)
    members = manifest.directory_members(database)
    if members is None:  # custom format: every pass streams the stored object
        _run_from(run, repo, manifest, database, dump_object(manifest, database), on_progress)
        return
    # directory format (backup --jobs): pg_restore reads a directory, fetched once, checked
    with fetched_directory(repo, members, jobs=max(1, run.options.jobs)) as local:
        _run_from(run, repo, manifest, database, local, on_progress)


def _run_from(
    run: Run,
    repo: Repository,
    manifest: Manifest,
    database: str,
    obj: StoredObject | Path,
    on_progress: ProgressFn | None,
) -> None:
    options = run.options
    run.report.source = f"backup {manifest.id}"
    # the dump's archive format is its pg_dump's: a pg_restore of the backup's major (or newer)
    major = int(manifest.server_version.split(".")[0]) if manifest.server_version else 0
    pg_restore = find_client("pg_restore", major) if major else find_binary("pg_restore")
    _, plain_env = for_subprocess("")
    # the schema is read from the catalog, as for a live source: pre-data goes into the
    # database the orchestrator gave (the build, or a scratch one for a dry run)
    _restore_section(repo, obj, pg_restore, run.schema_dsn, "pre-data")
    with connect(run.schema_dsn, autocommit=False) as conn:
        schema = read_schema(conn)
        conn.rollback()
    run.phase("schema")
    plan = build_plan(run.rules, schema)
    run.finish_plan(plan)
    _check_filters_read_kept_columns(plan)
    counts = manifest.row_counts.get(database, {})
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
    prime_from_backup(repo, obj, pg_restore, plain_env, plan, run.compiler)  # before any row
    write = not options.scan_only
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
    dst = connect(run.write_dsn, autocommit=False) if write else None
    try:
        if dst is not None:
            dst.execute("SET LOCAL synchronous_commit = off")

        def on_block(block: CopyBlock, rows: Iterator[bytes]) -> None:
            tp = by_key.get(f"{block.schema}.{block.table}")
            if tp is None:
                return
            if tp.action == "schema-only":
                if tp.masked:  # not copied, but the scan must know its originals
                    _load_block(run, tp, block, rows, None, None)
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
        raise DatabaseError(f"loading {describe(run.write_dsn)}: {first_line(exc)}") from None
    finally:
        if dst is not None:
            dst.close()
    run.phase("data" if write else "read")
    if write:
        _apply_filters(run, plan, reports)
        _restore_section(repo, obj, pg_restore, run.write_dsn, "post-data")
        with connect(run.write_dsn) as conn:
            for name, value, called in section.sequences:
                conn.execute("SELECT setval(%s::regclass, %s, %s)", [name, value, called])
        run.phase("constraints")
    run.report.tables = [reports[tp.key] for tp in plan.tables]
    run.scan(plan)


def _load_block(
    run: Run,
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
    meter = Meter(on_progress, "copy" if dst is not None else "read", tp.key, unit="rows")
    counted = (lambda _key, n: meter(n)) if on_progress is not None else None
    with meter:
        if dst is None:
            return pump(rows, None, transformer, tp.key, counted)
        target = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(block.schema, block.table),
            sql.SQL(", ").join(sql.Identifier(c) for c in block.columns),
        )
        with dst.cursor().copy(target) as copy:
            return pump(rows, copy.write, transformer, tp.key, counted)


def _apply_filters(run: Run, plan: Plan, reports: dict[str, Any]) -> None:
    """Row filters on the loaded (sanitized) rows, children first."""
    with connect(run.write_dsn, autocommit=False) as conn:
        try:
            selections = select_rows(conn, plan, run.rules.subset)
            tables = {tp.key: tp.table for tp in plan.tables}
            for key in reversed(topological(tables)):
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
