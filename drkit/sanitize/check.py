"""``drkit sanitize check SRC DST``: the rules against SRC's live schema, nothing copied.

It refuses (exit 4) what the run would refuse before copying: the direction guard, DST's
identity (:func:`~drkit.sanitize.guards.guard_target`), row-level security hiding SRC's
rows, and the privileges the run needs on DST's server (CREATEDB, DST's ownership:
:func:`~drkit.pg.builddb.prove_privileges`).

What it may write: the column list of a ``copy: true`` table met for the first time,
pinned into the rules file (:mod:`drkit.sanitize.rules.pins`) and listed in ``pinned``;
and it drops the builds that killed runs left next to DST (listed in ``leftovers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from drkit.config import Policy
from drkit.documents import Document, Shape, described
from drkit.pg import clean_leftovers, connect, prove_privileges
from drkit.sanitize.fit import check_constraints_fit
from drkit.sanitize.guards import check_direction, database_dsn, guard_target, require_every_row
from drkit.sanitize.plan import build_plan
from drkit.sanitize.rules import resolve_rules
from drkit.sanitize.schema import read_schema
from drkit.sanitize.strategies import Compiler, Pseudonymizer


@dataclass
class CheckReport:
    rules: str
    src: str
    dst: str
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    unlisted_tables: list[str] = field(default_factory=list)
    unlisted_columns: list[str] = field(default_factory=list)
    pii_kept: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    salt_set: bool = True
    pinned: dict[str, list[str]] = field(default_factory=dict)  # copy: true tables pinned now
    target: str = ""  # what the run may do on DST's server
    leftovers: list[str] = field(default_factory=list)  # killed runs' builds, dropped now

    @property
    def ok(self) -> bool:
        return not self.failures

    def document(self) -> SanitizeCheckDocument:
        return SanitizeCheckDocument(
            ok=self.ok,
            rules=self.rules,
            src=self.src,
            dst=self.dst,
            salt_set=self.salt_set,
            tables=self.tables,
            unlisted_tables=self.unlisted_tables,
            unlisted_columns=self.unlisted_columns,
            pii_kept=self.pii_kept,
            failures=self.failures,
            pinned=self.pinned,
            target=self.target,
            leftovers=self.leftovers,
        )


def check_rules(src: Policy, dst: Policy, rules_path: Path | None) -> CheckReport:
    """Rules errors raise (exit 2), what the run would refuse raises (exit 4); coverage
    failures are returned in ``failures``."""
    check_direction(src, dst)
    rules = resolve_rules(src, dst, rules_path, salt_required=False)
    src_dsn, dst_dsn = database_dsn(src), database_dsn(dst)
    # drkit's stamp is keyed by the salt: without it, DST's stamp cannot be recognised
    key = None if rules.salt is None else Pseudonymizer(rules.salt_bytes()).key("stamp")
    guard_target(src, dst, src_dsn, dst_dsn, stamp_key=key)
    target = prove_privileges(dst_dsn)
    leftovers = clean_leftovers(dst_dsn)
    with connect(src_dsn, autocommit=False) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        require_every_row(conn, src.name)
        schema = read_schema(conn)
        plan = build_plan(rules, schema)
        pinned = plan.settle_pins()
        # the pseudonyms' shape does not depend on the salt: an unset one still checks
        salt = rules.salt_bytes() if rules.salt is not None else b"drkit-sanitize-check"
        compiler = Compiler.for_rules(Pseudonymizer(salt), rules.strategies())
        check_constraints_fit(conn, plan, compiler)
        conn.rollback()
    cov = plan.coverage
    report = CheckReport(
        rules=rules.source,
        src=src.name,
        dst=dst.name,
        unlisted_tables=cov.unlisted_tables,
        unlisted_columns=cov.unlisted_columns,
        pii_kept=cov.pii_kept,
        failures=cov.failures(),
        salt_set=rules.salt is not None,
        pinned=pinned,
        target=target,
        leftovers=leftovers.dropped,
    )
    report.failures += [
        f"cannot drop {name}, an interrupted run's build: {why}" for name, why in leftovers.failed
    ]
    for tp in plan.tables:
        report.tables[tp.key] = {
            "action": tp.action,
            "listed": tp.listed,
            "where": tp.where.sql if tp.where else None,
            "strategies": tp.strategies_text(),
        }
    return report


# -- the --json documents --------------------------------------------------------


class CheckedTable(Shape):
    action: str
    listed: bool = described("the table is in the rules")
    where: str | None
    strategies: dict[str, str]


class SanitizeCheckDocument(Document):
    """`drkit sanitize check SRC DST --json` (exit 3 when the rules miss something)"""

    rules: str
    src: str
    dst: str
    salt_set: bool
    tables: dict[str, CheckedTable] = described("by schema.table")
    unlisted_tables: list[str]
    unlisted_columns: list[str]
    pii_kept: list[str]
    failures: list[str]
    pinned: dict[str, list[str]] = described("copy: true tables pinned to their columns now")
    target: str = described("what the run may do on DST's server (privileges proved)")
    leftovers: list[str] = described("builds interrupted runs left next to DST, dropped now")
