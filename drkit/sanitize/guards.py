"""Who may be read and written: the direction guard, DST's identity, every row visible,
one database per environment; all decided before anything is written.

Names and URLs prove nothing: ``localhost`` and ``127.0.0.1``, another user, a query
parameter or a second policy file all spell the same database differently.  So DST is
identified by what its server says about itself, and compared with every environment
it could be an alias of:

* a ``protected`` environment (prod by default) is never a target, whatever the ranks;
* data flows only from a strictly higher rank to a lower one (equal ranks refused);
* DST's database must not be the database of SRC nor of any other environment among the
  policies next to SRC's and DST's (so a policy that ranks itself above prod still
  cannot point at prod's database).  Two connections reach the same database when DST's
  server lists the other connection (tagged with a one-off ``application_name``) in
  ``pg_stat_activity`` in DST's database, or when both report the same system
  identifier, postmaster start time and database OID.

Fail closed: SRC, a protected environment or one ranked at or above DST that cannot be
reached cannot be proved distinct, so the run is refused (exit 4), unless DST's database
carries the stamp drkit sets on every copy it publishes (``drkit.sanitize_target``, a
database-level setting naming DST's environment); a database drkit built as DST's
sanitized copy cannot be a protected one.  A policy file that cannot be loaded is
refused the same way.

Reads that must see every row (the copy, the leak scan) refuse a role that row-level
security could hide rows from (:func:`require_every_row`, exit 4).  A policy naming
several databases is refused (:func:`database_dsn`, exit 2): a rules file describes the
schema of one database.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from drkit.config import Policy, available_environments, load_policy
from drkit.errors import DrkitError, SafetyRefused, UsageError
from drkit.pg.connect import first_line
from drkit.pg.conninfo import describe, with_dbname

log = logging.getLogger(__name__)

STAMP = "drkit.sanitize_target"
_PROBE_APP = "drkit-identity"


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


@dataclass(frozen=True)
class Identity:
    """What a server says about the database a connection is in."""

    system_identifier: int | None
    started: str
    database_oid: int
    database: str

    def same_database(self, other: Identity) -> bool:
        return (
            self.system_identifier is not None
            and self.system_identifier == other.system_identifier
            and self.started == other.started
            and self.database_oid == other.database_oid
        )


def identity(conn: psycopg.Connection[Any]) -> Identity:
    row = conn.execute(
        "SELECT d.oid, d.datname, pg_postmaster_start_time()::text "
        "FROM pg_database d WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    sysid: int | None
    try:
        with conn.transaction():
            found = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        sysid = int(found[0]) if found else None
    except psycopg.Error:  # not granted: the session probe still decides
        sysid = None
    return Identity(sysid, str(row[2]), int(row[0]), str(row[1]))


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


def _connect_target(dst_dsn: str) -> psycopg.Connection[Any] | None:
    try:
        return psycopg.connect(dst_dsn, autocommit=True, connect_timeout=15)
    except psycopg.OperationalError as exc:
        if _missing_database(exc):
            return None  # nothing there to overwrite: a new database cannot be an old one
        raise SafetyRefused(
            f"cannot connect to {describe(dst_dsn)} to identify the target: {first_line(exc)}"
        ) from None


def guard_target(src: Policy, dst: Policy, src_dsn: str, dst_dsn: str) -> None:
    """Refuse (exit 4) unless DST's database is provably none of the databases it must not be."""
    try:
        _guard_target(src, dst, src_dsn, dst_dsn)
    except psycopg.Error as exc:  # what cannot be identified is refused
        raise SafetyRefused(
            f"refusing to write into {dst.name}: cannot identify {describe(dst_dsn)}: "
            f"{first_line(exc)}"
        ) from None


def _guard_target(src: Policy, dst: Policy, src_dsn: str, dst_dsn: str) -> None:
    target = _connect_target(dst_dsn)
    if target is None:
        return
    with target:
        mine = identity(target)
        unreachable: list[str] = []
        for policy in _candidates(src, dst):
            if policy is src:
                dsns = [src_dsn]
            else:
                url = policy.database.url.get_secret_value()
                dsns = [with_dbname(url, name) for name in policy.database.database_names()]
            for dsn in dsns:
                verdict = _probe(target, mine, dsn)
                if verdict is None and _must_reach(policy, src, dst):
                    unreachable.append(f"{policy.name} ({describe(dsn)})")
                elif verdict is None:
                    log.info("%s is not reachable; it ranks below %s", policy.name, dst.name)
                elif verdict:
                    raise SafetyRefused(
                        f"refusing to write into {dst.name}: its database {describe(dst_dsn)} "
                        f"is the same database as {policy.name}'s {describe(dsn)} (same server, "
                        f"database oid {mine.database_oid}); fix {dst.name}'s database url"
                    )
        if not unreachable:
            return
        row = target.execute("SELECT current_setting(%s, true)", [STAMP]).fetchone()
        stamp = row[0] if row else None
    if stamp == dst.name:
        log.warning(
            "could not reach %s; %s's database carries drkit's stamp for %s, proceeding",
            ", ".join(unreachable),
            dst.name,
            dst.name,
        )
        return
    raise SafetyRefused(
        f"refusing to write into {dst.name}: cannot reach {unreachable[0]} to prove "
        f"{describe(dst_dsn)} is not its database; make it reachable from here for this run "
        "(later runs recognise the copy drkit publishes)"
    )


def _probe(target: psycopg.Connection[Any], mine: Identity, dsn: str) -> bool | None:
    """Is ``dsn`` the target's database?  None when it cannot be told (unreachable)."""
    token = f"{_PROBE_APP}-{secrets.token_hex(8)}"
    try:
        other = psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name=token)
    except psycopg.OperationalError as exc:
        if _missing_database(exc):
            return False  # its server answered: that database does not exist, DST's does
        return None
    with other:
        theirs = identity(other)
        row = target.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            [token],
        ).fetchone()
    return bool(row and row[0]) or mine.same_database(theirs)


def _missing_database(exc: psycopg.Error) -> bool:
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
