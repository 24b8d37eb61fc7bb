"""What a sanitize run carries between the orchestrator and its sources.

:mod:`drkit.sanitize.engine` drives a run; :mod:`drkit.sanitize.backupsource` reads a
backup instead of the live database.  Both use these types; neither imports the other's
internals, and a source never calls back into the orchestrator.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, UsageError
from drkit.pg.binaries import installs
from drkit.pg.connect import connect, first_line
from drkit.pg.conninfo import describe, with_dbname
from drkit.pg.tables import list_tables
from drkit.progress import OnProgress
from drkit.sanitize.guards import require_every_row
from drkit.sanitize.plan import Plan
from drkit.sanitize.rules import Rules
from drkit.sanitize.scan import LeakIndex, LeakReport, scan_database
from drkit.sanitize.strategies import Compiler, Pseudonymizer, fake_specs, pool_values

log = logging.getLogger(__name__)

ProgressFn = OnProgress  # phases "copy"/"read", one item per table, in rows


@dataclass
class Options:
    rules_path: Path | None = None
    from_backup: str | None = None
    dry_run: bool = False
    jobs: int = 1
    force: bool = False
    scan_only: bool = False
    keep_old: bool = False


@dataclass
class TableReport:
    table: str
    action: str  # copy | mask | schema-only
    rows: int | None
    selection: str
    strategies: dict[str, str]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "action": self.action,
            "rows": self.rows,
            "selection": self.selection,
            "strategies": self.strategies,
            "seconds": round(self.seconds, 3),
            "duration_seconds": round(self.seconds, 3),
        }


@dataclass
class Report:
    src: str
    dst: str
    rules: str
    source: str  # "live" or "backup <id>"
    mode: str  # run | dry-run | scan-only
    tables: list[TableReport] = field(default_factory=list)
    unlisted_tables: list[str] = field(default_factory=list)
    unlisted_columns: list[str] = field(default_factory=list)
    pii_kept: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    leak: LeakReport | None = None
    target_tables: int = 0

    @property
    def rows(self) -> int:
        return sum(t.rows or 0 for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "rules": self.rules,
            "source": self.source,
            "mode": self.mode,
            "rows": self.rows,
            "tables": [t.to_dict() for t in self.tables],
            "unlisted_tables": self.unlisted_tables,
            "unlisted_columns": self.unlisted_columns,
            "pii_kept": self.pii_kept,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "phases_seconds": {k: round(v, 3) for k, v in self.phases.items()},
            "leak_scan": self.leak.to_dict() if self.leak else None,
            "target_tables": self.target_tables,
        }


# ---------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------


def database_dsn(policy: Policy) -> str:
    """The one database a sanitize run reads or writes: a rules file describes the schema
    of one database, so a policy listing several is refused rather than half-copied."""
    names = policy.database.database_names()
    if len(names) > 1:
        raise UsageError(
            f"{policy.source}: database.databases lists {len(names)} databases "
            f"({', '.join(names)}); drkit sanitize copies one database: give it a policy "
            "whose database.databases names only the database to copy"
        )
    return with_dbname(policy.database.url.get_secret_value(), names[0])


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


class Run:
    """One run's inputs, report and leak index; the sources fill it, never drive it."""

    def __init__(self, src: Policy, dst: Policy, rules: Rules, options: Options) -> None:
        self.src = src
        self.dst = dst
        self.rules = rules
        self.options = options
        self.src_dsn = database_dsn(src)
        self.dst_dsn = database_dsn(dst)
        self.write_dsn = self.dst_dsn  # the build database during a run
        self.schema_dsn = self.dst_dsn  # where a backup source restores its pre-data
        self.leaks = LeakIndex()
        self.pseudo = Pseudonymizer(rules.salt_bytes())
        if not options.dry_run:  # the pools are made while the run connects and builds
            self.pseudo.prefetch(fake_specs(rules.strategies()))
        if not (options.dry_run or options.scan_only):
            # pg_dump and pg_restore are looked for (a --version run per install) meanwhile
            threading.Thread(target=_find_installs, name="drkit-pg-installs", daemon=True).start()
        self.compiler = Compiler.for_rules(self.pseudo, rules.strategies(), self.leaks.add)
        mode = "dry-run" if options.dry_run else "scan-only" if options.scan_only else "run"
        self.report = Report(
            src=src.name,
            dst=dst.name,
            rules=rules.source,
            source="live",
            mode=mode,
        )
        self._clock = time.monotonic()

    def sample_compiler(self) -> Compiler:
        """A compiler for trial runs (constraint fit) that leaves the run's state (its
        e-mail map) alone; the pseudonymizer (keys and pools, pure functions of the salt)
        is shared."""
        return Compiler.for_rules(self.pseudo, self.rules.strategies(), self.leaks.add)

    def close(self) -> None:
        """End what the run started in the background (the fake pool workers)."""
        self.pseudo.close()

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.report.phases[name] = self.report.phases.get(name, 0.0) + now - self._clock
        self._clock = now

    def finish_plan(self, plan: Plan) -> None:
        cov = plan.coverage
        self.report.unlisted_tables = cov.unlisted_tables
        self.report.unlisted_columns = cov.unlisted_columns
        self.report.pii_kept = cov.pii_kept
        plan.settle_pins()  # copy: true tables met for the first time
        cov.raise_for_failures(self.rules.source)

    def scan(self, plan: Plan) -> None:
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


def _find_installs() -> None:
    try:
        installs()  # fills the cache of each program's version
    except Exception as exc:  # the run's own lookup reports any problem
        log.debug("looking for PostgreSQL installs ahead: %s", exc)


class LeakFound(CheckFailed):
    """The leak scan found originals in DST (exit 3); carries the report."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


def count_target_tables(dsn: str) -> int:
    """Tables in DST's database (-1 when the database does not exist yet)."""
    try:
        with psycopg.connect(dsn, connect_timeout=15) as conn:
            return len(list_tables(conn))
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            return -1
        raise DatabaseError(f"cannot connect to {describe(dsn)}: {first_line(exc)}") from None
