"""The relation catalog a base backup records: in each database, every table's oid,
relation file (relfilenode), schema-qualified name, kind and TOAST table.

``drkit wal-search`` knows a table in the WAL by its relation file only (the WAL names
files, never tables); this catalog, read with the WAL position it holds at, is where
the name meets the file.  It lives in the manifest (``extra["relations"]``):

    {"lsn": "0/3000060", "databases": {"app": {"oid": 16384,
        "relations": [[oid, relfilenode, "schema.name", kind, toast_oid, tablespace_oid],
        ...]}}}

Kinds: ``r`` table, ``m`` materialized view, ``p`` partitioned table (no file of its
own), ``t`` TOAST table.  System schemas are left out.
"""

from __future__ import annotations

from typing import Any

import psycopg

from drkit.errors import DatabaseError
from drkit.pg import connect, first_line

#: the manifest.extra key holding the catalog
CATALOG_KEY = "relations"

_RELATIONS = """
SELECT c.oid::bigint, pg_relation_filenode(c.oid)::bigint,
       n.nspname || '.' || c.relname, c.relkind::text, c.reltoastrelid::bigint,
       COALESCE(NULLIF(c.reltablespace, 0), d.dattablespace)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_database d ON d.datname = current_database()
WHERE c.relkind IN ('r', 'm', 'p', 't')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY c.oid
"""


def read_relation_catalog(dsn: str, databases: list[str]) -> dict[str, Any]:
    """The catalog of ``databases``, with the WAL insert position read before it: every
    file change committed after that position is in the WAL that follows it."""
    out: dict[str, Any] = {}
    lsn: str | None = None
    try:
        for database in databases:
            with connect(dsn, database) as conn:
                row = conn.execute(
                    "SELECT pg_current_wal_insert_lsn()::text, d.oid::bigint "
                    "FROM pg_database d WHERE d.datname = current_database()"
                ).fetchone()
                assert row is not None
                lsn = lsn or str(row[0])
                rels = [
                    [int(r[0]), int(r[1] or 0), str(r[2]), str(r[3]), int(r[4] or 0), int(r[5])]
                    for r in conn.execute(_RELATIONS).fetchall()
                ]
            out[database] = {"oid": int(row[1]), "relations": rels}
    except psycopg.Error as exc:
        raise DatabaseError(f"reading the relation catalog: {first_line(exc)}") from None
    return {"lsn": lsn, "databases": out}
