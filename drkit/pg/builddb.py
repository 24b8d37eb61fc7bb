"""Build a database aside, then publish it in place of another by an atomic rename.

``build_aside(target_dsn, ...)`` creates a fresh database next to the target
(``<target>__drkit_<run>``, from ``template0`` on the target's server) and yields it.
Whatever is written goes there.  ``Build.publish()`` swaps it in, in one transaction:
the target is renamed aside, the build takes its name, then the old one is dropped
(or kept).  Leaving the block without publishing (an exception, Ctrl-C, SIGTERM turned
into KeyboardInterrupt) drops the build database: the target is exactly as it was.

Refused before anything is created (exit 4): a role without CREATEDB, a target the role
does not own, sessions connected to the target (unless ``force``, which terminates them
at publish time).  Cost: disk for two copies while the build runs.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError, SafetyRefused
from drkit.pg.connect import first_line
from drkit.pg.conninfo import describe, resolve, with_dbname

log = logging.getLogger(__name__)

_MAINTENANCE = ("postgres", "template1")


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
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [name],
    ).fetchone()
    return int(row[0]) if row else 0


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()
    return bool(row and row[0])


class Build:
    """The database being built; ``publish`` swaps it in place of the target."""

    def __init__(
        self,
        admin: psycopg.Connection[Any],
        target_dsn: str,
        name: str,
        *,
        force: bool,
        keep_old: bool,
    ) -> None:
        self._admin = admin
        self.target_dsn = target_dsn
        self.target = resolve(target_dsn).dbname
        self.name = name
        self.dsn = with_dbname(target_dsn, name)
        self.force = force
        self.keep_old = keep_old
        self.published = False
        self.old: str | None = None

    def set_stamp(self, setting: str, value: str) -> None:
        """A database-level setting on the build (it travels with the database)."""
        try:
            self._admin.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(self.name),
                    sql.Identifier(*setting.split(".")),
                    sql.Literal(value),
                )
            )
        except psycopg.Error as exc:
            raise DatabaseError(f"stamping the build {self.name}: {first_line(exc)}") from None

    def copy_grants(self) -> None:
        """The target's database-level privileges (CONNECT, CREATE, TEMP) onto the build."""
        conn = self._admin
        row = conn.execute(
            "SELECT datacl IS NOT NULL FROM pg_database WHERE datname = %s", [self.target]
        ).fetchone()
        if row is None or not row[0]:
            return  # no target, or the defaults: the build has them too
        grants = conn.execute(
            """SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                      a.privilege_type, a.is_grantable
               FROM pg_database d, aclexplode(d.datacl) a
               WHERE d.datname = %s""",
            [self.target],
        ).fetchall()
        build = sql.Identifier(self.name)
        try:
            with conn.transaction():
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(build))
                for grantee, privilege, grantable in grants:
                    conn.execute(
                        sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                            sql.SQL(str(privilege)),  # CONNECT | CREATE | TEMPORARY
                            build,
                            sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                            sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                        )
                    )
        except psycopg.Error as exc:
            raise DatabaseError(
                f"copying the privileges of {describe(self.target_dsn)}: {first_line(exc)}"
            ) from None

    def publish(self) -> None:
        """Rename the target aside and the build into its place, in one transaction."""
        try:
            self._publish()
        except psycopg.Error as exc:
            raise DatabaseError(
                f"publishing the copy as {describe(self.target_dsn)}: {first_line(exc)}"
            ) from None

    def _publish(self) -> None:
        conn = self._admin
        target, ident = self.target, sql.Identifier(self.target)
        if not _exists(conn, target):
            self._rename_in(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(self.name), ident)
            )
            self.published = True
            return
        old = f"{target[:40]}__drkit_old_{secrets.token_hex(4)}"
        locked = False
        try:
            if _sessions(conn, target):
                if not self.force:
                    raise SafetyRefused(self._sessions_line())
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
                locked = True
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [target],
                )
            self._rename_in(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident, sql.Identifier(old)),
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(self.name), ident),
            )
        except BaseException:
            if locked:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
            raise
        self.published = True
        self.old = old
        if self.keep_old:
            if locked:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(old))
                )
            log.info("the previous %s is kept as %s", target, old)
            return
        try:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old)))
            self.old = None
        except psycopg.Error as exc:
            log.warning("the previous %s was kept as %s: %s", target, old, first_line(exc))

    def _rename_in(self, *statements: sql.Composed) -> None:
        conn = self._admin
        try:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
        except psycopg.errors.ObjectInUse:
            raise SafetyRefused(self._sessions_line()) from None
        except psycopg.Error as exc:
            raise DatabaseError(
                f"publishing the copy as {describe(self.target_dsn)}: {first_line(exc)}"
            ) from None

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


def preflight(
    admin: psycopg.Connection[Any], target_dsn: str, *, force: bool, scratch: bool = False
) -> None:
    """What would stop the build or the swap, refused before anything is created (exit 4)."""
    target = resolve(target_dsn).dbname
    row = admin.execute(
        "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    user, can_create = str(row[0]), bool(row[1])
    if not can_create:
        raise SafetyRefused(
            f"role {user} cannot create databases on the server of {describe(target_dsn)}: "
            f"the copy is built aside in a new database; grant it (ALTER ROLE {user} CREATEDB)"
        )
    if scratch:
        return  # never published: the target's owner and sessions do not matter
    owner = admin.execute(
        "SELECT pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database WHERE datname = %s",
        [target],
    ).fetchone()
    if owner is not None and not owner[0]:
        raise SafetyRefused(
            f"role {user} does not own database {describe(target_dsn)}, so it cannot replace "
            f"it: ALTER DATABASE {target} OWNER TO {user}"
        )
    if owner is not None and not force and _sessions(admin, target):
        raise SafetyRefused(
            f"sessions are connected to {describe(target_dsn)}: close them, or rerun with "
            "--force to terminate them"
        )


def _warn_leftovers(admin: psycopg.Connection[Any], target: str) -> None:
    """Builds a killed run (SIGKILL, power loss) could not drop: named, never dropped here
    (one may belong to a run still going)."""
    pattern = target[:40].replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    found = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname NOT LIKE %s ORDER BY 1",
        [pattern + "\\_\\_drkit\\_%", pattern + "\\_\\_drkit\\_old\\_%"],
    ).fetchall()
    for (name,) in found:
        log.warning(
            "database %s looks like the build of an interrupted sanitize run: "
            "drop it when no run is going (DROP DATABASE %s)",
            name,
            name,
        )


def _create(admin: psycopg.Connection[Any], target: str, name: str) -> None:
    like = admin.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = %s",
        [target],
    ).fetchone()
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if like is not None:
        statement += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(like[0]), sql.Literal(like[1]), sql.Literal(like[2])
        )
    try:
        admin.execute(statement)
    except psycopg.Error as exc:
        raise DatabaseError(f"creating the build database {name}: {first_line(exc)}") from None


@contextlib.contextmanager
def build_aside(
    target_dsn: str,
    *,
    force: bool,
    keep_old: bool = False,
    run_id: str | None = None,
    scratch: bool = False,
) -> Iterator[Build]:
    """A fresh database next to the target; dropped on the way out unless published.

    ``scratch``: a database that is never published (only CREATEDB is required).
    """
    admin = _admin(target_dsn)
    with admin:
        target = resolve(target_dsn).dbname
        try:
            preflight(admin, target_dsn, force=force, scratch=scratch)
            _warn_leftovers(admin, target)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"preparing a build next to {describe(target_dsn)}: {first_line(exc)}"
            ) from None
        name = f"{target[:40]}__drkit_{run_id or secrets.token_hex(4)}"
        _create(admin, target, name)
        build = Build(admin, target_dsn, name, force=force, keep_old=keep_old)
        try:
            yield build
        finally:
            if not build.published:
                build.drop()
