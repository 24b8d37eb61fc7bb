"""One backup of a kind per environment at a time: a PostgreSQL session advisory lock.

**Design.**  ``drkit backup ENV`` (and ``drkit backup ENV --physical``) takes
``pg_try_advisory_lock('drkb', crc32('backup:ENV:KIND'))`` on a dedicated connection to
the environment's (first) database before it picks a backup id, and holds it until
the manifest is written or the backup failed.  A second ``drkit backup ENV`` of the
same kind **is refused at once** with exit 1 and a message naming the holder (its
``application_name`` carries drkit's pid and host and when it started) — it does not
wait: a scheduled run that finds the previous one still running should say so, not
pile up behind it.  Logical and physical backups take different locks, so the weekly
base backup can run while a long nightly dump is still going.

Why an advisory lock and not a lease object in the repository: the database server
releases it the moment the holder's connection closes — including when the holder was
killed with SIGKILL, its host lost power (after TCP keepalives time out) or the
connection dropped — so there is no stale lease to expire or break by hand, and taking
it is atomic on every backend (S3 had no compare-and-swap when drkit started).  Its
limits: it needs a direct (or session-pooled) connection — a PgBouncer in transaction
mode would drop it — and it serialises backups that share a database server and an
environment name, not a repository shared by two differently named environments.

``prune`` does not take this lock (a scheduled backup must not be refused because a
prune is deleting): it only looks whether it is held (:func:`running_backups`).  The
holder announces the id it picked in its session's ``application_name``
(:meth:`HeldLock.announce`) before it stores anything under that id, so prune keeps,
whatever their age, the manifest-less objects of exactly that id: identity, not clocks
(an id is the host's clock, which may be hours off the server's).  While a holder has
not announced an id yet, prune keeps every leftover of its kind.  Other leftovers go once
older than ``retention.orphan_grace``.  A backup's manifest is written last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from drkit.errors import DatabaseError, DrkitError, OperationError

if TYPE_CHECKING:
    from drkit.config import Policy

log = logging.getLogger(__name__)

LOCK_CLASS_ID = 0x64726B62  # 'drkb'
_APP_PREFIX = "drkit backup"


class BackupLocked(OperationError):
    """Another backup of this environment and kind is running (exit 1)."""


def lock_key(env: str, kind: str) -> tuple[int, int]:
    value = zlib.crc32(f"backup:{env}:{kind}".encode())
    return LOCK_CLASS_ID, value - (1 << 32) if value >= 1 << 31 else value


def _application_name(env: str, kind: str) -> str:
    host = socket.gethostname().split(".")[0]
    # PostgreSQL truncates application_name to 63 bytes: keep the pid and host in front
    return f"{_APP_PREFIX} pid {os.getpid()} on {host}: {env} {kind}"[:63]


def _announcing(backup_id: str) -> str:
    host = socket.gethostname().split(".")[0]
    # the id first: it must survive the 63-byte truncation whole
    return f"{_APP_PREFIX} {backup_id} pid {os.getpid()} on {host}"[:63]


#: an announced id in a holder's application_name (see :meth:`HeldLock.announce`)
_ANNOUNCED_RE = re.compile(rf"^{_APP_PREFIX} (\d{{8}}T\d{{6}}Z-(?:logical|physical)) ")


class HeldLock:
    """A taken backup lock; :meth:`release` (idempotent) or the process's end frees it."""

    def __init__(self, conn: Any, env: str, kind: str) -> None:
        self._conn = conn
        self.env = env
        self.kind = kind

    def announce(self, backup_id: str) -> None:
        """Name the id this backup stores under, in the lock session's
        ``application_name``, before anything is stored under it: prune keeps that id's
        objects while the lock is held.  Fails (the backup must not go on) when the
        session, and with it the lock, is gone."""
        import psycopg

        from drkit.pg import first_line

        try:
            self._conn.execute(
                "SELECT set_config('application_name', %s, false)", (_announcing(backup_id),)
            )
        except psycopg.Error as exc:
            raise DatabaseError(
                f"lost the backup lock of {self.env} before backup {backup_id} started: "
                f"{first_line(exc)}"
            ) from None

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()  # closing the session releases the lock


def acquire_backup_lock(policy: Policy, kind: str) -> HeldLock:
    """Take the backup lock of ``policy``'s environment for ``kind``, or BackupLocked."""
    import psycopg

    from drkit.pg import connect, first_line

    env = policy.name
    key = lock_key(env, kind)
    conn = connect(
        policy.database.url.get_secret_value(),
        policy.database.database_names()[0],
        autocommit=True,
        application_name=_application_name(env, kind),
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    try:
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot take the backup lock of {env}: {first_line(exc)}"
            ) from None
        if not (row and row[0]):
            raise BackupLocked(
                f"another {kind} backup of {env} is running ({_holder(conn, key)}); refusing "
                "to start a second one — wait for it to finish (drkit backups "
                f"{env} lists it once done) or stop it"
            )
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    log.debug("backup lock of %s (%s) taken", env, kind)
    return HeldLock(conn, env, kind)


@contextlib.contextmanager
def backup_lock(policy: Policy, kind: str) -> Iterator[HeldLock]:
    """Hold the backup lock of ``policy``'s environment for ``kind``, or BackupLocked."""
    held = acquire_backup_lock(policy, kind)
    try:
        yield held
    finally:
        held.release()


def running_backups(
    policy: Policy, timeout: float = 3.0
) -> dict[str, frozenset[str] | None] | None:
    """The kinds whose backup lock some session holds now, each with the backup ids the
    holders announced (None: a holder has not announced one yet, or this role may not
    see its ``application_name`` — then every leftover of that kind may be its own);
    None when the database cannot be asked (prune then relies on the orphan grace
    alone)."""
    import psycopg

    from drkit.pg import connect

    env = policy.name
    try:
        with connect(
            policy.database.url.get_secret_value(),
            policy.database.database_names()[0],
            connect_timeout=max(1, round(timeout)),
        ) as conn:
            running: dict[str, frozenset[str] | None] = {}
            for kind in ("logical", "physical"):
                rows = conn.execute(_HELD_SQL, lock_key(env, kind)).fetchall()
                if not rows:
                    continue
                found = [_ANNOUNCED_RE.match(row[0] or "") for row in rows]
                ids = frozenset(m.group(1) for m in found if m is not None)
                running[kind] = ids if all(found) else None
            return running
    except (DrkitError, psycopg.Error) as exc:  # unreachable: prune loses only precision
        log.info("prune %s: cannot ask the database about running backups: %s", env, exc)
        return None


# the granted advisory lock of lock_key() in this database (two-int4 form: objsubid 2)
_LOCK_WHERE = (
    "l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid "
    "AND l.objid = (%s::bigint & 4294967295)::oid AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_HELD_SQL = (
    "SELECT a.application_name FROM pg_locks l "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE " + _LOCK_WHERE
)
_HOLDER_SQL = (
    "SELECT a.application_name, a.backend_start, a.client_addr::text "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE " + _LOCK_WHERE
)


def _holder(conn: Any, key: tuple[int, int]) -> str:
    """Who holds the lock, as far as this role may see (never a query text or secret)."""
    import psycopg

    try:
        row = conn.execute(_HOLDER_SQL, key).fetchone()
    except psycopg.Error:
        return "holder unknown"
    if not row:
        return "holder unknown"
    name, started, addr = row
    parts = [str(name) if name else "a session"]
    if isinstance(started, datetime):
        stamp = started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        parts.append(f"connected since {stamp}")
    if addr:
        parts.append(f"from {addr}")
    return ", ".join(parts)
