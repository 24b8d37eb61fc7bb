"""What a server says about itself and the database a connection is in.

Connection strings prove nothing about where they lead: ``localhost`` and ``127.0.0.1``,
another role, a ``service=`` entry, ``PGHOST``, ``options`` or a host list all spell one
database differently, and one spelling may reach another server tomorrow.  So drkit
tells databases apart by what the server it actually reached reports:

* the cluster's system identifier (``pg_control_system()``), made by ``initdb`` and
  shared by the cluster's physical copies (standbys, restored base backups), which hold
  the same databases;
* the database's OID in that cluster (its name is only a name: renames keep the OID).

Two connections are in the same database when both agree (:meth:`Identity.same_database`).
Every query names ``pg_catalog`` explicitly: a ``search_path`` set through a url's
``options`` cannot put a look-alike function or view in front of the catalog's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from drkit.pg.connect import first_line
from drkit.pg.conninfo import Resolved

log = logging.getLogger(__name__)


def system_identifier(conn: psycopg.Connection[Any]) -> str | None:
    """The cluster's system identifier, or None when this role may not read it (the
    function's EXECUTE revoked).  Runs in a transaction of its own."""
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT system_identifier::text FROM pg_catalog.pg_control_system()"
            ).fetchone()
    except psycopg.Error as exc:
        log.info("cannot read the system identifier: %s", first_line(exc))
        return None
    return str(row[0]) if row and row[0] is not None else None


@dataclass(frozen=True)
class Identity:
    """The database a connection is in, as its server reports it."""

    system_identifier: str | None
    database_oid: int
    database: str
    #: where libpq actually connected (for messages; never the password)
    reached: Resolved

    def same_database(self, other: Identity) -> bool:
        """Both are the same database of one cluster (or of its physical copies)."""
        return (
            self.system_identifier is not None
            and self.system_identifier == other.system_identifier
            and self.database_oid == other.database_oid
        )

    def describe(self) -> str:
        return f"{self.reached.describe()} (database oid {self.database_oid})"


def identity(conn: psycopg.Connection[Any]) -> Identity:
    """What the server of ``conn`` says about the database ``conn`` is in."""
    row = conn.execute(
        "SELECT d.oid, d.datname FROM pg_catalog.pg_database d "
        "WHERE d.datname = pg_catalog.current_database()"
    ).fetchone()
    assert row is not None
    return Identity(system_identifier(conn), int(row[0]), str(row[1]), Resolved.of(conn.pgconn))


def database_oid(conn: psycopg.Connection[Any], name: str) -> int | None:
    """The OID of database ``name`` on the server of ``conn``, None when there is none."""
    row = conn.execute(
        "SELECT oid FROM pg_catalog.pg_database WHERE datname = %s", [name]
    ).fetchone()
    return int(row[0]) if row else None
