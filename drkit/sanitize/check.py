"""``drkit sanitize check SRC DST``: the rules against SRC's live schema, nothing copied.

The one thing it may write: the column list of a ``copy: true`` table met for the first
time, pinned into the rules file (:mod:`drkit.sanitize.rules.pins`) and listed in ``pinned``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from drkit.config import Policy
from drkit.pg.connect import connect
from drkit.sanitize.fit import check_constraints_fit
from drkit.sanitize.guards import database_dsn
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

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rules": self.rules,
            "src": self.src,
            "dst": self.dst,
            "salt_set": self.salt_set,
            "tables": self.tables,
            "unlisted_tables": self.unlisted_tables,
            "unlisted_columns": self.unlisted_columns,
            "pii_kept": self.pii_kept,
            "failures": self.failures,
            "pinned": self.pinned,
        }


def check_rules(src: Policy, dst: Policy, rules_path: Path | None) -> CheckReport:
    """Rules errors raise (exit 2); coverage failures are returned in ``failures``."""
    rules = resolve_rules(src, dst, rules_path, salt_required=False)
    with connect(database_dsn(src), autocommit=False) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
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
    )
    for tp in plan.tables:
        report.tables[tp.key] = {
            "action": tp.action,
            "listed": tp.listed,
            "where": tp.where.sql if tp.where else None,
            "strategies": tp.strategies_text(),
        }
    return report
