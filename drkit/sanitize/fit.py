"""Do the strategies' outputs satisfy SRC's CHECK constraints?  Asked before data moves.

For every CHECK constraint that reads a masked column, a few source rows that satisfy it
are sent through the table's strategies (in memory, nothing written) and the constraint's
own expression is evaluated over the results in SRC's read-only snapshot.  A constraint
the pseudonyms break is a rules error (exit 2) naming it; one that cannot be evaluated
this way (it calls something the snapshot refuses) is left to the build database, where
a failure still costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import RulesError
from drkit.sanitize.copytext import NULL, unescape
from drkit.sanitize.plan import Plan, TablePlan
from drkit.sanitize.schema import CheckConstraint
from drkit.sanitize.strategies import Compiler
from drkit.sanitize.transform import RowTransformer

log = logging.getLogger(__name__)

SAMPLE_ROWS = 20


def check_constraints_fit(conn: psycopg.Connection[Any], plan: Plan, compiler: Compiler) -> None:
    """Raise RulesError for the first CHECK constraint the strategies would break."""
    for tp in plan.tables:
        if tp.action == "schema-only" or not tp.masked:
            continue
        masked = {c.name for c, _ in tp.masked}
        copied = {c.name for c, _ in tp.columns}
        for check in tp.table.checks:
            if not masked & set(check.columns) or not set(check.columns) <= copied:
                continue
            if _breaks(conn, tp, check, compiler):
                raise RulesError(
                    f"{plan.rules.source}: tables.{tp.table.name}: the strategies for "
                    f"{', '.join(sorted(masked & set(check.columns)))} produce values that break "
                    f"the CHECK constraint {check.name} of {tp.key}; change the strategy "
                    "(e.g. a template or a domain that satisfies it)"
                )


def _breaks(
    conn: psycopg.Connection[Any], tp: TablePlan, check: CheckConstraint, compiler: Compiler
) -> bool:
    names = [(c.name, s) for c, s in tp.columns]
    picked = [i for i, (c, _) in enumerate(tp.columns) if c.name in check.columns]
    query = sql.SQL("COPY (SELECT {} FROM ONLY {} WHERE ({}) LIMIT {}) TO STDOUT").format(
        sql.SQL(", ").join(sql.Identifier(n) for n, _ in names),
        sql.Identifier(tp.table.schema, tp.table.name),
        sql.SQL(check.expression),  # the catalog's own text (pg_get_expr)
        sql.Literal(SAMPLE_ROWS),
    )
    try:
        with conn.transaction():
            data = b""
            with conn.cursor().copy(query) as copy:
                for chunk in copy:
                    data += bytes(chunk)
            if not data:
                return False
            out = RowTransformer(names, compiler).block(data)
            rows = []
            for line in out.split(b"\n")[:-1]:
                fields = line.split(b"\t")
                rows.append([None if fields[i] == NULL else unescape(fields[i]) for i in picked])
            columns = [tp.columns[i][0] for i in picked]
            values = sql.SQL(", ").join(
                sql.SQL("({})").format(
                    sql.SQL(", ").join(
                        sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(c.type))
                        for v, c in zip(row, columns, strict=True)
                    )
                )
                for row in rows
            )
            found = conn.execute(
                sql.SQL("SELECT count(*) FROM (VALUES {}) AS t({}) WHERE ({}) IS FALSE").format(
                    values,
                    sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
                    sql.SQL(check.expression),
                )
            ).fetchone()
    except psycopg.Error as exc:
        log.info("CHECK %s of %s not evaluated before the copy: %s", check.name, tp.key, exc)
        return False
    except ValueError:
        return False  # a strategy could not read a sample value: the copy will say so
    return bool(found and found[0])
