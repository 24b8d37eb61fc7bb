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
4. the e-mail map, from the template columns of whole tables, before any row is written
   (:mod:`drkit.sanitize.emailmap`): by the originals pass (6) where the source reads
   tables in any order, the tables whose strategies read the map waiting for it; else
   by a read of its own, first;
5. SRC's DDL before the rows; a view or function of it that carries credentials or
   opens a dblink connection stops the run (exit 3) before any row;
6. the originals pass: every row of every masked table (the rows a filter leaves out
   too, whatever a volatile filter draws), only the columns the originals need, through
   each strategy's originals function (:func:`drkit.sanitize.transform.row_originals`),
   which hands the leak index exactly the originals the strategy would replace without
   computing what it would write (``--jobs`` tables at a time when the source can read
   them at once); raw values of masked columns never reach any database;
7. the write pass, every original known: every copied table read once more from the
   source, block by block through its strategies (they run once, here, beside the
   server's COPY; nothing waits on local disk), searched in flight
   (:mod:`drkit.sanitize.scan.inflight`: originals in every spelling, personal data by
   content in what is kept) and only then written to the build
   (:mod:`drkit.sanitize.pump`); a hit stops the writing and fails the run (exit 3) —
   no original and no row holding personal data reaches DST's server, its log included.
   In both passes the blocks are computed by worker processes (one per core) forked once
   what the pass reads stops changing (:mod:`drkit.sanitize.workers`; the run reads,
   stores, records and writes); the e-mail map is read by no worker while it is filled;
8. constraints: filters a source could not apply run in the build, on the sanitized
   rows (children first); then SRC's DDL after the rows (indexes, keys, triggers) and the
   sequence values;
9. the scan of what the build computed itself: the catalog and the materialized views
   (exit 3, :mod:`drkit.sanitize.scan`), with row-level security refused, not obeyed;
   then the ``copy: true`` tables met for the first time are pinned (never before a clean
   scan, never by a dry run);
10. publish: DST renamed aside (if it is still the database identified in 1), the build
    given DST's privileges and drkit's stamp (:func:`~drkit.sanitize.guards.stamp`) and
    renamed to DST, in one transaction, waiting for DST's lock a bounded time.  It is the
    last step: nothing after it can fail the run (``on_published`` tells the caller).

Any failure or interrupt before 10 drops the build: DST is exactly as it was.
``--dry-run`` stops after 3 with the rows each table would get, once the privileges the
run needs on DST's server are proved, and writes nothing; ``--scan-only`` reads the
originals (4 and 6) and scans DST as it is, every row; ``sanitize scan``
(:func:`scan_source`) runs 3, 4, 6 and 7 without writing anything and scans SRC's catalog.

The sources (:mod:`drkit.sanitize.sources`) differ only in where schema and rows come
from; both serve the two passes the same rows.  Live: one exported snapshot of SRC, read
only, joined by every read; the filters run there.  Backup:
the DDL restored from the archive into the build (or a scratch database for a dry run
or a scan), rows parsed from its data section (each pass reads the same checked archive
again); every row is loaded, and the filters run
in the build on the already sanitized rows, which is why they may only read kept
columns.  The orchestrator calls the source; the source never calls back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql
from pydantic import SecretStr

from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, OperationError, SafetyRefused, UsageError
from drkit.pg import (
    build_aside,
    connect,
    describe,
    first_line,
    installs,
    list_tables,
    prove_privileges,
)
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
from drkit.sanitize.pump import Result, pump
from drkit.sanitize.report import LeakFound, Options, ProgressFn, Report, TableReport
from drkit.sanitize.rules import Rules, load_rules, resolve_rules
from drkit.sanitize.scan import LeakIndex, LeakReport, pii_kind, scan_database
from drkit.sanitize.scan.catalog import remote_definitions
from drkit.sanitize.scan.content import holds_versions
from drkit.sanitize.scan.inflight import (
    ColumnScan,
    FlightScanner,
    NameIndex,
    ScanHits,
    hits_listing,
)
from drkit.sanitize.scan.leakfilter import Prepared, prepare
from drkit.sanitize.schema import Column
from drkit.sanitize.sources import Read, Rows, SequenceValue, Source, open_live
from drkit.sanitize.strategies import (
    ALL_KINDS,
    Compiler,
    JsonPaths,
    Keep,
    Pseudonymizer,
    ReplacePii,
    Template,
    fake_specs,
    pool_values,
)
from drkit.sanitize.strategies.pseudomap import PseudonymMap, PutLog
from drkit.sanitize.subset import Selection, select_rows, topological
from drkit.sanitize.transform import RowTransformer, row_originals
from drkit.sanitize.workers import Computing, Setup, forked_workers, worker_count

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def scan_source(src: Policy, rules_path: Path, on_progress: ProgressFn | None = None) -> Report:
    """``drkit sanitize scan SRC --rules R``: what a run would copy, searched for originals
    and personal data by content; nothing is written (exit 3 on a finding, with the
    report)."""
    rules = load_rules(rules_path)
    if rules.from_env != src.name:
        raise UsageError(f"{rules.source}: the rules are for {rules.from_env}, not {src.name}")
    if rules.salt is None:  # the search does not depend on the pseudonyms' salt
        rules = dataclasses.replace(rules, salt=SecretStr("drkit-sanitize-scan"))
    options = Options(rules_path=rules_path, scan_source=True)
    run = _Run(src, src, rules, options, on_progress)
    run.report.dst = rules.to_env
    try:
        run.build()
    finally:
        run.close()
    return run.report


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


@dataclasses.dataclass
class Originals:
    """What the originals pass found in one block: the forms the leak index stores, the
    forms of masked person names (both ready to store), and the e-mail map's puts."""

    forms: list[Prepared]
    names: list[Prepared]
    puts: list[tuple[str, str]]


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
        self.writes = not (options.dry_run or options.scan_only or options.scan_source)
        # the rows searched in flight: a run's, and those ``sanitize scan`` reads
        self.scans = self.writes or options.scan_source
        self.src_dsn = database_dsn(src)
        self.dst_dsn = database_dsn(dst)
        self.write_dsn = self.dst_dsn  # the build database once there is one
        self.leaks = LeakIndex()
        self.names = NameIndex()  # the last words of masked person names
        self.scanner: FlightScanner  # made once the originals are all known
        self.failed = threading.Event()  # a block held a hit: nothing more is written
        self._filled: set[str] = set()  # the build's tables written (each once: COPY FREEZE)
        self._filled_lock = threading.Lock()
        self.plan: Plan | None = None
        self.source_concurrent = False
        # the tables whose e-mail templates the originals pass registers (see prime)
        self.filling: set[str] = set()
        self.pseudo = Pseudonymizer(rules.salt_bytes())
        if not options.dry_run:  # the pools are made while the run connects and builds
            self.pseudo.prefetch(fake_specs(rules.strategies()))
        if self.writes:
            # pg_dump and pg_restore are looked for (a --version run per install) meanwhile
            threading.Thread(target=_find_installs, name="drkit-pg-installs", daemon=True).start()
        self.compiler = Compiler.for_rules(self.pseudo, rules.strategies(), self.leaks.add)
        mode = (
            "dry-run"
            if options.dry_run
            else "scan-only"
            if options.scan_only
            else "scan"
            if options.scan_source
            else "run"
        )
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

    # -- 1, 2 and 10: guards, the build database, publishing ------------------------------

    def build(self) -> None:
        src, dst, options = self.src, self.dst, self.options
        if options.scan_source:
            self.scan_source()
            return
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
                self.pin()
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
        self.plan = plan
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
            refuse_connections(self.write_dsn, f"{self.dst.name}'s copy")
            self.phase("schema")
        self.pump(source, plan, selections)
        self.phase("data" if self.writes else "read")
        if self.writes and not self.scanner.hits.clean:
            self.scan()  # the catalog restored so far too, for the whole listing
        if not self.writes:
            return
        if self.writes:
            if in_build:
                self.filter_in_build(plan)
            source.post_data(self.write_dsn, self.options.jobs)
            _set_sequences(self.write_dsn, source.sequences())
            self.phase("constraints")

    def settle_plan(self, plan: Plan) -> None:
        """What the rules leave out, into the report; the drift guard (exit 3).  The
        ``copy: true`` tables met for the first time are pinned only once the copy's
        scan found nothing (:meth:`pin`), never by a dry run or a scan."""
        cov = plan.coverage
        self.report.unlisted_tables = cov.unlisted_tables
        self.report.unlisted_columns = cov.unlisted_columns
        self.report.pii_kept = cov.pii_kept
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
        """Fill the e-mail map from the template columns of whole tables, before the
        originals pass; or leave it to that pass (:attr:`filling`), which reads those
        tables whole anyway, when the source can open its reads in any order and none
        of those tables reads the map itself."""
        found = primers(plan, self.compiler)
        if source.concurrent and not any(_reads_email_map(p.table) for p in found):
            self.filling = {p.table.key for p in found}
            return
        wanted = [Read(p.table, p.columns, Selection()) for p in found]
        if wanted:
            for rows in source.rows(wanted, only_these=True):
                primer = primer_for(rows.read.table, self.compiler, order=rows.columns)
                assert primer is not None
                what = f"reading the e-mail templates of {rows.read.table.key}"
                with _failing_as(what), rows.open() as lines:
                    primer.feed(lines)
        self.compiler.emails_primed = True

    def pump(self, source: Source, plan: Plan, selections: dict[str, Selection]) -> None:
        """Two passes; the strategies run once, in the second.

        The originals pass: every row of every masked table (those a filter leaves out
        too), reading only the columns the originals need (:func:`_originals_read`),
        through :func:`row_originals`, which hands every original to the leak index
        without computing what would be written.  Then, every original known, the write
        pass: every copied table read once from the source (the live source's one
        snapshot, or the backup's same archive: the rows of the first pass), each block
        through the strategies, searched in flight (:mod:`drkit.sanitize.scan.inflight`)
        before a byte of it is written; the strategies (Python) run beside the server's
        COPY, and no sanitized row waits on local disk."""
        copied = [
            tp for tp in plan.tables if tp.action != "schema-only" and (self.scans or tp.masked)
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
        self.report.tables = [reports[tp.key] for tp in plan.tables]
        # every row of every masked table, whatever the filters draw: a row a filter
        # leaves out may be quoted in kept text, and a volatile filter (random(), now()
        # in each read's own transaction) draws other rows at each read
        first: dict[Read, TableReport | None] = {
            _originals_read(tp): reports[tp.key] if selections[tp.key].everything else None
            for tp in plan.tables
            if tp.masked
        }
        self.source_concurrent = source.concurrent
        if first:
            self.originals(source, plan, first)
        self.compiler.emails_primed = True  # filled before the pass, or by it
        if not self.scans:  # --scan-only: DST is scanned as it is, every row
            return
        self.scanner = FlightScanner(
            self.leaks.searcher(pool_values(self.pseudo, self.rules.strategies())),
            self.names.freeze(),
        )
        writer = self.compiler.writing()  # every original is known: nothing more to hand
        second = {_read(tp, selections[tp.key]): reports[tp.key] for tp in copied}
        with self.forked(self.writing(plan, writer)) as workers:
            self._each(
                source.rows(list(second)),
                lambda rows: self.write(rows, second[rows.read], workers),
            )

    @contextlib.contextmanager
    def forked(self, setup: Setup) -> Iterator[Computing]:
        """Where a pass's blocks are computed: ``setup``'s functions in worker processes
        (:mod:`drkit.sanitize.workers`: one per core, and at least ``--jobs``), forked
        now (one table's blocks may be under way in several at once); else (no fork
        here) in the tables' own threads."""
        self.pseudo.settle(fake_specs(self.rules.strategies()))  # every pool made here
        workers = forked_workers(worker_count(self.options.jobs), setup)
        try:
            yield Computing(setup, workers)
        finally:
            if workers is not None:
                workers.close()

    def writing(self, plan: Plan, writer: Compiler) -> Setup:
        """The write pass's block function of a table: its rows through the strategies,
        and what the in-flight scan finds in them (the run records it: :meth:`write`)."""
        self.compiler.emails.settle()  # only read from now on
        by_key = {tp.key: tp for tp in plan.tables}

        def setup(key: str, columns: list[str]) -> Callable[[bytes], Result]:
            tp = by_key[key]
            strategies = {c.name: s for c, s in tp.columns}
            transformer = RowTransformer([(c, strategies[c]) for c in columns], writer)
            search = self.scanner.table(self.scan_columns(tp, columns)).search
            if transformer.passthrough:
                return lambda block: (None, search(block))

            def written(block: bytes) -> Result:
                out = transformer.block(block)
                return out, search(out)

            return written

        return setup

    def reading(self, plan: Plan, *, filling: bool) -> Setup:
        """The originals pass's block function of a table: the originals of its rows, as
        the forms the leak index stores (and the names', and the e-mail map's puts),
        handed to the run (:meth:`load`).  ``filling``: the e-mail map is being filled,
        and may not be read."""
        if not filling:
            self.compiler.emails.settle()
        by_key = {tp.key: tp for tp in plan.tables}
        run = self.compiler
        held = run.emails
        assert isinstance(held, PseudonymMap), "the run's own e-mail map"

        def setup(key: str, columns: list[str]) -> Callable[[bytes], Result]:
            tp = by_key[key]
            forms: list[Prepared] = []
            names: list[Prepared] = []

            def ready(into: list[Prepared]) -> Callable[[set[bytes]], None]:
                return lambda found: into.extend(p for p in [prepare(found)] if p is not None)

            leaks, people = LeakIndex(store=ready(forms)), NameIndex(store=ready(names))
            emails = PutLog(held, readable=not filling)
            compiler = run.handing(leaks.add, emails)
            strategies = {c.name: s for c, s in tp.columns}
            observe = {c.name: people.add for c, s in tp.columns if s.MASKS and _is_name(c)}
            reader = row_originals([(c, strategies[c]) for c in columns], compiler, observe)

            def read(block: bytes) -> Result:
                reader.block(block)
                leaks.flush()
                people.flush()
                found = Originals(forms[:], names[:], emails.drain())
                forms.clear()
                names.clear()
                return None, found

            return read

        return setup

    def originals(self, source: Source, plan: Plan, first: dict[Read, TableReport | None]) -> None:
        """The originals pass over ``first``'s reads.  When it fills the e-mail map too
        (:meth:`prime`), the tables whose templates register addresses are read first
        (and those whose strategies read nothing of the map meanwhile), those whose
        strategies read the map only once every one of them is done."""
        rows = source.rows(list(first), only_these=True)
        filling = self.filling

        def load(computing: Computing) -> Callable[[Rows], None]:
            return lambda read: self.load(read, first[read.read], computing)

        if not filling:
            with self.forked(self.reading(plan, filling=False)) as computing:
                self._each(rows, load(computing))
            return
        fills: list[Rows] = []
        others: list[Rows] = []
        waits: list[Rows] = []
        for read in rows:
            table = read.read.table
            group = fills if table.key in filling else waits if _reads_email_map(table) else others
            group.append(read)
        unread = filling - {read.read.table.key for read in fills}
        if unread:  # the map would be written to after the pass: never
            raise RuntimeError(f"the originals pass does not read {sorted(unread)[0]}")
        with self.forked(self.reading(plan, filling=True)) as computing:
            self._each(others, load(computing), first=fills)
        self.compiler.emails_primed = True  # the tables read from now on find it full
        if waits:
            with self.forked(self.reading(plan, filling=False)) as computing:
                self._each(waits, load(computing))

    def _each(
        self,
        items: Iterable[_T],
        fn: Callable[[_T], None],
        *,
        first: Iterable[_T] = (),
    ) -> None:
        """``fn`` over ``first`` (started first) and ``items``, ``--jobs`` at a time when
        the source reads at once."""
        if self.source_concurrent and self.options.jobs > 1:
            pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.options.jobs, thread_name_prefix="drkit-sanitize"
            )
            try:
                futures = [pool.submit(fn, item) for item in itertools.chain(first, items)]
                for future in concurrent.futures.as_completed(futures):
                    future.result()  # the first failure propagates
            except BaseException:
                # don't wait for the other tables: dropping the build ends their sessions
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
        else:
            # one item at a time: a backup's reads are one stream, each read's rows
            # consumed before the next read is taken
            for item in itertools.chain(first, items):
                fn(item)

    def load(self, rows: Rows, report: TableReport | None, computing: Computing) -> None:
        """The originals pass over one read: its originals to the leak index (and the
        masked person names to the name index, the e-mail templates' outputs to the
        map); nothing is written."""
        tp, selection = rows.read.table, rows.read.selection
        emails = self.compiler.emails
        assert isinstance(emails, PseudonymMap), "the run's own e-mail map"

        def store(_block: bytes, found: object) -> bool:
            assert isinstance(found, Originals)
            for prepared in found.forms:
                self.leaks.store(prepared)
            for prepared in found.names:
                self.names.store(prepared)
            emails.put_many(found.puts)
            return True

        progress = self.on_progress if report is not None else None
        # reltuples (-1: never analyzed) is the estimate when every row is copied
        estimate = tp.table.estimated_rows if selection.everything else selection.rows
        started = time.monotonic()
        with (
            _failing_as(f"copying {tp.key}"),
            rows.open() as lines,
            computing.stage(tp.key, rows.columns) as stage,
            Meter(
                progress,
                "read",
                tp.key,
                total=estimate if estimate is not None and estimate > 0 else None,
                unit="rows",
                estimate=selection.everything,
            ) as meter,
        ):
            count = pump(
                lines,
                None,
                stage,
                tp.key,
                (lambda _key, n: meter(n)) if progress is not None else None,
                store,
            )
        if report is not None:
            report.rows = count
            report.seconds = time.monotonic() - started

    def write(self, rows: Rows, report: TableReport | None, computing: Computing) -> None:
        """The write pass over one copied table: its rows through the strategies (none:
        passed through as they are), searched, into the build."""
        tp = rows.read.table
        failed = self.failed
        scanner = self.scanner

        def gate(block: bytes, found: object) -> bool:
            assert isinstance(found, ScanHits)
            scanner.record(found, block.count(b"\n"), len(block))
            if not found.clean:
                failed.set()
            return found.clean and not failed.is_set()

        started = time.monotonic()
        progress = self.on_progress if report is not None else None
        estimate = tp.table.estimated_rows
        with (
            _failing_as(f"copying {tp.key}"),
            rows.open() as lines,
            self.copy_in(tp, rows.columns, write=self.writes) as target,
            computing.stage(tp.key, rows.columns) as stage,
            Meter(
                progress,
                "copy",
                tp.key,
                total=estimate if estimate > 0 else None,
                unit="rows",
                estimate=True,
            ) as meter,
        ):
            count = pump(
                lines,
                target,
                stage,
                tp.key,
                (lambda _key, n: meter(n)) if progress is not None else None,
                gate,
            )
        if report is not None:
            report.rows = count
            report.seconds += time.monotonic() - started

    def scan_columns(self, tp: TablePlan, columns: list[str]) -> list[ColumnScan]:
        """How each column of ``tp``'s rows is searched (in the rows' order).

        Kept columns: by content, but for what a review accepts.  Columns a strategy
        rewrites in part (``replace_pii``, ``json``) keep the rest of their text: by
        content too, but for the kinds whose pseudonyms the strategy writes there."""
        by_name = {c.name: (c, s) for c, s in tp.columns}
        out = []
        for name in columns:
            column, strategy = by_name[name]
            place = f"{tp.table.schema}.{tp.table.name}.{name}"
            accepted: frozenset[str] | None = None
            if isinstance(strategy, Keep):
                accepted = strategy.accepted_pii()
            elif isinstance(strategy, ReplacePii):
                accepted = frozenset(strategy.kinds)
            elif isinstance(strategy, JsonPaths):
                accepted = _PSEUDONYM_KINDS
            carries = isinstance(strategy, Keep | ReplacePii | JsonPaths)
            searched = carries and accepted != ALL_KINDS
            out.append(
                ColumnScan(
                    place,
                    decode=carries and _text_like(column),
                    content=searched and _text_like(column),
                    ip_type=searched and column.typname in ("inet", "cidr"),
                    ip=not holds_versions(name),
                    accepted=accepted or frozenset(),
                    carries=carries,
                )
            )
        return out

    @contextlib.contextmanager
    def copy_in(
        self, tp: TablePlan, columns: list[str], *, write: bool
    ) -> Iterator[Callable[[bytes], object] | None]:
        """``COPY ... FROM STDIN`` into the build's table, committed on the way out; None
        when nothing is written."""
        if not write:
            yield None
            return
        with self._filled_lock:  # never a second COPY, which would empty the first's rows
            if tp.key in self._filled:
                raise RuntimeError(f"{tp.key} would be written twice into the build")
            self._filled.add(tp.key)
        table = sql.Identifier(tp.table.schema, tp.table.name)
        with connect(self.write_dsn, autocommit=False) as conn:
            conn.execute("SET LOCAL synchronous_commit = off")
            # the rows are written frozen: no later reader of the build (its index builds,
            # its foreign keys' checks) sets their hint bits page by page.  FREEZE needs the
            # table emptied in this transaction: it is empty, the build's own, written once
            conn.execute(sql.SQL("TRUNCATE ONLY {}").format(table))
            target = sql.SQL("COPY {} ({}) FROM STDIN (FREEZE)").format(
                table, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
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
        """Scan-only: DST as it is, every row.  A run: what the build computed itself
        (the catalog, the materialized views), its rows were searched in flight."""
        if self.options.scan_only:
            searcher = self.leaks.searcher(pool_values(self.pseudo, self.rules.strategies()))
        else:
            searcher = self.scanner.searcher
        with connect(self.write_dsn) as conn:
            try:
                require_every_row(conn, f"{self.dst.name}'s copy")
                conn.execute("SET row_security = off")
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"preparing the leak scan of {describe(self.write_dsn)}: {first_line(exc)}"
                ) from None
            leak = scan_database(conn, searcher, tables=self.options.scan_only)
        if not self.options.scan_only:
            self.merge_flight(leak)
        self.report.leak = leak
        self.phase("leak_scan")
        self.raise_for_hits(leak)

    def merge_flight(self, leak: LeakReport) -> None:
        """The in-flight scan's figures and hits into ``leak``."""
        flight = self.scanner
        leak.rows_scanned += flight.rows
        leak.bytes_scanned += flight.bytes
        if self.plan is not None:
            leak.columns_scanned += sum(len(tp.columns) for tp in self.plan.tables)
        leak.ambiguous = flight.searcher.ambiguous
        leak.originals = flight.searcher.originals
        for place, count in flight.hits.originals.items():
            leak.hits[place] = leak.hits.get(place, 0) + count
        for place, kinds in flight.hits.content.items():
            leak.pii.setdefault(place, {}).update(kinds)

    def raise_for_hits(self, leak: LeakReport) -> None:
        """Exit 3 naming where originals or personal data were found (never a value)."""
        if leak.clean:
            return
        parts = _listing(leak)
        if self.options.scan_only:
            ending = "DST is not safe to use"
        elif not self.writes:
            ending = "mask those columns, or record a person's review: {strategy: keep, pii: none}"
        else:
            ending = f"The copy was not published: {self.dst.name} is as it was"
        raise LeakFound(
            f"leak scan of {self.dst.name}: "
            + "; ".join(parts)
            + " (count of rows or objects; values not shown). "
            + ending,
            self.report,
        )

    def scan_source(self) -> None:
        """``sanitize scan``: SRC's rows as a run would copy them and SRC's catalog,
        searched; nothing is written anywhere."""
        with open_live(self.src_dsn, self.src.name, ddl=False) as source:
            self.copy(source)
        with connect(self.src_dsn) as conn:
            conn.read_only = True
            definitions = remote_definitions(conn)
            leak = scan_database(conn, self.scanner.searcher, tables=False, matviews=False)
        self.merge_flight(leak)
        for name in definitions:
            leak.pii.setdefault(name, {})["connection"] = 1
        self.report.leak = leak
        self.phase("leak_scan")
        if not leak.clean:
            raise LeakFound(
                f"sanitize scan of {self.src.name} with {self.rules.source}: "
                + "; ".join(_listing(leak))
                + " (count of rows or objects; values not shown): mask those columns, or "
                "record a person's review in the rules ({strategy: keep, pii: none}  # why)",
                self.report,
            )

    def pin(self) -> None:
        """The ``copy: true`` tables met for the first time, pinned into the rules file
        now that the copy's scan found nothing in them."""
        if self.plan is not None:
            self.report.pinned = self.plan.settle_pins()


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


def _listing(leak: LeakReport) -> list[str]:
    parts = []
    if leak.hits:
        listing = "; ".join(f"{where}: {count}" for where, count in sorted(leak.hits.items()))
        parts.append(f"original values of masked columns found in {listing}")
    if leak.pii:
        parts.append(
            "personal data in what would reach DST unmasked: " + hits_listing(leak.pii.items())
        )
    return parts


#: what the strategies at a ``json`` column's paths may write there: pseudonyms of these
_PSEUDONYM_KINDS = frozenset({"email", "phone", "ip"})


def _reads_email_map(tp: TablePlan) -> bool:
    """A table with a column whose strategy reads the run's e-mail map."""
    return any(strategy.reads_email_map() for _, strategy in tp.columns)


def _is_name(column: Column) -> bool:
    """A column of person names (its masked originals are searched in kept text)."""
    return pii_kind(column) in ("name", "last_name")


def _text_like(column: Column) -> bool:
    """A column whose values can carry personal data as text (searched by content)."""
    if column.typname in ("uuid", "inet", "cidr", "macaddr", "macaddr8"):
        return False
    if column.category == "A":
        return column.element_category in ("S", "U", "C")
    return column.category in ("S", "U", "C") or column.is_json


def refuse_connections(dsn: str, what: str) -> None:
    """Exit 3 before any row is written when a view or function of the copy carries
    credentials or opens a connection to another server: in the copy it would return
    that server's rows, live."""
    with connect(dsn) as conn:
        found = remote_definitions(conn)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise CheckFailed(
            f"{what}: {', '.join(found[:3])}{more} carries credentials or connects to another "
            "server (dblink or a connection string in its definition): queried in the copy it "
            "would return that server's rows; drop it in SRC or rewrite it without them"
        )


def _read(tp: TablePlan, selection: Selection) -> Read:
    return Read(tp, [c.name for c, _ in tp.columns], selection)


def _originals_read(tp: TablePlan) -> Read:
    """The columns the originals of ``tp``'s rows need: the masked ones and those their
    templates read (and theirs), in the table's order."""
    strategies = {c.name: s for c, s in tp.columns}
    wanted = {name for name, s in strategies.items() if s.MASKS}
    todo = list(wanted)
    while todo:
        strategy = strategies[todo.pop()]
        if isinstance(strategy, Template):
            for field in strategy.fields():
                if field not in wanted:
                    wanted.add(field)
                    todo.append(field)
    return Read(tp, [c.name for c, _ in tp.columns if c.name in wanted], Selection())


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
