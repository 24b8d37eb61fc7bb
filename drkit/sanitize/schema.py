"""What a live database holds, as the sanitizer needs it: tables, columns and types,
unique keys, foreign keys and sequences (one catalog query each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from drkit.errors import DatabaseError
from drkit.pg import first_line

_SYSTEM = """
  n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
"""

_TABLES = f"""
SELECT c.oid, n.nspname, c.relname, c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {_SYSTEM}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"""

_COLUMNS = f"""
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typcategory,
       COALESCE(et.typcategory, ''), a.attgenerated <> '', a.attnotnull
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND {_SYSTEM}
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS = f"""
SELECT con.conrelid, con.contype, con.conname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       con.confrelid,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('p', 'u', 'f') AND {_SYSTEM}
ORDER BY con.conrelid, con.conname
"""

_UNIQUE_INDEXES = f"""
SELECT i.indrelid,
       ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indpred IS NULL AND NOT (0 = ANY(i.indkey::int2[])) AND {_SYSTEM}
"""

# every unique index (expression and partial ones too) with the columns it reads
_ALL_UNIQUE = f"""
SELECT i.indrelid, ci.relname, i.indexprs IS NOT NULL, i.indpred IS NOT NULL, {{nnd}},
       ARRAY(SELECT DISTINCT a.attname FROM pg_attribute a
             WHERE a.attrelid = i.indrelid AND a.attnum > 0
               AND (a.attnum = ANY(i.indkey::int2[])
                    OR EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = i.indexrelid
                                 AND d.refobjid = i.indrelid AND d.refobjsubid = a.attnum)))
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND {_SYSTEM}
ORDER BY 1, 2
"""

_CHECKS = f"""
SELECT con.conrelid, con.conname, pg_get_expr(con.conbin, con.conrelid),
       ARRAY(SELECT a.attname FROM unnest(con.conkey) k(n)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'c' AND {_SYSTEM}
ORDER BY 1, 2
"""

_SEQUENCES = f"""
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND {_SYSTEM}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as format_type shows it
    typname: str
    category: str  # pg_type.typcategory
    element_category: str  # for arrays
    generated: bool
    not_null: bool

    @property
    def is_json(self) -> bool:
        return self.typname in ("json", "jsonb")


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_table: str  # "schema.table"
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class UniqueIndex:
    """A unique index as the collision checks need it (also expression and partial ones)."""

    name: str
    columns: tuple[str, ...]  # every column it reads (key, expressions, predicate)
    expression: bool
    partial: bool
    nulls_not_distinct: bool


@dataclass(frozen=True)
class CheckConstraint:
    name: str
    expression: str  # pg_get_expr: over the table's bare column names
    columns: tuple[str, ...]


@dataclass
class Table:
    schema: str
    name: str
    estimated_rows: int
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    unique_indexes: list[UniqueIndex] = field(default_factory=list)
    checks: list[CheckConstraint] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def copy_columns(self) -> list[Column]:
        """Columns COPY can write (generated columns are computed by the target)."""
        return [c for c in self.columns if not c.generated]

    def unique_columns(self) -> set[str]:
        """Columns that are, alone, a primary or unique key."""
        keys = [self.primary_key, *self.unique_keys] if self.primary_key else self.unique_keys
        return {k[0] for k in keys if len(k) == 1}

    def in_unique_key(self, column: str) -> bool:
        keys = [self.primary_key, *self.unique_keys] if self.primary_key else self.unique_keys
        return any(column in k for k in keys)


@dataclass
class Schema:
    tables: dict[str, Table]  # by "schema.table"
    sequences: list[tuple[str, str]]


def read_schema(conn: psycopg.Connection[Any]) -> Schema:
    try:
        by_oid: dict[int, Table] = {}
        for oid, nsp, rel, tuples in conn.execute(_TABLES).fetchall():
            by_oid[int(oid)] = Table(str(nsp), str(rel), max(int(tuples), 0))
        for relid, name, ftype, typname, cat, ecat, gen, notnull in conn.execute(
            _COLUMNS
        ).fetchall():
            table = by_oid.get(int(relid))
            if table is not None:
                table.columns.append(
                    Column(
                        str(name),
                        str(ftype),
                        str(typname),
                        str(cat),
                        str(ecat),
                        bool(gen),
                        bool(notnull),
                    )
                )
        for relid, kind, name, cols, frelid, fcols in conn.execute(_CONSTRAINTS).fetchall():
            table = by_oid.get(int(relid))
            if table is None:
                continue
            if kind == "p":
                table.primary_key = tuple(cols)
            elif kind == "u":
                table.unique_keys.append(tuple(cols))
            else:
                ref = by_oid.get(int(frelid))
                if ref is not None:
                    table.foreign_keys.append(
                        ForeignKey(str(name), tuple(cols), ref.key, tuple(fcols))
                    )
        for relid, cols in conn.execute(_UNIQUE_INDEXES).fetchall():
            table = by_oid.get(int(relid))
            if (
                table is not None
                and tuple(cols) not in table.unique_keys
                and tuple(cols) != table.primary_key
            ):
                table.unique_keys.append(tuple(cols))
        nnd = "i.indnullsnotdistinct" if conn.info.server_version >= 150000 else "false"
        for relid, name, expr, partial, nulls, cols in conn.execute(
            _ALL_UNIQUE.format(nnd=nnd)
        ).fetchall():
            table = by_oid.get(int(relid))
            if table is not None:
                table.unique_indexes.append(
                    UniqueIndex(str(name), tuple(cols), bool(expr), bool(partial), bool(nulls))
                )
        for relid, name, expression, cols in conn.execute(_CHECKS).fetchall():
            table = by_oid.get(int(relid))
            if table is not None and expression is not None:
                table.checks.append(CheckConstraint(str(name), str(expression), tuple(cols)))
        sequences = [(str(s), str(n)) for s, n in conn.execute(_SEQUENCES).fetchall()]
    except psycopg.Error as exc:
        raise DatabaseError(f"reading the schema: {first_line(exc)}") from None
    return Schema({t.key: t for t in by_oid.values()}, sequences)
