"""What a database holds: its user tables and their exact row counts."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError
from drkit.pg.connect import first_line

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
ORDER BY 1, 2
"""


def table_key(schema: str, table: str) -> str:
    """``schema.table`` as manifests record it; a schema holding a dot or starting with a
    double quote is written as a quoted identifier (``"a.b".t``) so the key splits back."""
    if "." in schema or schema.startswith('"'):
        schema = '"' + schema.replace('"', '""') + '"'
    return f"{schema}.{table}"


def list_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Ordinary user tables (partition leaves included, partitioned parents not)."""
    return [(str(s), str(t)) for s, t in conn.execute(_TABLES).fetchall()]


def count_rows(conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in tables:
        try:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ).fetchone()
        except psycopg.Error as exc:
            raise DatabaseError(f"counting rows of {schema}.{table}: {first_line(exc)}") from None
        counts[table_key(schema, table)] = int(row[0]) if row else 0
    return counts


def split_key(key: str) -> tuple[str, str]:
    """The inverse of :func:`table_key` (tables may hold dots: the first dot splits)."""
    if key.startswith('"'):
        i = 1
        while i < len(key):
            if key[i] == '"':
                if key[i + 1 : i + 2] == '"':
                    i += 2
                    continue
                if key[i + 1 : i + 2] == ".":
                    return key[1:i].replace('""', '"'), key[i + 2 :]
                break
            i += 1
    schema, _, table = key.partition(".")
    return schema, table
