"""Rules meet a live schema: what happens to each table and column, and what is not covered.

:func:`build_plan` raises :class:`~drkit.errors.RulesError` (exit 2) for rules that do
not fit the schema (unknown table or column, a filter over another table's columns, a
strategy that cannot keep a unique key unique, ...).  What the rules do not mention is
returned as :class:`Coverage`; under ``unlisted_*: fail`` the caller turns it into
:class:`~drkit.errors.CheckFailed` (exit 3), the guard against a column added by a
migration leaking into a lower environment.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Literal

from drkit.errors import CheckFailed, RulesError
from drkit.sanitize.rules import (
    Constant,
    Email,
    Fake,
    Hash,
    JsonPaths,
    Keep,
    Mask,
    Nullify,
    ReplacePii,
    Rules,
    Strategy,
    Template,
    describe_strategy,
    is_masked,
)
from drkit.sanitize.scan import pii_kind
from drkit.sanitize.schema import Column, Schema, Table
from drkit.sanitize.sqlfilter import FilterError, RowFilter

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
        return [(c, s) for c, s in self.columns if is_masked(s)]

    def strategies_text(self) -> dict[str, str]:
        return {c.name: describe_strategy(s) for c, s in self.masked}


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


_TEXT_ONLY = (Hash, Email, Mask, ReplacePii)


def _fail(rules: Rules, where: str, reason: str) -> RulesError:
    return RulesError(f"{rules.source}: {where}: {reason}")


def _check_column(rules: Rules, table: Table, column: Column, strategy: Strategy) -> None:
    where = f"tables.{table.name}.columns.{column.name}"
    if isinstance(strategy, _TEXT_ONLY) and not (column.category == "S" or column.is_json):
        raise _fail(
            rules, where, f"{strategy.strategy} needs a text column, {column.name} is {column.type}"
        )
    if isinstance(strategy, JsonPaths) and not (column.is_json or column.category == "S"):
        raise _fail(rules, where, f"json needs a json/jsonb/text column, not {column.type}")
    if isinstance(strategy, Nullify) and column.not_null:
        raise _fail(rules, where, "nullify on a NOT NULL column: use constant or fake")
    if isinstance(strategy, Template):
        _check_template(rules, table, column, strategy, where)
    _check_unique_indexes(rules, table, column, strategy, where)
    if not table.in_unique_key(column.name):
        return
    # a unique key must stay unique
    if isinstance(strategy, Constant | Mask):
        raise _fail(
            rules, where, f"{strategy.strategy} would make the unique column {column.name} collide"
        )
    if isinstance(strategy, Fake) and not strategy.unique:
        raise _fail(rules, where, "fake on a unique column needs unique: true")
    if isinstance(strategy, Hash) and strategy.length < 16:
        raise _fail(rules, where, "hash on a unique column needs length >= 16 to never collide")
    if isinstance(strategy, Template):
        kept = {
            name for name in strategy.fields() if isinstance(_strategy_of(rules, table, name), Keep)
        }
        keys = [table.primary_key, *table.unique_keys] if table.primary_key else table.unique_keys
        if not any(key and set(key) <= kept for key in keys):
            raise _fail(
                rules,
                where,
                "template on a unique column must use every column of a kept primary or "
                "unique key (e.g. {id}) so it never collides",
            )


def _check_template(
    rules: Rules, table: Table, column: Column, strategy: Template, where: str
) -> None:
    """Fields that exist and are copied; a rendering that fits the column's type."""
    fields = strategy.fields()
    for name in fields:
        found = table.column(name)
        if found is None:
            raise _fail(rules, where, f"template field {{{name}}} is not a column of {table.key}")
        if found.generated:
            raise _fail(
                rules,
                where,
                f"template field {{{name}}} is a generated column, computed in the target "
                "after the copy: use the columns it is computed from",
            )
    try:
        rendered = strategy.template.format_map({name: "1" for name in fields})
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _fail(rules, where, f"template {strategy.template!r} cannot render: {exc}") from None
    if column.category == "N" and not rendered.lstrip("-").isdigit():
        literal = "".join(part for part, *_ in string.Formatter().parse(strategy.template))
        if literal:
            raise _fail(
                rules,
                where,
                f"template {strategy.template!r} renders text with {literal!r} into "
                f"{column.name}, a {column.type} column",
            )


def _check_unique_indexes(
    rules: Rules, table: Table, column: Column, strategy: Strategy, where: str
) -> None:
    """Strategies that certainly collide under a unique index (expression, partial, NND)."""
    for index in table.unique_indexes:
        if column.name not in index.columns:
            continue
        if isinstance(strategy, Constant | Mask) and (index.expression or index.partial):
            raise _fail(
                rules,
                where,
                f"{strategy.strategy} would make rows collide under the unique index "
                f"{index.name} of {table.key} (it reads {column.name})",
            )
        if (
            isinstance(strategy, Nullify)
            and index.nulls_not_distinct
            and index.columns == (column.name,)
        ):
            raise _fail(
                rules,
                where,
                f"nullify would make rows collide under the unique index {index.name} of "
                f"{table.key} (NULLS NOT DISTINCT)",
            )


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
                # a copy: true table without a pin is pinned by the caller (drkit.sanitize.pins)
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
        elif any(is_masked(s) for _, s in columns):
            action = "mask"
        else:
            action = "copy"
        plans.append(TablePlan(table, action, columns, where=rule.where))
    return Plan(rules, plans, coverage)
