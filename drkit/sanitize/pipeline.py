"""``drkit sanitize SRC DST``: SRC's schema and sanitized data into DST's database.

One orchestrator, always the same steps whatever the source; every guard before
anything is written:

1. guards: the rules load (exit 2), the direction guard and DST's identity (exit 4, see
   :mod:`drkit.sanitize.guards`: protected, ranks, DST is no other environment's database,
   decided on the server libpq actually reaches);
2. the build database: a fresh, private database next to DST, on the cluster DST was
   identified on (:mod:`drkit.pg.builddb`; exit 4 without CREATEDB, ownership of DST, or
   with sessions on DST and no ``--force``); a killed run's leftover build is dropped;
3. schema and plan: SRC's schema from the source; the plan checks the rules against it
   (exit 2), the drift guard (exit 3), and the strategies against unique indexes and
   CHECK constraints (exit 2, :mod:`drkit.sanitize.fit`); the rows each table keeps
   (``where``, ``rows: none``, subset: :mod:`drkit.sanitize.subset`);
4. the e-mail map, from the template columns of whole tables, before any row moves
   (:mod:`drkit.sanitize.emailmap`);
5. pump: SRC's DDL before the rows, then the rows through the strategies into the build
   (:mod:`drkit.sanitize.pump`), ``--jobs`` tables at a time when the source can read
   them at once; raw values of masked columns never reach any database; the originals
   of rows a filter left out are read too (nothing written) so the scan knows them;
6. constraints: filters a source could not apply run in the build, on the sanitized
   rows (children first); then SRC's DDL after the rows (indexes, keys, triggers) and the
   sequence values;
7. the leak scan of the build (exit 3, :mod:`drkit.sanitize.scan`), with row-level
   security refused, not obeyed;
8. publish: DST renamed aside (if it is still the database identified in 1), the build
   given DST's privileges and drkit's stamp (:func:`~drkit.sanitize.guards.stamp`) and
   renamed to DST, in one transaction, waiting for DST's lock a bounded time.  It is the
   last step: nothing after it can fail the run (``on_published`` tells the caller).

Any failure or interrupt before 8 drops the build: DST is exactly as it was.
``--dry-run`` stops after 3 with the rows each table would get, once the privileges the
run needs on DST's server are proved; ``--scan-only`` writes nothing: it reads the
originals (4 and 5) and scans DST as it is (7).

The sources (:mod:`drkit.sanitize.sources`) differ only in where schema and rows come
from.  Live: one exported snapshot of SRC, read only; the filters run there.  Backup:
the DDL restored from the archive into the build (or a scratch database for a dry run
or a scan), rows parsed from its data section; every row is loaded, and the filters run
in the build on the already sanitized rows, which is why they may only read kept
columns.  The orchestrator calls the source; the source never calls back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from psycopg import sql

from drkit.config import Policy
from drkit.errors import DatabaseError, OperationError, SafetyRefused, UsageError
from drkit.pg.binaries import installs
from drkit.pg.builddb import build_aside, prove_privileges
from drkit.pg.connect import connect, first_line
from drkit.pg.conninfo import describe
from drkit.pg.tables import list_tables
from drkit.progress import Meter
from drkit.sanitize.emailmap import primer_for, primers
from drkit.sanitize.guards import (
    check_direction,
    database_dsn,
    guard_target,
    require_every_row,
    stamp,
)
from drkit.sanitize.plan import Plan, TablePlan, build_plan
from drkit.sanitize.pump import pump
from drkit.sanitize.report import LeakFound, Options, ProgressFn, Report, TableReport
from drkit.sanitize.rules import Rules, resolve_rules
from drkit.sanitize.scan import LeakIndex, scan_database
from drkit.sanitize.sources import Read, Rows, SequenceValue, Source, open_live
from drkit.sanitize.strategies import Compiler, Pseudonymizer, fake_specs, pool_values
from drkit.sanitize.subset import Selection, select_rows, topological
from drkit.sanitize.transform import RowTransformer

log = logging.getLogger(__name__)


def sanitize(
    src: Policy,
    dst: Policy,
    options: Options,
    on_progress: ProgressFn | None = None,
    on_published: Callable[[], None] | None = None,
) -> Report:
    """Run (or plan, or only scan) a sanitized copy; see the module docstring.
    ``on_published`` is called the moment the copy is published (the run's outcome is
    then settled: whatever comes after, the copy is DST)."""
    if options.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    check_direction(src, dst)
    rules = resolve_rules(src, dst, options.rules_path)
    run = _Run(src, dst, rules, options, on_progress, on_published)
    try:
        run.build()
    finally:
        run.close()
    report = run.report
    report.phases["total"] = sum(v for k, v in report.phases.items() if k != "total")
    return report


class _Run:
    """One run: its inputs, its report and leak index, and the steps in order."""

    def __init__(
        self,
        src: Policy,
        dst: Policy,
        rules: Rules,
        options: Options,
        on_progress: ProgressFn | None,
        on_published: Callable[[], None] | None = None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.rules = rules
        self.options = options
        self.on_progress = on_progress
        self.on_published = on_published
        self.writes = not (options.dry_run or options.scan_only)
        self.src_dsn = database_dsn(src)
        self.dst_dsn = database_dsn(dst)
        self.write_dsn = self.dst_dsn  # the build database once there is one
        self.leaks = LeakIndex()
        self.pseudo = Pseudonymizer(rules.salt_bytes())
        if not options.dry_run:  # the pools are made while the run connects and builds
            self.pseudo.prefetch(fake_specs(rules.strategies()))
        if self.writes:
            # pg_dump and pg_restore are looked for (a --version run per install) meanwhile
            threading.Thread(target=_find_installs, name="drkit-pg-installs", daemon=True).start()
        self.compiler = Compiler.for_rules(self.pseudo, rules.strategies(), self.leaks.add)
        mode = "dry-run" if options.dry_run else "scan-only" if options.scan_only else "run"
        self.report = Report(
            src=src.name, dst=dst.name, rules=rules.source, source="live", mode=mode
        )
        self._clock = time.monotonic()

    def close(self) -> None:
        """End what the run started in the background (the fake pool workers)."""
        self.pseudo.close()

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.report.phases[name] = self.report.phases.get(name, 0.0) + now - self._clock
        self._clock = now

    # -- 1, 2 and 8: guards, the build database, publishing -------------------------------

    def build(self) -> None:
        src, dst, options = self.src, self.dst, self.options
        stamp_key = self.pseudo.key("stamp")
        target = None
        if not options.scan_only:
            target = guard_target(src, dst, self.src_dsn, self.dst_dsn, stamp_key=stamp_key)
        if options.dry_run:  # what the run needs of DST's role, proved before the plan
            prove_privileges(self.dst_dsn)
        if not self.writes:
            with contextlib.ExitStack() as stack:
                catalog = None
                if options.from_backup is not None:  # its schema is read from a scratch database
                    scratch = build_aside(self.dst_dsn, force=False, scratch=True)
                    catalog = stack.enter_context(scratch).dsn
                self.copy(stack.enter_context(self.open_source(catalog)))
            if options.scan_only:  # of DST as it is, once the source is closed
                self.scan()
            return
        tables = _count_target_tables(self.dst_dsn)
        self.report.target_tables = max(tables, 0)
        if tables > 0 and not options.force:
            raise SafetyRefused(
                f"database {describe(self.dst_dsn)} of {dst.name} already holds {tables} "
                "tables: rerun with --force to replace it"
            )
        with build_aside(
            self.dst_dsn, force=options.force, keep_old=options.keep_old, expected=target
        ) as build:
            self.write_dsn = build.dsn
            try:
                with self.open_source(build.dsn) as source:
                    self.copy(source)
                self.scan()
            except OperationError as exc:  # e.g. a constraint the copy violates
                raise type(exc)(
                    f"{exc} (building {dst.name}'s copy; the build is dropped, "
                    f"{dst.name} is unchanged)"
                ) from None
            sysid = build.system_identifier
            mark = None if sysid is None else stamp(dst.name, sysid, build.oid, stamp_key)
            build.publish(comment=mark, on_published=self.on_published)
        self.phase("publish")

    def open_source(self, catalog: str | None) -> AbstractContextManager[Source]:
        """SRC as the options say: live, or a backup whose DDL goes into ``catalog``."""
        if self.options.from_backup is None:
            return open_live(self.src_dsn, self.src.name, ddl=self.writes)
        from drkit.sanitize.sources.backup import open_backup  # only --from-backup reads it

        assert catalog is not None, "a backup's schema is read from a database"
        return open_backup(
            self.src, self.options.from_backup, jobs=self.options.jobs, catalog=catalog
        )

    # -- 3 to 6: from the source into the build --------------------------------------------

    def copy(self, source: Source) -> None:
        """Plan, then copy SRC's rows into the build (or, for a scan, only read them; for
        a dry run, only count them)."""
        self.report.source = source.label
        schema = source.schema()
        self.phase("schema")
        plan = build_plan(self.rules, schema)
        self.settle_plan(plan)
        # a compiler for trial runs that leaves the run's e-mail map alone; the
        # pseudonymizer (keys and pools, pure functions of the salt) is shared
        source.check_fit(
            plan, Compiler.for_rules(self.pseudo, self.rules.strategies(), self.leaks.add)
        )
        selections = source.select(plan)
        in_build = selections is None
        if selections is None:  # every row is loaded: the filters run on sanitized rows
            _filters_read_kept_columns(plan)
            selections = _every_row(plan)
        self.phase("plan")
        if self.options.dry_run:
            self.dry_run(source, plan, selections, in_build=in_build)
            return
        self.prime(source, plan)
        if self.writes:
            source.pre_data(self.write_dsn)
            self.phase("schema")
        self.pump(source, plan, selections)
        self.phase("data" if self.writes else "read")
        if self.writes:
            if in_build:
                self.filter_in_build(plan)
            source.post_data(self.write_dsn, self.options.jobs)
            _set_sequences(self.write_dsn, source.sequences())
            self.phase("constraints")

    def settle_plan(self, plan: Plan) -> None:
        """What the rules leave out, into the report; pins; the drift guard (exit 3)."""
        cov = plan.coverage
        self.report.unlisted_tables = cov.unlisted_tables
        self.report.unlisted_columns = cov.unlisted_columns
        self.report.pii_kept = cov.pii_kept
        plan.settle_pins()  # copy: true tables met for the first time
        cov.raise_for_failures(self.rules.source)

    def dry_run(
        self, source: Source, plan: Plan, selections: dict[str, Selection], *, in_build: bool
    ) -> None:
        self.report.target_tables = max(_count_target_tables(self.dst_dsn), 0)
        for tp in plan.tables:
            sel = selections[tp.key]
            rows = 0 if sel.none else source.count(tp, sel)
            reason = sel.reason or "all rows"
            if in_build and tp.where is not None and not sel.none:
                reason = "where (applied after loading)"
            self.report.tables.append(
                TableReport(tp.key, tp.action, rows, reason, tp.strategies_text())
            )
        if in_build and self.rules.subset is not None:
            log.info("subset sizes are known only after loading when reading a backup")
        self.phase("plan")

    def prime(self, source: Source, plan: Plan) -> None:
        """Fill the e-mail map from the template columns of whole tables."""
        wanted = [Read(p.table, p.columns, Selection()) for p in primers(plan, self.compiler)]
        if wanted:
            for rows in source.rows(wanted, only_these=True):
                primer = primer_for(rows.read.table, self.compiler, order=rows.columns)
                assert primer is not None
                what = f"reading the e-mail templates of {rows.read.table.key}"
                with _failing_as(what), rows.open() as lines:
                    primer.feed(lines)
        self.compiler.emails_primed = True

    def pump(self, source: Source, plan: Plan, selections: dict[str, Selection]) -> None:
        """Every copied table's rows into the build (or only read, for a scan), then the
        originals of the rows left out, read for the scan."""
        copied = [
            tp for tp in plan.tables if tp.action != "schema-only" and (self.writes or tp.masked)
        ]
        copied.sort(key=lambda tp: tp.table.estimated_rows, reverse=True)  # finish together
        reports = {
            tp.key: TableReport(
                tp.key,
                tp.action,
                0 if tp.action == "schema-only" else None,
                selections[tp.key].reason or "all rows",
                tp.strategies_text(),
            )
            for tp in plan.tables
        }
        reads: dict[Read, TableReport | None] = {
            _read(tp, selections[tp.key]): reports[tp.key] for tp in copied
        }
        for tp in plan.tables:
            rest = _left_out(tp, selections[tp.key])
            if rest is not None:
                reads[_read(tp, rest)] = None
        streams = source.rows(list(reads))
        if source.concurrent and self.options.jobs > 1 and len(reads) > 1:
            pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.options.jobs, thread_name_prefix="drkit-sanitize"
            )
            try:
                futures = [pool.submit(self.load, rows, reads[rows.read]) for rows in streams]
                for future in concurrent.futures.as_completed(futures):
                    future.result()  # the first failure propagates
            except BaseException:
                # don't wait for the other tables: dropping the build ends their sessions
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
        else:
            for rows in streams:
                self.load(rows, reads[rows.read])
        self.report.tables = [reports[tp.key] for tp in plan.tables]

    def load(self, rows: Rows, report: TableReport | None) -> None:
        """One read through the strategies: into the build when the run writes and the
        rows are copied (``report``), else only read for their originals."""
        tp, selection = rows.read.table, rows.read.selection
        strategies = {c.name: s for c, s in tp.columns}
        transformer = RowTransformer([(c, strategies[c]) for c in rows.columns], self.compiler)
        write = self.writes and report is not None
        progress = self.on_progress if report is not None else None
        # reltuples (-1: never analyzed) is the estimate when every row is copied
        estimate = tp.table.estimated_rows if selection.everything else selection.rows
        started = time.monotonic()
        with (
            _failing_as(f"copying {tp.key}"),
            rows.open() as lines,
            self.copy_in(tp, rows.columns, write=write) as target,
            Meter(
                progress,
                "copy" if write else "read",
                tp.key,
                total=estimate if estimate is not None and estimate > 0 else None,
                unit="rows",
                estimate=selection.everything,
            ) as meter,
        ):
            count = pump(
                lines,
                target,
                transformer,
                tp.key,
                (lambda _key, n: meter(n)) if progress is not None else None,
            )
        if report is not None:
            report.rows = count
            report.seconds = time.monotonic() - started

    @contextlib.contextmanager
    def copy_in(
        self, tp: TablePlan, columns: list[str], *, write: bool
    ) -> Iterator[Callable[[bytes], object] | None]:
        """``COPY ... FROM STDIN`` into the build's table, committed on the way out; None
        when nothing is written."""
        if not write:
            yield None
            return
        with connect(self.write_dsn, autocommit=False) as conn:
            conn.execute("SET LOCAL synchronous_commit = off")
            target = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(tp.table.schema, tp.table.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            )
            with conn.cursor().copy(target) as copy:
                yield copy.write

    def filter_in_build(self, plan: Plan) -> None:
        """Row filters on the loaded (sanitized) rows, children first."""
        reports = {t.table: t for t in self.report.tables}
        with connect(self.write_dsn, autocommit=False) as conn:
            try:
                selections = select_rows(conn, plan, self.rules.subset)
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

    # -- 7: the leak scan -------------------------------------------------------------

    def scan(self) -> None:
        generated = pool_values(self.pseudo, self.rules.strategies())
        searcher = self.leaks.searcher(generated)
        with connect(self.write_dsn) as conn:
            try:
                require_every_row(conn, f"{self.dst.name}'s copy")
                conn.execute("SET row_security = off")
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"preparing the leak scan of {describe(self.write_dsn)}: {first_line(exc)}"
                ) from None
            self.report.leak = scan_database(conn, searcher)
        self.phase("leak_scan")
        leak = self.report.leak
        if leak.hits:
            listing = "; ".join(f"{where}: {count}" for where, count in sorted(leak.hits.items()))
            raise LeakFound(
                f"leak scan of {self.dst.name}: original values of masked columns found in "
                f"{listing} (count of hits; values not shown). "
                + (
                    "DST is not safe to use"
                    if self.options.scan_only
                    else f"The copy was not published: {self.dst.name} is as it was"
                ),
                self.report,
            )


# ---------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _failing_as(what: str) -> Iterator[None]:
    """A database error, or a value a strategy could not read (json on non-JSON), as one
    line naming ``what`` was being done."""
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseError(f"{what}: {first_line(exc)}") from None
    except ValueError as exc:
        raise DatabaseError(f"{what}: {exc}") from None


def _read(tp: TablePlan, selection: Selection) -> Read:
    return Read(tp, [c.name for c, _ in tp.columns], selection)


def _left_out(tp: TablePlan, selection: Selection) -> Selection | None:
    """The rows of a masked table that are not copied, whose originals the scan must know
    (a kept free-text column may quote a person whose own row was not copied); None when
    every row is copied or nothing is masked."""
    if not tp.masked:
        return None
    if selection.everything and tp.action != "schema-only":
        return None
    copied = None if selection.none or tp.action == "schema-only" else selection.predicate
    return Selection(predicate=None if copied is None else _not(copied), reason="left out")


def _not(predicate: Callable[[str], sql.Composable]) -> Callable[[str], sql.Composable]:
    def rest(alias: str) -> sql.Composable:
        return sql.SQL("({}) IS NOT TRUE").format(predicate(alias))

    return rest


def _every_row(plan: Plan) -> dict[str, Selection]:
    """The selections of a source that cannot filter: every row, but for ``rows: none``."""
    return {
        tp.key: Selection(none=True, reason="rows: none")
        if tp.action == "schema-only"
        else Selection()
        for tp in plan.tables
    }


def _filters_read_kept_columns(plan: Plan) -> None:
    """Filters that run on sanitized rows may only read kept columns (exit 2)."""
    masked = {tp.key: {c.name for c, s in tp.columns if s.MASKS} for tp in plan.tables}
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


def _set_sequences(dsn: str, values: list[SequenceValue]) -> None:
    with connect(dsn) as conn:
        for name, value, called in values:
            conn.execute("SELECT setval(%s::regclass, %s, %s)", [name, value, called])


def _find_installs() -> None:
    try:
        installs()  # fills the cache of each program's version
    except Exception as exc:  # the run's own lookup reports any problem
        log.debug("looking for PostgreSQL installs ahead: %s", exc)


def _count_target_tables(dsn: str) -> int:
    """Tables in DST's database (-1 when the database does not exist yet)."""
    try:
        with psycopg.connect(dsn, connect_timeout=15) as conn:
            return len(list_tables(conn))
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            return -1
        raise DatabaseError(f"cannot connect to {describe(dsn)}: {first_line(exc)}") from None
