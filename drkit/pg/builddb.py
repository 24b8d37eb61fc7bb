"""Build a database aside, then publish it in place of another by an atomic rename.

``build_aside(target_dsn, ...)`` creates a fresh database next to the target
(``<target>__drkit_<run>``, from ``template0`` on the target's server) and yields it.
Whatever is written goes there.  ``Build.publish()`` swaps it in, in one transaction:
the target is renamed aside, the build gets the target's database privileges (and the
caller's comment) and takes its name; then the old one is dropped (or kept).  Leaving
the block without publishing (an exception, Ctrl-C, SIGTERM turned into
KeyboardInterrupt) drops the build database: the target is exactly as it was.

No half-states, whatever kills the process (SIGKILL, power loss):

* the build is private from its first moment: created with connections disallowed,
  then, in one transaction, CONNECT and TEMP revoked from PUBLIC and connections
  allowed; its owner is the role that built it, so only that role (and superusers) can
  open it, never DST's application role;
* the run holds an advisory lock (:data:`LOCK_CLASS`, the build's token), taken before
  the build exists and held until it is gone; a build nobody holds is a killed run's
  leftover, which the next run, ``sanitize check`` and ``check`` drop
  (:func:`drop_leftovers`), and a build still held is a live run's, never touched;
* the target's ``datallowconn`` is never changed: ``--force`` ends the target's
  sessions and the swap takes the target's lock in the same transaction as the renames
  (sessions that connect in between make the swap retry, twice);
* the swap waits for the target's lock at most :func:`publish_lock_timeout` seconds (new
  connections to the target queue behind it meanwhile), then refuses (exit 4) and
  leaves everything as it was;
* the commit is the one moment that publishes: SIGINT and SIGTERM wait while it is sent,
  and a connection lost during it is settled by asking the server where the build is.

Identity, not names: when the caller identified the target (:mod:`drkit.pg.identity`),
the build is made on that cluster only, and the swap renames the target aside only if
it is still that database (same OID); when the caller found no target, the swap refuses
a database of that name that appeared since.

Refused before anything is created (exit 4): a role without CREATEDB, a target the role
does not own, sessions connected to the target (unless ``force``).  Cost: disk for two
copies while the build runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError, SafetyRefused, UsageError
from drkit.pg.connect import first_line
from drkit.pg.conninfo import describe, resolve, with_dbname
from drkit.pg.identity import Identity, database_oid, system_identifier

log = logging.getLogger(__name__)

_MAINTENANCE = ("postgres", "template1")

#: the first key of the advisory lock a run holds while its build exists ("drkt"); the
#: second is the build's token, so a build is live exactly while its lock is held
LOCK_CLASS = 0x64726B74
#: how long the swap waits for the target's lock (seconds; the environment overrides it)
PUBLISH_LOCK_TIMEOUT = ("DRKIT_PUBLISH_LOCK_TIMEOUT", 10.0)
#: a swap that sessions keep racing is tried this many times (with ``force``)
_SWAP_ATTEMPTS = 3
_BUILD_RE = re.compile(r"__drkit_(?P<token>[0-9a-f]{8})$")


def publish_lock_timeout() -> float:
    name, default = PUBLISH_LOCK_TIMEOUT
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise UsageError(f"{name} must be a positive number of seconds")
    return value


def _admin(target_dsn: str) -> psycopg.Connection[Any]:
    """A connection to the target's server, in another database than the target."""
    target = resolve(target_dsn).dbname
    problem = ""
    for name in _MAINTENANCE:
        if name == target:
            continue
        try:
            return psycopg.connect(
                with_dbname(target_dsn, name), autocommit=True, connect_timeout=15
            )
        except psycopg.Error as exc:
            problem = first_line(exc)
    raise DatabaseError(
        f"cannot connect to the server of {describe(target_dsn)} outside the target "
        f"(tried databases {', '.join(_MAINTENANCE)}): {problem}"
    )


def _sessions(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = %s "
        "AND pid <> pg_catalog.pg_backend_pid()",
        [name],
    ).fetchone()
    return int(row[0]) if row else 0


def _signed(token: str) -> int:
    """A build's token as the int4 an advisory lock key takes."""
    value = int(token, 16)
    return value - (1 << 32) if value >= 1 << 31 else value


def _lock_held(conn: psycopg.Connection[Any], token: str) -> bool:
    """Whether a session (in any database of the server) holds a run's lock on ``token``."""
    row = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' "
        "AND classid = %s AND objid = %s AND objsubid = 2 AND granted",
        [LOCK_CLASS, int(token, 16)],
    ).fetchone()
    return bool(row and row[0])


@dataclass
class Leftovers:
    """Builds of killed runs next to a target: dropped, held by a live run, or not
    droppable by this role (name, reason)."""

    dropped: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def drop_leftovers(conn: psycopg.Connection[Any], target: str) -> Leftovers:
    """Drop the builds next to ``target`` that no run holds (a killed run's, readable by
    no one but their owner); a live run's are left alone."""
    found = Leftovers()
    pattern = target[:40].replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE %s ORDER BY 1",
            [pattern + "\\_\\_drkit\\_%"],
        ).fetchall()
    ]
    for name in names:
        m = _BUILD_RE.search(name)
        if m is None or name != f"{target[:40]}__drkit_{m.group('token')}":
            continue  # an __drkit_old_ database (kept by --keep-old) or another target's
        if _lock_held(conn, m.group("token")):
            found.live.append(name)
            continue
        try:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        except psycopg.Error as exc:
            found.failed.append((name, first_line(exc)))
            log.warning("cannot drop %s, an interrupted sanitize run's build: %s", name, exc)
            continue
        log.warning("dropped %s, the build of an interrupted sanitize run", name)
        found.dropped.append(name)
    return found


def clean_leftovers(target_dsn: str) -> Leftovers:
    """:func:`drop_leftovers` next to the database of ``target_dsn``, on its server."""
    with _admin(target_dsn) as admin:
        try:
            return drop_leftovers(admin, resolve(target_dsn).dbname)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"looking for interrupted builds next to {describe(target_dsn)}: {first_line(exc)}"
            ) from None


class _Gate:
    """SIGINT and SIGTERM as usual until :meth:`close`; after it they wait for the gate
    to be left (main thread only: elsewhere signals never reach Python code)."""

    def __init__(self) -> None:
        self.closed = False
        self.held: list[int] = []
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.closed:
            self.held.append(signum)
            return
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _Gate:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


class Build:
    """The database being built; ``publish`` swaps it in place of the target."""

    def __init__(
        self,
        admin: psycopg.Connection[Any],
        target_dsn: str,
        name: str,
        *,
        oid: int,
        expected: Identity | None,
        force: bool,
        keep_old: bool,
    ) -> None:
        self._admin = admin
        self.target_dsn = target_dsn
        self.target = resolve(target_dsn).dbname
        self.name = name
        self.oid = oid
        self.dsn = with_dbname(target_dsn, name)
        self.expected = expected
        self.force = force
        self.keep_old = keep_old
        self.published = False
        self.old: str | None = None
        self.system_identifier = system_identifier(admin)

    def publish(
        self, comment: str | None = None, on_published: Callable[[], None] | None = None
    ) -> None:
        """Swap the build in place of the target, in one transaction (see the module
        docstring); ``comment`` goes on the published database; ``on_published`` is
        called once the swap is committed, before any signal held meanwhile is let in."""
        old = f"{self.target[:40]}__drkit_old_{secrets.token_hex(4)}"
        timeout = publish_lock_timeout()
        with _Gate() as gate:
            try:
                self._swap(old, comment, timeout, gate)
            except psycopg.OperationalError as exc:  # lost while committing, perhaps
                if not self._swapped():
                    raise DatabaseError(
                        f"publishing the copy as {describe(self.target_dsn)}: {first_line(exc)}"
                    ) from None
            self.published = True
            if on_published is not None:
                on_published()
        if gate.held:
            log.info("the copy is published: the interrupt that came meanwhile ends nothing")
        if self.old is not None:
            self._drop_old()

    def _swap(self, old: str, comment: str | None, timeout: float, gate: _Gate) -> None:
        conn = self._admin
        ident, build = sql.Identifier(self.target), sql.Identifier(self.name)
        for attempt in range(1, _SWAP_ATTEMPTS + 1):
            if self.force:
                self._end_sessions()
            try:
                with conn.transaction():
                    conn.execute(
                        sql.SQL("SET LOCAL lock_timeout = {}").format(
                            sql.Literal(f"{int(timeout * 1000)}ms")
                        )
                    )
                    acl = self._take_target(old)
                    self._grant(acl)
                    if comment is not None:
                        conn.execute(
                            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                                build, sql.Literal(comment)
                            )
                        )
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(build, ident))
                    gate.close()  # the commit: interrupts wait until it is answered
                self.old = old if acl is not None else None
                return
            except psycopg.errors.ObjectInUse:
                gate.closed = False
                if not self.force:
                    raise SafetyRefused(self._sessions_line()) from None
                if attempt == _SWAP_ATTEMPTS:
                    raise SafetyRefused(
                        f"sessions keep connecting to {describe(self.target_dsn)} while the "
                        "copy is swapped in: stop its clients, then rerun"
                    ) from None
            except psycopg.errors.LockNotAvailable:
                raise SafetyRefused(
                    f"another session holds a lock on database {self.target} "
                    f"({describe(self.target_dsn)}) for more than {timeout:g}s: the copy was "
                    f"not published and {self.target} is unchanged; rerun once it is "
                    f"released (or raise {PUBLISH_LOCK_TIMEOUT[0]})"
                ) from None
            except psycopg.errors.InsufficientPrivilege as exc:
                raise SafetyRefused(
                    f"publishing the copy as {describe(self.target_dsn)}: {first_line(exc)}"
                ) from None
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"publishing the copy as {describe(self.target_dsn)}: {first_line(exc)}"
                ) from None

    def _take_target(self, old: str) -> list[tuple[str | None, str, bool]] | None:
        """Inside the swap: the target renamed aside (which takes its lock and fails while
        sessions are connected), checked to be the database identified; its database
        privileges.  None when there is no target."""
        conn = self._admin
        ident = sql.Identifier(self.target)
        if self.expected is None:
            if database_oid(conn, self.target) is not None:
                raise SafetyRefused(
                    f"database {describe(self.target_dsn)} was created while its copy was "
                    "built: it was not identified before the run, so it is not replaced; rerun"
                )
            return None
        try:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident, sql.Identifier(old))
            )
        except psycopg.errors.InvalidCatalogName:
            raise SafetyRefused(
                f"database {describe(self.target_dsn)} was dropped while its copy was built; rerun"
            ) from None
        if database_oid(conn, old) != self.expected.database_oid:
            raise SafetyRefused(
                f"database {describe(self.target_dsn)} is no longer the database identified "
                "when the run started (it was dropped and created again): rerun"
            )
        return _acl(conn, old)

    def _grant(self, acl: list[tuple[str | None, str, bool]] | None) -> None:
        """The target's database privileges on the build (PostgreSQL's defaults, CONNECT
        and TEMP to PUBLIC, when the target had none of its own or there was no target)."""
        conn = self._admin
        build = sql.Identifier(self.name)
        if not acl:
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(build))
            return
        for grantee, privilege, grantable in acl:
            conn.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(privilege),  # CONNECT | CREATE | TEMPORARY
                    build,
                    sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                    sql.SQL(" WITH GRANT OPTION" if grantable and grantee else ""),
                )
            )

    def _end_sessions(self) -> None:
        try:
            self._admin.execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()",
                [self.target],
            )
        except psycopg.errors.InsufficientPrivilege:
            user = self._admin.info.user
            raise SafetyRefused(
                f"role {user} may not end the sessions of other roles on "
                f"{describe(self.target_dsn)}: close them, or GRANT pg_signal_backend TO {user}"
            ) from None
        except psycopg.Error as exc:
            raise DatabaseError(
                f"ending the sessions on {describe(self.target_dsn)}: {first_line(exc)}"
            ) from None

    def _swapped(self) -> bool:
        """After a connection lost during the swap: is the build now the target?"""
        try:
            with _admin(self.target_dsn) as conn:
                return database_oid(conn, self.target) == self.oid
        except (DatabaseError, psycopg.Error):
            return False

    def _drop_old(self) -> None:
        old = self.old
        assert old is not None
        if self.keep_old:
            log.info("the previous %s is kept as %s", self.target, old)
            return
        try:
            self._admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old))
            )
            self.old = None
        except psycopg.Error as exc:
            log.warning("the previous %s was kept as %s: %s", self.target, old, first_line(exc))

    def _sessions_line(self) -> str:
        return (
            f"sessions are connected to {describe(self.target_dsn)}: close them, or rerun "
            "with --force to terminate them"
        )

    def drop(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


def _acl(conn: psycopg.Connection[Any], name: str) -> list[tuple[str | None, str, bool]]:
    """A database's own privileges (grantee None: PUBLIC); empty for the defaults."""
    return [
        (None if r[0] is None else str(r[0]), str(r[1]), bool(r[2]))
        for r in conn.execute(
            """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)
                      END, a.privilege_type, a.is_grantable
               FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
               WHERE d.datname = %s AND d.datacl IS NOT NULL""",
            [name],
        ).fetchall()
    ]


def preflight(
    admin: psycopg.Connection[Any],
    target_dsn: str,
    *,
    force: bool,
    scratch: bool = False,
    expected: Identity | None = None,
) -> str:
    """What would stop the build or the swap, refused before anything is created (exit
    4): no CREATEDB, a target the role does not own, sessions on it (unless ``force``),
    a server that is not the one the target was identified on.  Returns what was proved,
    for reports."""
    target = resolve(target_dsn).dbname
    row = admin.execute(
        "SELECT current_user, rolcreatedb OR rolsuper FROM pg_catalog.pg_roles "
        "WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    user, can_create = str(row[0]), bool(row[1])
    if not can_create:
        raise SafetyRefused(
            f"role {user} cannot create databases on the server of {describe(target_dsn)}: "
            f"the copy is built aside in a new database; grant it (ALTER ROLE {user} CREATEDB)"
        )
    if scratch:
        return f"role {user} may create databases"
    if expected is not None and system_identifier(admin) != expected.system_identifier:
        raise SafetyRefused(
            f"the server of {describe(target_dsn)} reached now is not the one its database "
            f"was identified on ({expected.reached.describe()}): its url leads to several "
            "servers; name one"
        )
    found = admin.execute(
        "SELECT oid, pg_catalog.pg_has_role(current_user, datdba, 'MEMBER') "
        "FROM pg_catalog.pg_database WHERE datname = %s",
        [target],
    ).fetchone()
    if expected is not None and (found is None or int(found[0]) != expected.database_oid):
        raise SafetyRefused(
            f"database {describe(target_dsn)} is no longer the database identified when the "
            "run started: rerun"
        )
    if found is not None and not found[1]:
        raise SafetyRefused(
            f"role {user} does not own database {describe(target_dsn)}, so it cannot replace "
            f"it: ALTER DATABASE {target} OWNER TO {user}"
        )
    if found is not None and not force and _sessions(admin, target):
        raise SafetyRefused(
            f"sessions are connected to {describe(target_dsn)}: close them, or rerun with "
            "--force to terminate them"
        )
    if found is None:
        return f"role {user} may create databases ({target} does not exist yet)"
    return f"role {user} may create databases and owns {target}"


def prove_privileges(target_dsn: str) -> str:
    """What a run into ``target_dsn`` needs of its role, proved without creating anything
    (``sanitize check``, ``--dry-run``, ``check``): exit 4 where the run would stop."""
    with _admin(target_dsn) as admin:
        try:
            return preflight(admin, target_dsn, force=True)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"checking the privileges on the server of {describe(target_dsn)}: "
                f"{first_line(exc)}"
            ) from None


def _create(admin: psycopg.Connection[Any], target: str, name: str) -> int:
    """The build, private from its first moment (see the module docstring); its OID."""
    like = admin.execute(
        "SELECT pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype "
        "FROM pg_catalog.pg_database WHERE datname = %s",
        [target],
    ).fetchone()
    ident = sql.Identifier(name)
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ALLOW_CONNECTIONS false").format(
        ident
    )
    if like is not None:
        statement += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(like[0]), sql.Literal(like[1]), sql.Literal(like[2])
        )
    try:
        admin.execute(statement)
        with admin.transaction():
            admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
        oid = database_oid(admin, name)
    except psycopg.Error as exc:
        raise DatabaseError(f"creating the build database {name}: {first_line(exc)}") from None
    assert oid is not None
    return oid


@contextlib.contextmanager
def build_aside(
    target_dsn: str,
    *,
    force: bool,
    keep_old: bool = False,
    scratch: bool = False,
    expected: Identity | None = None,
) -> Iterator[Build]:
    """A fresh database next to the target; dropped on the way out unless published.

    ``expected``: the target as the caller identified it (None: there was none), which
    the swap replaces only if it is still that database.  ``scratch``: a database that
    is never published (only CREATEDB is required).
    """
    admin = _admin(target_dsn)
    with admin:
        target = resolve(target_dsn).dbname
        token = secrets.token_hex(4)
        try:
            preflight(admin, target_dsn, force=force, scratch=scratch, expected=expected)
            drop_leftovers(admin, target)
            # held by this session until it ends (the run's end, or its death)
            admin.execute(
                "SELECT pg_catalog.pg_advisory_lock(%s, %s)", [LOCK_CLASS, _signed(token)]
            )
        except psycopg.Error as exc:
            raise DatabaseError(
                f"preparing a build next to {describe(target_dsn)}: {first_line(exc)}"
            ) from None
        name = f"{target[:40]}__drkit_{token}"
        oid = _create(admin, target, name)
        build = Build(
            admin, target_dsn, name, oid=oid, expected=expected, force=force, keep_old=keep_old
        )
        try:
            yield build
        finally:
            if not build.published:
                build.drop()
