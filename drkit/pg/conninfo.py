"""Connection strings: what libpq makes of them, swapping the database, and keeping
passwords off command lines.

drkit never works out a connection's database, host, port or role itself: a policy url
may be ``service=NAME`` (everything in a service file: ``PGSERVICEFILE``,
``~/.pg_service.conf``, ``PGSYSCONFDIR``), rely on ``PGDATABASE``/``PGHOST``/... or list
several hosts, and only libpq knows its rules.  :func:`resolve` asks libpq, and what it
answers is the database drkit backs up, restores, reports and hands, explicitly, to
pg_dump and pg_restore (libpq programs too, so the two agree).

No error ever shows a piece of a connection string: libpq quotes what it cannot parse
(a password with a ``%`` that is no valid escape is quoted whole), so its complaints
are passed on with those quotes masked (:func:`libpq_reason`), and a string libpq would
cut elsewhere than its author meant is refused before libpq reads it
(:func:`drkit.pg.urlshape.check_url`): a piece of the password would become a host, a
port or a database name that messages show.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drkit.errors import UsageError
from drkit.pg.urlshape import check_url

_QUOTED = re.compile(r'"([^"]*)"')
#: libpq's complaints about service files quote a service's name or a file's path
_SERVICE_MESSAGES = ("definition of service", "service file", "syntax error in service file")


@functools.cache
def _keywords() -> frozenset[str]:
    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def libpq_reason(text: str) -> str:
    """libpq's complaint about a connection string, first line, with every piece of the
    string it quotes masked, but for the names of connection parameters (and of services
    and service files)."""
    line = text.strip().splitlines()[0] if text.strip() else "libpq refused it"
    if line.startswith(_SERVICE_MESSAGES):
        return line
    safe = _keywords() | {"="}
    return _QUOTED.sub(lambda m: m.group(0) if m.group(1) in safe else '"***"', line)


def parse(dsn: str) -> dict[str, str]:
    check_url(dsn)
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's text, pieces masked
        raise UsageError(f"invalid database url: {libpq_reason(str(exc))}") from None
    return {k: str(v) for k, v in params.items() if v is not None}


@dataclass(frozen=True)
class Resolved:
    """Where libpq takes a connection string: the database, role, host (a name, an
    address, or a socket directory) and port of its first attempt.  Never the password."""

    dbname: str
    user: str
    host: str
    port: str

    def describe(self) -> str:
        """host:port/dbname, for messages."""
        return f"{self.host}:{self.port}/{self.dbname}"

    @classmethod
    def of(cls, pgconn: pq.abc.PGconn) -> Resolved:
        """What a libpq connection (or attempt) is on: after a connection, the server
        actually reached; after a failed one, the last host tried."""
        return cls(*(_text(v) for v in (pgconn.db, pgconn.user, pgconn.host, pgconn.port)))


#: how long an answer of libpq's is reused: one attempt per command, and a service file
#: changed under a running scheduler is read again within a minute
RESOLVE_TTL = 60.0
_resolved: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, Resolved]] = {}
_resolved_lock = threading.Lock()


def resolve(dsn: str) -> Resolved:
    """What libpq makes of ``dsn``, from libpq itself.

    ``PQconnectStart`` parses the string and applies the service file, the ``PG*``
    variables and libpq's defaults exactly as a connection does, then starts connecting
    without waiting (nothing logs in, nothing waits for a server that does not answer);
    its ``PQdb``/``PQuser``/``PQhost``/``PQport`` are read and the attempt is closed.  A
    string libpq rejects (a service it does not know, a malformed option) is a
    UsageError naming libpq's reason.  The answer is kept :data:`RESOLVE_TTL` seconds
    for the same string and the same ``PG*`` variables."""
    key = (dsn, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PG"))))
    now = time.monotonic()
    with _resolved_lock:
        kept = _resolved.get(key)
    if kept is not None and now - kept[0] < RESOLVE_TTL:
        return kept[1]
    resolved = _ask_libpq(dsn)
    with _resolved_lock:
        _resolved[key] = (now, resolved)
    return resolved


def _ask_libpq(dsn: str) -> Resolved:
    parse(dsn)  # a malformed string: the one message every caller gives
    try:
        pgconn = pq.PGconn.connect_start(dsn.encode())
    except Exception as exc:  # libpq's text, pieces masked
        raise UsageError(f"invalid database url: {libpq_reason(str(exc))}") from None
    try:
        resolved = Resolved.of(pgconn)
        if pgconn.status == pq.ConnStatus.BAD and not resolved.dbname:
            raise UsageError(f"database url: {libpq_reason(_text(pgconn.error_message))}")
    finally:
        pgconn.finish()
    return resolved


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def with_dbname(dsn: str, dbname: str) -> str:
    """The same connection string pointing at another database (keeps the password)."""
    return make_conninfo(dsn, dbname=dbname)


#: connection parameters that are secrets besides ``password`` (libpq has no environment
#: variable for them): they reach a child through a private service file instead
SECRET_PARAMS = ("sslpassword", "oauth_client_secret")
SERVICE_NAME = "drkit"

_lock = threading.Lock()
_private_dir: Path | None = None


class SubprocessEnv(dict[str, str]):
    """The environment for a child process.  When it carries a service file of secrets,
    the file is removed as soon as this dict is gone (the caller's function returned),
    and at exit at the latest."""


def _service_dir() -> Path:
    global _private_dir
    with _lock:
        if _private_dir is None or not _private_dir.is_dir():
            # 0700, owned by us, one per process; removed at exit
            _private_dir = Path(tempfile.mkdtemp(prefix="drkit-secrets-"))
            atexit.register(shutil.rmtree, _private_dir, True)
        return _private_dir


def _write_service_file(secrets: dict[str, str]) -> Path:
    for key, value in secrets.items():
        if "\n" in value or "\r" in value:
            raise UsageError(f"database url: {key} holds a line break, which libpq cannot read")
    fd, name = tempfile.mkstemp(prefix="service-", suffix=".conf", dir=_service_dir())  # 0600
    with os.fdopen(fd, "w") as out:
        out.write(f"[{SERVICE_NAME}]\n")
        out.writelines(f"{key}={value}\n" for key, value in secrets.items())
    return Path(name)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def for_subprocess(dsn: str, dbname: str | None = None) -> tuple[str, dict[str, str]]:
    """A conninfo without any secret, plus the environment that carries them.

    The database is always explicit: ``dbname``, else the one libpq resolves ``dsn`` to.

    pg_dump and friends then see the password in ``PGPASSWORD``, and ``sslpassword``
    (which has no environment variable) in a 0600 service file named by
    ``PGSERVICEFILE``/``PGSERVICE``, rather than in their argument list, where ``ps``
    and ``/proc/PID/cmdline`` show it to every user on the host.  The service file is
    removed when the returned environment is dropped.  (A url that names its own
    ``service`` and also holds an ``sslpassword`` cannot use both: libpq reads one
    service; the connection then fails, it never leaks.)
    """
    params = parse(dsn)
    if dbname is not None:
        params["dbname"] = dbname
    elif "dbname" not in params:  # libpq's answer, explicit: the child and drkit agree
        params["dbname"] = resolve(dsn).dbname
    password = params.pop("password", None)
    secrets = {key: params.pop(key) for key in SECRET_PARAMS if key in params}
    env = SubprocessEnv(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    if secrets:
        path = _write_service_file(secrets)
        env["PGSERVICEFILE"] = str(path)
        env["PGSERVICE"] = SERVICE_NAME
        weakref.finalize(env, _remove, str(path))
    return make_conninfo("", **params), env


def describe(dsn: str) -> str:
    """host:port/dbname as libpq resolves ``dsn``, for messages (never the password); a
    string libpq rejects is described by what it says itself."""
    try:
        return resolve(dsn).describe()
    except UsageError:
        params = parse(dsn)
        if "service" in params:
            return f"service {params['service']}"
        return f"{params.get('host', '?')}:{params.get('port', '?')}/{params.get('dbname', '?')}"
