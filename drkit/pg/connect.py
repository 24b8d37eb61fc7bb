"""psycopg connections with errors turned into one-line DatabaseErrors."""

from __future__ import annotations

from typing import Any

import psycopg

from drkit.errors import DatabaseError
from drkit.pg.conninfo import Resolved, describe, libpq_reason, with_dbname


def first_line(exc: BaseException) -> str:
    """The line of a psycopg error that says why (a connection string libpq could not
    parse: its complaint, with the pieces of the string it quotes masked)."""
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
        return libpq_reason(str(exc))
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("connection to server", "DETAIL", "HINT")):
            return line.removeprefix("FATAL:  ").removeprefix("ERROR:  ")
    return text.splitlines()[0] if text else type(exc).__name__


def connect(
    dsn: str, dbname: str | None = None, *, autocommit: bool = True, **kwargs: Any
) -> psycopg.Connection[Any]:
    """Connect, or raise DatabaseError naming host:port/db (never the password)."""
    target = with_dbname(dsn, dbname) if dbname else dsn
    kwargs.setdefault("connect_timeout", 15)
    try:
        return psycopg.connect(target, autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        # libpq's own record of the attempt (the last of a host list), else its resolution
        where = Resolved.of(exc.pgconn).describe() if exc.pgconn is not None else describe(target)
        raise DatabaseError(f"cannot connect to {where}: {first_line(exc)}") from None


def server_version(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "unknown"


def server_major(conn: psycopg.Connection[Any]) -> int:
    return conn.info.server_version // 10000


def is_superuser(conn: psycopg.Connection[Any]) -> bool:
    """Whether the session's role is a superuser, as the server reports it at login."""
    return conn.info.parameter_status("is_superuser") == "on"
