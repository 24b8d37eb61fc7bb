"""Rules meet a live schema: what happens to each table and column, and what is not covered.

:func:`build_plan` raises :class:`~drkit.errors.RulesError` (exit 2) for rules that do
not fit the schema (unknown table or column, a filter over another table's columns, a
strategy that cannot keep a unique key unique, ...).  What the rules do not mention is
returned as :class:`Coverage`; under ``unlisted_*: fail`` the caller turns it into
:class:`~drkit.errors.CheckFailed` (exit 3), the guard against a column added by a
migration leaking into a lower environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drkit.errors import CheckFailed, RulesError
from drkit.sanitize.rules import FilterError, RowFilter, Rules, settle_pins
from drkit.sanitize.scan import pii_kind
from drkit.sanitize.schema import Column, Schema, Table
from drkit.sanitize.strategies import Keep, Strategy

Action = Literal["copy", "mask", "schema-only"]


@dataclass
class TablePlan:
    table: Table
    action: Action
    columns: list[tuple[Column, Strategy]]  # every COPY column, in order
    where: RowFilter | None = None
    listed: bool = True

    @property
    def key(self) -> str:
        return self.table.key

    @property
    def masked(self) -> list[tuple[Column, Strategy]]:
        return [(c, s) for c, s in self.columns if s.MASKS]

    def strategies_text(self) -> dict[str, str]:
        return {c.name: s.describe() for c, s in self.masked}


@dataclass
class Coverage:
    unlisted_tables: list[str] = field(default_factory=list)
    unlisted_columns: list[str] = field(default_factory=list)  # "schema.table.column"
    pii_kept: list[str] = field(default_factory=list)  # "schema.table.column (kind)"
    # copy: true tables without a pinned column list: key -> the columns they have now
    unpinned: dict[str, list[str]] = field(default_factory=dict)
    table_policy: str = "fail"
    column_policy: str = "fail"

    def failures(self) -> list[str]:
        problems = []
        if self.table_policy == "fail":
            problems += [f"table {t} is not in the rules" for t in self.unlisted_tables]
        if self.column_policy == "fail":
            problems += [f"column {c} is not in the rules" for c in self.unlisted_columns]
        return problems

    def raise_for_failures(self, source: str) -> None:
        problems = self.failures()
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise CheckFailed(
                f"{source}: schema drift: "
                + "; ".join(problems[:5])
                + more
                + " — add them to the rules (run drkit sanitize check for the full list)"
            )


@dataclass
class Plan:
    rules: Rules
    tables: list[TablePlan]
    coverage: Coverage

    def by_key(self) -> dict[str, TablePlan]:
        return {t.key: t for t in self.tables}

    def settle_pins(self) -> dict[str, list[str]]:
        """Pin the ``copy: true`` tables met for the first time into the rules file
        (:mod:`drkit.sanitize.rules.pins`); returns what was pinned."""
        pinned = settle_pins(self.rules, self.coverage.unpinned)
        self.coverage.unpinned = {}
        return pinned


def _fail(rules: Rules, where: str, reason: str) -> RulesError:
    return RulesError(f"{rules.source}: {where}: {reason}")


def _check_column(rules: Rules, table: Table, column: Column, strategy: Strategy) -> None:
    """The strategy's own rule: the column types and keys it can serve."""

    def kept(name: str) -> bool:
        return isinstance(_strategy_of(rules, table, name), Keep)

    problem = strategy.misfit(table, column, kept)
    if problem is not None:
        raise _fail(rules, f"tables.{table.name}.columns.{column.name}", problem)


def _strategy_of(rules: Rules, table: Table, column: str) -> Strategy:
    rule = rules.table(table.schema, table.name)
    if rule is None:
        return Keep()
    if rule.copy:
        return Keep()
    return rule.columns.get(column, Keep())


def build_plan(rules: Rules, schema: Schema) -> Plan:
    coverage = Coverage(
        table_policy=rules.defaults.unlisted_tables, column_policy=rules.defaults.unlisted_columns
    )
    for key, listed in rules.tables.items():
        found = schema.tables.get(key)
        if found is None:
            raise _fail(rules, f"tables.{listed.name}", f"no table {key} in the source database")
        for name in listed.columns:
            if found.column(name) is None:
                raise _fail(
                    rules, f"tables.{listed.name}.columns.{name}", f"no column {name} in {key}"
                )
        if listed.where is not None:
            try:
                listed.where.check_columns(found.column_names())
            except FilterError as exc:
                raise _fail(rules, f"tables.{listed.name}.where", str(exc)) from None
    if rules.subset is not None:
        start = schema.tables.get(rules.subset.key)
        if start is None:
            raise _fail(rules, "subset.start.table", f"no table {rules.subset.key} in the source")
        try:
            rules.subset.where.check_columns(start.column_names())
        except FilterError as exc:
            raise _fail(rules, "subset.start.where", str(exc)) from None

    plans: list[TablePlan] = []
    for key, table in schema.tables.items():
        rule = rules.tables.get(key)
        columns: list[tuple[Column, Strategy]] = []
        if rule is None:
            coverage.unlisted_tables.append(key)
            action: Action = "schema-only" if rules.defaults.unlisted_tables == "skip" else "copy"
            columns = [(c, Keep()) for c in table.copy_columns()]
            plans.append(TablePlan(table, action, columns, listed=False))
            continue
        for column in table.copy_columns():
            strategy = rule.columns.get(column.name)
            if strategy is None:
                # a copy: true table without a pin is pinned by the caller (settle_pins)
                if (rule.pinned or not rule.copy) and not (rule.rows == "none" or rule.skip):
                    coverage.unlisted_columns.append(f"{key}.{column.name}")
                strategy = Keep()
            _check_column(rules, table, column, strategy)
            if isinstance(strategy, Keep) and (kind := pii_kind(column)) is not None:
                coverage.pii_kept.append(f"{key}.{column.name} ({kind})")
            columns.append((column, strategy))
        if rule.copy and not rule.pinned and not (rule.rows == "none" or rule.skip):
            coverage.unpinned[key] = [c.name for c in table.copy_columns()]
        if rule.rows == "none" or rule.skip:
            action = "schema-only"
        elif any(s.MASKS for _, s in columns):
            action = "mask"
        else:
            action = "copy"
        plans.append(TablePlan(table, action, columns, where=rule.where))
    return Plan(rules, plans, coverage)
