"""The role a logical drill restores as: the one the real ``drkit restore`` connects as.

A real restore connects with the policy's url, as its role, to a server where the
cluster's roles exist; the drill's scratch cluster has only its own superuser.  A drill
that restored as that superuser would pass where the operator's restore fails (a grant
only a superuser may make, an object owned by a role the restore role cannot become), so
before restoring it mirrors what the restore depends on, read from the live server:

- the restore role (the url's, as libpq resolves it): LOGIN with a password of the
  drill's own, SUPERUSER and CREATEDB as the live server has them, nothing more;
- every other role of the cluster, NOLOGIN (the owners and grantees the dump names),
  and the restore role's memberships in them (direct grants of what it is a member of
  there, predefined roles included);
- each database, owned by its owner there; one the live server lacks is created by the
  restore role itself, as ``drkit restore`` creates it (which needs CREATEDB).

A drill also rehearses the day the live server is gone: when it does not answer, the
restore role is taken to be what the documented least-privilege setup gives (not a
superuser, owning its databases, a member of no other role), the owners named in the
dumps' tables of contents are made NOLOGIN, and the report says the roles were guessed.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from drkit.errors import DatabaseError, DrkitError
from drkit.pg import LocalCluster, connect, first_line, resolve

log = logging.getLogger(__name__)

_ENTRY = re.compile(r"^\d+; \d+ \d+ \S.* \S+$")


@dataclass
class RestoreRole:
    """The restore role as the live server has it (or as guessed without one)."""

    name: str
    superuser: bool = False
    createdb: bool = False
    #: the roles it is a member of, directly or not
    member_of: list[str] = field(default_factory=list)
    #: every other role of the cluster
    roles: list[str] = field(default_factory=list)
    #: each database's owner on the live server (a database it lacks is absent)
    owners: dict[str, str] = field(default_factory=dict)
    #: why the live server could not say (empty: it did)
    guessed: str = ""


def read_restore_role(url: str, databases: list[str]) -> RestoreRole:
    """The policy role's attributes, memberships and the cluster's roles, from the live
    server; the documented least-privilege guess when it does not answer."""
    try:
        name = resolve(url).user
    except DrkitError as exc:
        raise DrkitError(f"cannot tell which role the restore uses: {exc}") from None
    try:
        with connect(url) as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            member_of = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname NOT IN (current_user, "
                "'pg_database_owner') AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY 1"
            ).fetchall()
            roles = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' "
                "AND rolname <> current_user ORDER BY 1"
            ).fetchall()
            owners = conn.execute(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                (databases,),
            ).fetchall()
    except DrkitError as exc:  # a drill of a lost server still runs
        return RestoreRole(name, guessed=str(exc))
    except psycopg.Error as exc:
        return RestoreRole(name, guessed=first_line(exc))
    return RestoreRole(
        name,
        superuser=bool(row and row[0]),
        createdb=bool(row and row[1]),
        member_of=[str(r[0]) for r in member_of],
        roles=[str(r[0]) for r in roles],
        owners={str(d): str(o) for d, o in owners},
    )


def toc_owners(toc: str) -> set[str]:
    """The owners named in a ``pg_restore -l`` listing (its lines' last word)."""
    owners = set()
    for line in toc.splitlines():
        if _ENTRY.match(line):
            owners.add(line.rsplit(" ", 1)[-1])
    return owners


def mirror_roles(cluster: LocalCluster, role: RestoreRole, owners: set[str]) -> str:
    """Create the restore role and the roles it depends on in the scratch cluster; a
    connection string logging in as the restore role (the cluster's superuser's own
    when the restore role has that superuser's name)."""
    password = secrets.token_urlsafe(18)
    own = role.name == cluster.superuser
    with connect(cluster.dsn()) as conn:
        existing = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        if not own:
            attributes = [
                sql.SQL("SUPERUSER" if role.superuser else "NOSUPERUSER"),
                sql.SQL("CREATEDB" if role.createdb else "NOCREATEDB"),
            ]
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                    sql.Identifier(role.name),
                    sql.SQL(" ").join(attributes),
                    sql.Literal(password),
                )
            )
        others = set(role.roles) | set(role.owners.values()) | owners
        for other in sorted(others - existing - {role.name}):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(other)))
        existing |= others
        if not (own or role.superuser):  # a superuser acts as any role already
            for member_of in role.member_of:
                if member_of in existing:
                    conn.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.Identifier(member_of), sql.Identifier(role.name)
                        )
                    )
    if own:
        return cluster.dsn()
    return make_conninfo(cluster.dsn(), user=role.name, password=password)


def create_database(cluster: LocalCluster, role: RestoreRole, login: str, database: str) -> str:
    """The database as the real restore finds it: owned by its live owner, or (absent
    there, or guessed) created by the restore role; a connection string to it as the
    restore role."""
    owner = role.owners.get(database)
    name = sql.Identifier(database)
    if owner is None and role.guessed:
        owner = role.name
    # as its live owner (by the scratch superuser), else as drkit restore would: the
    # restore role creates it, with CREATEDB or a refusal
    admin, statement = (
        (cluster.dsn(), sql.SQL("CREATE DATABASE {} OWNER {}").format(name, sql.Identifier(owner)))
        if owner is not None
        else (login, sql.SQL("CREATE DATABASE {}").format(name))
    )
    with connect(admin) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot create database {database} in the scratch cluster "
                f"{'owned by ' + owner if owner else 'as role ' + role.name}: {first_line(exc)}"
            ) from None
    return make_conninfo(login, dbname=database)
