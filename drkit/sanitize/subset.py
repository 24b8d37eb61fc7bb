"""Which rows of each table are copied, as SQL predicates that keep every foreign key valid.

Row restrictions come from ``where`` filters, ``rows: none`` and the ``subset`` rule.
With a subset, the start table's rows are chosen by its filter, then every row they
reference through foreign keys is added, transitively and until nothing new is found
(cycles such as ``user -> organization -> owner user`` terminate because a row is only
added once).  These "ancestor" tables are selected by ``ctid`` within the snapshot.

Every other table that references a restricted table keeps only the rows whose
references are kept (or NULL), so no foreign key in the target points at a missing row.
All predicates are composed with :mod:`psycopg.sql`; filters are the sqlglot-checked SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError, RulesError
from drkit.pg import first_line
from drkit.sanitize.plan import Plan
from drkit.sanitize.rules import SubsetRule
from drkit.sanitize.schema import ForeignKey, Table

log = logging.getLogger(__name__)

Predicate = Callable[[str], sql.Composable]  # alias -> boolean SQL over that alias


@dataclass
class Selection:
    """The rows of one table that are copied: all, none, or those matching ``predicate``."""

    none: bool = False
    predicate: Predicate | None = None
    reason: str = ""
    rows: int | None = None  # known for ctid selections

    @property
    def everything(self) -> bool:
        return not self.none and self.predicate is None

    def where_sql(self, alias: str) -> sql.Composable | None:
        if self.none:
            return sql.SQL("false")
        return self.predicate(alias) if self.predicate else None


def _filter_predicate(text: str) -> Predicate:
    # the filter's columns are unqualified and belong to this table: scope does the rest
    return lambda _alias: sql.SQL("({})").format(sql.SQL(text))


def _ctid_predicate(ctids: set[str]) -> Predicate:
    ordered = sorted(ctids, key=_ctid_key)
    return lambda alias: sql.SQL("{}.ctid = ANY({}::tid[])").format(
        sql.Identifier(alias), sql.Literal(ordered)
    )


def _ctid_key(ctid: str) -> tuple[int, int]:
    block, _, offset = ctid.strip("()").partition(",")
    return int(block), int(offset)


def _and(predicates: list[Predicate]) -> Predicate:
    def combined(alias: str) -> sql.Composable:
        return sql.SQL("(") + sql.SQL(" AND ").join(p(alias) for p in predicates) + sql.SQL(")")

    return combined


def _ancestors(tables: dict[str, Table], start: str) -> list[str]:
    order = [start]
    seen = {start}
    i = 0
    while i < len(order):
        for fk in tables[order[i]].foreign_keys:
            if fk.ref_table not in seen and fk.ref_table in tables:
                seen.add(fk.ref_table)
                order.append(fk.ref_table)
        i += 1
    return order


def _query(conn: psycopg.Connection[Any], query: sql.Composed, what: str) -> list[str]:
    try:
        return [str(r[0]) for r in conn.execute(query).fetchall()]
    except psycopg.Error as exc:
        raise DatabaseError(f"subset: {what}: {first_line(exc)}") from None


def _pull_parents(
    conn: psycopg.Connection[Any],
    tables: dict[str, Table],
    start: str,
    start_where: str,
) -> dict[str, set[str]]:
    """ctids of the start rows and, transitively, of every row they reference."""
    members = _ancestors(tables, start)
    kept: dict[str, set[str]] = {key: set() for key in members}
    first = tables[start]
    initial = _query(
        conn,
        sql.SQL("SELECT ctid FROM ONLY {} WHERE ({})").format(
            sql.Identifier(first.schema, first.name),
            sql.SQL(start_where),
        ),
        f"start rows of {start}",
    )
    kept[start].update(initial)
    frontier: dict[str, set[str]] = {start: set(initial)}
    rounds = 0
    while any(frontier.values()):
        rounds += 1
        nxt: dict[str, set[str]] = {}
        for key, delta in frontier.items():
            if not delta:
                continue
            child = tables[key]
            for fk in child.foreign_keys:
                if fk.ref_table not in kept:
                    continue
                parent = tables[fk.ref_table]
                join = sql.SQL(" AND ").join(
                    sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(f))
                    for f, r in zip(fk.columns, fk.ref_columns, strict=True)
                )
                found = _query(
                    conn,
                    sql.SQL(
                        "SELECT DISTINCT p.ctid FROM ONLY {} p JOIN ONLY {} c ON {} "
                        "WHERE c.ctid = ANY({}::tid[])"
                    ).format(
                        sql.Identifier(parent.schema, parent.name),
                        sql.Identifier(child.schema, child.name),
                        join,
                        sql.Literal(sorted(delta, key=_ctid_key)),
                    ),
                    f"rows {key} references in {fk.ref_table}",
                )
                new = set(found) - kept[fk.ref_table]
                if new:
                    kept[fk.ref_table] |= new
                    nxt.setdefault(fk.ref_table, set()).update(new)
        frontier = nxt
    log.debug("subset closure over %d tables in %d rounds", len(members), rounds)
    return kept


def _references_predicate(fk: ForeignKey, parent: Table, parent_pred: Predicate) -> Predicate:
    alias_parent = f"p_{parent.name}"[:60]

    def pred(alias: str) -> sql.Composable:
        nulls = [
            sql.SQL("{}.{} IS NULL").format(sql.Identifier(alias), sql.Identifier(c))
            for c in fk.columns
        ]
        join = sql.SQL(" AND ").join(
            sql.SQL("{}.{} = {}.{}").format(
                sql.Identifier(alias_parent),
                sql.Identifier(r),
                sql.Identifier(alias),
                sql.Identifier(f),
            )
            for f, r in zip(fk.columns, fk.ref_columns, strict=True)
        )
        exists = sql.SQL("EXISTS (SELECT 1 FROM ONLY {} {} WHERE {} AND {})").format(
            sql.Identifier(parent.schema, parent.name),
            sql.Identifier(alias_parent),
            join,
            parent_pred(alias_parent),
        )
        return sql.SQL("(") + sql.SQL(" OR ").join([*nulls, exists]) + sql.SQL(")")

    return pred


def topological(tables: dict[str, Table]) -> list[str]:
    """Parents before children (self references and cycles broken arbitrarily)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            return  # a cycle: leave the rest to the caller
        state[key] = 1
        for fk in tables[key].foreign_keys:
            if fk.ref_table in tables and fk.ref_table != key:
                visit(fk.ref_table)
        state[key] = 2
        order.append(key)

    for key in sorted(tables):
        visit(key)
    return order


def select_rows(
    conn: psycopg.Connection[Any], plan: Plan, subset: SubsetRule | None
) -> dict[str, Selection]:
    """The selection of every table of the plan (queries run on ``conn``'s snapshot)."""
    tables = {t.key: t.table for t in plan.tables}
    by_key = plan.by_key()
    selections: dict[str, Selection] = {}
    for key, tp in by_key.items():
        if tp.action == "schema-only":
            selections[key] = Selection(none=True, reason="rows: none")
        elif tp.where is not None:
            selections[key] = Selection(predicate=_filter_predicate(tp.where.sql), reason="where")
        else:
            selections[key] = Selection()
    ancestors: set[str] = set()
    if subset is not None:
        if subset.key not in tables:
            raise RulesError(f"{plan.rules.source}: subset.start.table: no table {subset.key}")
        start_where = subset.where.sql
        own = by_key[subset.key].where
        if own is not None:
            start_where = f"({start_where}) AND ({own.sql})"
        kept = _pull_parents(conn, tables, subset.key, start_where)
        for key, ctids in kept.items():
            if selections[key].none:
                continue
            if key != subset.key and by_key[key].where is not None:
                log.warning("subset: the where filter of %s is ignored: referenced rows win", key)
            reason = "subset start" if key == subset.key else "referenced by kept rows"
            selections[key] = Selection(
                predicate=_ctid_predicate(ctids), reason=reason, rows=len(ctids)
            )
        ancestors = set(kept)
    # children of restricted tables keep only rows whose parents are kept
    for key in topological(tables):
        if key in ancestors or selections[key].none:
            continue
        table = tables[key]
        extra: list[Predicate] = []
        for fk in table.foreign_keys:
            if fk.ref_table == key or fk.ref_table not in selections:
                continue
            parent_sel = selections[fk.ref_table]
            if parent_sel.everything:
                continue
            parent_pred: Predicate = (
                (lambda _a: sql.SQL("false")) if parent_sel.none else parent_sel.predicate  # type: ignore[assignment]
            )
            extra.append(_references_predicate(fk, tables[fk.ref_table], parent_pred))
        if extra:
            current = selections[key]
            preds = ([current.predicate] if current.predicate else []) + extra
            reason = "references kept rows" + (f", {current.reason}" if current.reason else "")
            selections[key] = Selection(predicate=_and(preds), reason=reason)
    return selections
