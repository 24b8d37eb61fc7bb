"""What a database holds: its user tables and their exact row counts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError
from drkit.pg.connect import connect, first_line

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


#: the table data pg_dump writes: heap and TOAST of user tables and materialized views,
#: less the tuple headers COPY text does not carry; and the bytes of tables never
#: analyzed (their row count, so their headers, unknown)
_DUMP_ESTIMATE = """
SELECT coalesce(sum(pg_relation_size(c.oid, 'main')
                    + CASE WHEN c.reltoastrelid <> 0
                           THEN pg_total_relation_size(c.reltoastrelid) ELSE 0 END
                    - %(header)s * greatest(c.reltuples, 0)), 0)::bigint,
       coalesce(sum(pg_relation_size(c.oid, 'main')) FILTER (WHERE c.reltuples < 0), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
"""

#: bytes a heap tuple spends beyond its values (the 23-byte header, aligned)
TUPLE_HEADER = 24
#: how long the estimate waits for a table's lock before giving up on a percent
ESTIMATE_LOCK_WAIT = "200ms"


def dump_size_estimate(conn: psycopg.Connection[Any]) -> int | None:
    """What a plain (uncompressed) dump of the connected database will weigh, roughly:
    its tables' data as stored, less tuple headers.  Indexes, free space and the system
    catalogs are not dumped, so ``pg_database_size`` overstates it (a dump ended at
    62 % of it).  None when tables never analyzed hold a quarter of the data or more:
    their row counts are unknown, so no honest total exists (progress then shows the
    amount and rate without a percent)."""
    # the sizes take each table's lightest lock: one an application holds exclusively
    # must not hold the backup up before pg_dump even starts (pg_dump waits for it, and
    # says so); then no estimate.  A savepoint keeps the snapshot's transaction alive.
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (ESTIMATE_LOCK_WAIT,))
            row = conn.execute(_DUMP_ESTIMATE, {"header": TUPLE_HEADER}).fetchone()
    except psycopg.errors.LockNotAvailable:
        return None
    finally:
        if previous is not None and not conn.closed:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (str(previous[0]),))
    if row is None:
        return None
    estimate, unanalyzed = int(row[0]), int(row[1])
    if estimate <= 0 or unanalyzed * 4 >= estimate:
        return None
    return estimate


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


def count_rows_concurrently(dsn: str, tables: list[tuple[str, str]], jobs: int) -> dict[str, int]:
    """:func:`count_rows` over up to ``jobs`` connections, the largest tables first (after
    a parallel restore the row check would otherwise scan one table at a time)."""
    if jobs <= 1 or len(tables) <= 1:
        with connect(dsn) as conn:
            return count_rows(conn, tables)
    with connect(dsn) as conn:
        sizes = {
            (str(s), str(t)): int(n)
            for s, t, n in conn.execute(
                "SELECT n.nspname, c.relname, pg_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
            ).fetchall()
        }
    pending = sorted(tables, key=lambda t: -sizes.get(t, 0))
    lock = threading.Lock()
    counts: dict[str, int] = {}

    def worker() -> None:
        with connect(dsn) as conn:
            while True:
                with lock:
                    if not pending:
                        return
                    table = pending.pop(0)
                counted = count_rows(conn, [table])
                with lock:
                    counts.update(counted)

    with ThreadPoolExecutor(max_workers=min(jobs, len(tables))) as pool:
        for future in [pool.submit(worker) for _ in range(min(jobs, len(tables)))]:
            future.result()
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
