"""Row filters (``where`` and subset filters): parsed with sqlglot and allowed only when safe.

A filter is exactly one boolean SQL expression over the columns of its own table:
no second statement, no subquery (so nothing can write or read another table), and
only functions known to be read-only.  What reaches PostgreSQL is sqlglot's rendering
of the checked syntax tree, never the text as written.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

# Functions sqlglot does not model itself (exp.Anonymous) that are safe in a filter.
_ALLOWED_ANONYMOUS = frozenset(
    {
        "age",
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "clock_timestamp",
        "date_part",
        "make_date",
        "make_interval",
        "make_timestamp",
        "make_timestamptz",
        "to_date",
        "to_timestamp",
        "to_char",
        "to_number",
        "justify_days",
        "justify_hours",
        "isfinite",
        "btrim",
        "ltrim",
        "rtrim",
        "lpad",
        "rpad",
        "split_part",
        "strpos",
        "position",
        "starts_with",
        "char_length",
        "character_length",
        "octet_length",
        "md5",
        "hashtext",
        "abs",
        "mod",
        "div",
        "sign",
        "width_bucket",
        "host",
        "family",
        "masklen",
        "network",
        "jsonb_typeof",
        "json_typeof",
        "jsonb_array_length",
        "json_array_length",
        "array_length",
        "cardinality",
        "nullif",
        "greatest",
        "least",
        "coalesce",
        "regexp_like",
        "lower",
        "upper",
        "length",
    }
)


@functools.cache
def _node_kinds() -> tuple[tuple[type[Any], ...], tuple[type[Any], ...]]:
    """(node types that must never appear, node types a filter may be): sqlglot is
    imported on the first filter, not by every command that loads rules."""
    from sqlglot import exp

    # Typed sqlglot nodes that must never appear, whatever their position.
    forbidden: tuple[type[Any], ...] = (
        exp.Query,  # SELECT, UNION, ... (subqueries)
        exp.Subquery,
        exp.DML,  # INSERT, UPDATE, DELETE, MERGE
        exp.DDL,  # CREATE, ...
        exp.Drop,
        exp.Alter,
        exp.TruncateTable,
        exp.Grant,
        exp.Command,
        exp.Into,
        exp.With,
        exp.CTE,
        exp.Placeholder,
        exp.Parameter,
        exp.Star,
        exp.Transaction,
        exp.Commit,
        exp.Rollback,
        exp.Set,
        exp.Pragma,
        exp.Use,
        exp.Window,
        exp.AggFunc,
    )

    roots: tuple[type[Any], ...] = (
        exp.Predicate,  # =, <>, <, LIKE, IN, BETWEEN, IS, EXISTS, ...
        exp.Connector,  # AND, OR
        exp.Not,
        exp.Boolean,
        exp.Column,
        exp.Xor,
    )
    return forbidden, roots


class FilterError(ValueError):
    """The filter is not acceptable; the message says why (no file or table: the caller adds them)."""


@dataclass(frozen=True)
class RowFilter:
    """A checked filter: the rendered SQL and the columns it reads."""

    sql: str
    columns: frozenset[str]

    def check_columns(self, available: Collection[str]) -> None:
        missing = sorted(c for c in self.columns if c not in available)
        if missing:
            raise FilterError(f"column {missing[0]!r} is not a column of this table")


def _unwrap(node: Any) -> Any:
    from sqlglot import exp

    while isinstance(node, exp.Paren):
        node = node.this
    return node


def parse_filter(text: str, *, table: str | None = None) -> RowFilter:
    """Check one filter expression; raise :class:`FilterError` with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("the filter is empty")
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    forbidden, roots = _node_kinds()
    try:
        statements = sqlglot.parse(text, read="postgres")
    except (ParseError, TokenError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise FilterError(f"not valid SQL: {first}") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise FilterError(
            f"exactly one boolean expression is allowed, found {len(statements)} statements"
        )
    root = statements[0]
    assert root is not None
    for node in root.walk():
        if isinstance(node, forbidden):
            kind = type(node).__name__.upper()
            if isinstance(node, exp.Query | exp.Subquery | exp.With | exp.CTE):
                raise FilterError("subqueries are not allowed in a filter")
            raise FilterError(f"{kind} is not allowed in a filter")
        if isinstance(node, exp.Anonymous):
            name = str(node.name).lower()
            if name not in _ALLOWED_ANONYMOUS:
                raise FilterError(f"function {name}() is not allowed in a filter")
    if not isinstance(_unwrap(root), roots):
        raise FilterError("a filter must be a boolean expression (a comparison, AND, OR, ...)")
    columns: set[str] = set()
    for col in root.find_all(exp.Column):
        qualifier = col.table
        if qualifier and (table is None or qualifier != table):
            raise FilterError(f"column {col.sql()!r} refers to another table")
        if col.args.get("db") or col.args.get("catalog"):
            raise FilterError(f"column {col.sql()!r} refers to another table")
        columns.add(str(col.name))
        # render unqualified: the run places the filter in its own scope
        col.set("table", None)
    rendered = root.sql(dialect="postgres", comments=False)
    return RowFilter(sql=rendered, columns=frozenset(columns))
