"""Who may be read and written: the direction guard, DST's identity, every row visible,
one database per environment; all decided before anything is written.

Names and URLs prove nothing: ``localhost`` and ``127.0.0.1``, another user, a query
parameter, ``options``, a ``service=`` entry, ``PG*`` variables, a host list or a second
policy file all spell the same database differently, and libpq alone knows where each
leads.  So every connection is made by libpq, and DST is identified by what the server
it actually reached says about itself (:mod:`drkit.pg.identity`: the cluster's system
identifier and the database's OID), then compared with every environment it could be
an alias of:

* a ``protected`` environment (prod by default) is never a target, whatever the ranks;
* data flows only from a strictly higher rank to a lower one (equal ranks refused);
* DST's database must not be the database of SRC nor of any other environment among the
  policies next to SRC's and DST's (so a policy that ranks itself above prod still
  cannot point at prod's database).  Two connections reach the same database when DST's
  server lists the other connection (tagged with a one-off ``application_name``) in
  ``pg_stat_activity`` in DST's database, or when both report the same system
  identifier and database OID (so a standby or a restored copy of prod's cluster counts
  as prod).

Fail closed.  SRC, a protected environment or one ranked at or above DST whose database
cannot be identified is no proof that DST is not that database: unreachable, a url that
reaches a server on which that database does not exist (from here it may resolve to
another server than the real one), a server that will not say its system identifier.
The run is refused (exit 4), unless DST's database carries drkit's stamp: the comment
drkit writes on the database it publishes, naming DST's environment and binding it to
that database's system identifier and OID with a MAC keyed by the rules' salt (see
:func:`stamp`).  A url cannot set a comment, a copy of the comment on another database
does not hold, and no setting (``options``, ``PGOPTIONS``, ``ALTER ... SET``) is ever
read as one.  A database drkit built as DST's sanitized copy cannot be a protected one.
A policy file that cannot be loaded is refused the same way.

Reads that must see every row (the copy, the leak scan) refuse a role that row-level
security could hide rows from (:func:`require_every_row`, exit 4).  A policy naming
several databases is refused (:func:`database_dsn`, exit 2): a rules file describes the
schema of one database.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from drkit.config import Policy, available_environments, load_policy
from drkit.errors import DrkitError, SafetyRefused, UsageError
from drkit.pg import Identity, Resolved, describe, first_line, identity, resolve, with_dbname

log = logging.getLogger(__name__)

_PROBE_APP = "drkit-identity"
_STAMP_HEAD = "drkit sanitized copy for "


def check_direction(src: Policy, dst: Policy) -> None:
    """A protected DST, a copy into itself or a copy up or sideways is refused (exit 4)."""
    if dst.protected:
        raise SafetyRefused(
            f"refusing to write into {dst.name}: it is protected (a protected environment "
            "is never a sanitize target, whatever ranks or flags say)"
        )
    if src.name == dst.name:
        raise SafetyRefused(f"refusing to copy {src.name} into itself")
    if src.rank <= dst.rank:
        raise SafetyRefused(
            f"refusing to copy {src.name} (rank {src.rank}) into {dst.name} (rank {dst.rank}): "
            "sanitized data flows only from a strictly higher rank to a lower one"
        )


def stamp(env: str, system_identifier: str, database_oid: int, key: bytes) -> str:
    """The comment drkit writes on the database it publishes as ``env``'s copy: bound to
    that database (its cluster's system identifier and its OID) by a MAC keyed by the
    rules' salt, so it holds on no other database and cannot be written without the salt."""
    mac = hmac.new(key, f"{env}\0{system_identifier}\0{database_oid}".encode(), "sha256")
    return (
        f"{_STAMP_HEAD}{env} (system {system_identifier}, database {database_oid}, "
        f"mac {mac.hexdigest()[:32]}); written by drkit sanitize, do not edit"
    )


def stamp_holds(comment: str | None, env: str, target: Identity, key: bytes | None) -> bool:
    """Whether ``comment`` is drkit's stamp for ``env`` on exactly this database."""
    if comment is None or key is None or target.system_identifier is None:
        return False
    expected = stamp(env, target.system_identifier, target.database_oid, key)
    return hmac.compare_digest(comment.encode(), expected.encode())


def _policy_dirs(*policies: Policy) -> list[Path]:
    dirs: list[Path] = []
    for policy in policies:
        directory = Path(policy.source).parent
        if directory not in dirs:
            dirs.append(directory)
    return dirs


def _candidates(src: Policy, dst: Policy) -> Iterator[Policy]:
    """SRC, then every other environment DST could be an alias of."""
    yield src
    seen = {src.name, dst.name}
    for directory in _policy_dirs(src, dst):
        for name in available_environments(directory):
            if name in seen:
                continue
            seen.add(name)
            try:
                policy = load_policy(name, directory)
            except DrkitError as exc:
                raise SafetyRefused(
                    f"refusing to write into {dst.name}: the policy {directory / name}.yaml "
                    f"cannot be loaded to prove {dst.name}'s database is not its database "
                    f"({exc}); fix or remove it"
                ) from None
            yield policy


def _must_reach(policy: Policy, src: Policy, dst: Policy) -> bool:
    """Environments whose database DST must provably not be (fail closed)."""
    return policy is src or policy.protected or policy.rank >= dst.rank


def _where(exc: psycopg.Error, dsn: str) -> str:
    """The server libpq last tried (its own record), else its resolution of ``dsn``."""
    if exc.pgconn is not None:
        return Resolved.of(exc.pgconn).describe()
    return describe(dsn)


def _connect_target(dst: Policy, dst_dsn: str) -> psycopg.Connection[Any] | None:
    try:
        return psycopg.connect(dst_dsn, autocommit=True, connect_timeout=15)
    except psycopg.Error as exc:
        if _missing_database(exc):
            return None  # nothing there to overwrite: a new database cannot be an old one
        raise SafetyRefused(
            f"refusing to write into {dst.name}: cannot connect to {_where(exc, dst_dsn)} "
            f"to identify its database: {first_line(exc)}"
        ) from None


def guard_target(
    src: Policy, dst: Policy, src_dsn: str, dst_dsn: str, *, stamp_key: bytes | None
) -> Identity | None:
    """Refuse (exit 4) unless DST's database is provably none of the databases it must
    not be.  Returns DST's database as its server identified it (None: it does not exist
    yet, so nothing is overwritten); the build and the swap must happen there.
    ``stamp_key``: the key of drkit's stamp (None: no stamp is recognised)."""
    try:
        return _guard_target(src, dst, src_dsn, dst_dsn, stamp_key)
    except psycopg.Error as exc:  # what cannot be identified is refused
        raise SafetyRefused(
            f"refusing to write into {dst.name}: cannot identify {describe(dst_dsn)}: "
            f"{first_line(exc)}"
        ) from None


def _guard_target(
    src: Policy, dst: Policy, src_dsn: str, dst_dsn: str, stamp_key: bytes | None
) -> Identity | None:
    target = _connect_target(dst, dst_dsn)
    if target is None:
        return None
    with target:
        mine = identity(target)
        if mine.system_identifier is None:
            user = target.info.user
            raise SafetyRefused(
                f"refusing to write into {dst.name}: the server of {mine.reached.describe()} "
                f"does not tell role {user} its system identifier, so its database cannot be "
                f"told from others; GRANT EXECUTE ON FUNCTION pg_catalog.pg_control_system() "
                f"TO {user}"
            )
        unproven: list[tuple[Policy, str]] = []
        for policy in _candidates(src, dst):
            if policy is src:
                dsns = [src_dsn]
            else:
                url = policy.database.url.get_secret_value()
                dsns = [with_dbname(url, name) for name in policy.database.database_names()]
            for dsn in dsns:
                verdict = _probe(target, mine, policy, dsn)
                if verdict is True:
                    raise SafetyRefused(
                        f"refusing to write into {dst.name}: its database {mine.describe()} "
                        f"is the same database as {policy.name}'s {describe(dsn)} (same "
                        f"cluster, system identifier {mine.system_identifier}); fix "
                        f"{dst.name}'s database url"
                    )
                if verdict is False:
                    continue
                if _must_reach(policy, src, dst):
                    unproven.append((policy, verdict))
                else:
                    log.info("%s (ranked below %s): %s", policy.name, dst.name, verdict)
        if not unproven:
            return mine
        row = target.execute(
            "SELECT pg_catalog.shobj_description(%s, 'pg_database')", [mine.database_oid]
        ).fetchone()
        comment = row[0] if row else None
    names = ", ".join(p.name for p, _ in unproven)
    if stamp_holds(comment, dst.name, mine, stamp_key):
        log.warning(
            "%s's database %s is drkit's published copy (its stamp holds); not proved "
            "distinct from: %s",
            dst.name,
            mine.describe(),
            names,
        )
        return mine
    first, reason = unproven[0]
    more = f" (also unproved: {', '.join(p.name for p, _ in unproven[1:])})" if unproven[1:] else ""
    raise SafetyRefused(
        f"refusing to write into {dst.name}: {reason}{more}, so nothing proves its database "
        f"{mine.describe()} is not {first.name}'s; make {first.name}'s url reach its "
        "database from here for this run (the copy drkit publishes carries a stamp later "
        "runs recognise)"
    )


def _probe(target: psycopg.Connection[Any], mine: Identity, policy: Policy, dsn: str) -> bool | str:
    """Is ``dsn`` the target's database?  True or False when the servers say so; else
    why it cannot be told (never taken as "no")."""
    token = f"{_PROBE_APP}-{secrets.token_hex(8)}"
    try:
        other = psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name=token)
    except psycopg.Error as exc:
        where = _where(exc, dsn)
        if _missing_database(exc):
            return (
                f"{policy.name}'s database {_dbname(exc, dsn)} does not exist on {where} "
                "(where its url leads from here)"
            )
        return f"cannot reach {policy.name} ({where}: {first_line(exc)})"
    with other:
        theirs = identity(other)
        row = target.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = %s "
            "AND datname = pg_catalog.current_database()",
            [token],
        ).fetchone()
    if row and row[0]:
        return True
    if theirs.system_identifier is None:
        return (
            f"the server of {policy.name} ({theirs.reached.describe()}) does not tell its "
            "system identifier (pg_control_system())"
        )
    return mine.same_database(theirs)


def _dbname(exc: psycopg.Error, dsn: str) -> str:
    if exc.pgconn is not None and exc.pgconn.db:
        return exc.pgconn.db.decode("utf-8", "replace")
    return resolve(dsn).dbname


def _missing_database(exc: psycopg.Error) -> bool:
    if exc.sqlstate == "3D000":  # invalid_catalog_name
        return True
    text = str(exc)
    return 'database "' in text and "does not exist" in text


_RLS_HIDES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity
  AND (c.relforcerowsecurity OR NOT pg_has_role(current_user, c.relowner, 'USAGE'))
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
LIMIT 1
"""


def require_every_row(conn: psycopg.Connection[Any], what: str) -> None:
    """Refuse (exit 4) when row-level security could hide rows of ``what`` from this role.

    Reads that must see every row (the copy, the leak scan) also run with
    ``row_security = off``, so a policy the catalog check missed fails them instead of
    silently filtering.
    """
    row = conn.execute(
        "SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    if row[1]:
        return
    hidden = conn.execute(_RLS_HIDES).fetchone()
    if hidden is not None:
        raise SafetyRefused(
            f"table {hidden[0]}.{hidden[1]} of {what} has row-level security that hides rows "
            f"from role {row[0]}: the copy and the leak scan must see every row; connect as a "
            f"superuser or ALTER ROLE {row[0]} BYPASSRLS"
        )


def database_dsn(policy: Policy) -> str:
    """The one database a sanitize run reads or writes: a rules file describes the schema
    of one database, so a policy listing several is refused rather than half-copied."""
    names = policy.database.database_names()
    if len(names) > 1:
        raise UsageError(
            f"{policy.source}: database.databases lists {len(names)} databases "
            f"({', '.join(names)}); drkit sanitize copies one database: give it a policy "
            "whose database.databases names only the database to copy"
        )
    return with_dbname(policy.database.url.get_secret_value(), names[0])
