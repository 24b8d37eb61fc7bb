"""Connection strings: pick out the database, swap it, and keep passwords off command lines."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drkit.errors import UsageError


def parse(dsn: str) -> dict[str, str]:
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError; its text never holds the password
        raise UsageError(f"invalid database url: {str(exc).splitlines()[0]}") from None
    return {k: str(v) for k, v in params.items() if v is not None}


def dbname_of(dsn: str) -> str:
    params = parse(dsn)
    return params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE", "postgres")


def with_dbname(dsn: str, dbname: str) -> str:
    """The same connection string pointing at another database (keeps the password)."""
    return make_conninfo(dsn, dbname=dbname)


def for_subprocess(dsn: str, dbname: str | None = None) -> tuple[str, dict[str, str]]:
    """A conninfo without its password plus the environment that carries it.

    pg_dump and friends then see the password in ``PGPASSWORD`` rather than in their
    argument list, where ``ps`` would show it to every user on the host.
    """
    params = parse(dsn)
    if dbname is not None:
        params["dbname"] = dbname
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo("", **params), env


def describe(dsn: str) -> str:
    """host:port/dbname, for messages (never the password)."""
    params = parse(dsn)
    host = params.get("host") or os.environ.get("PGHOST", "localhost")
    port = params.get("port") or os.environ.get("PGPORT", "5432")
    return f"{host}:{port}/{dbname_of(dsn)}"
