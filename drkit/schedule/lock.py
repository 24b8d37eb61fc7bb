"""The scheduler lock: a PostgreSQL session advisory lock on the environment's database.

Two scheduler replicas must never run the same environment's jobs.  Before a job runs,
the daemon makes sure it holds ``pg_try_advisory_lock(<'drkt'>, <crc32 of the env>)`` on
a dedicated connection to the environment's (first) database, which it then keeps
open: the replica that gets the lock first runs that environment's jobs for as long as
it lives; the others find the lock taken, skip the run (counted as ``skipped``, shown as
``standby``), and try again at the next run.  Chosen over a lease object in the
repository because:

* PostgreSQL releases it the moment the holder's session ends — a crashed or killed
  replica never leaves a stale lease to expire, and no clock (skewed or not) is
  involved;
* object stores offer no dependable compare-and-swap for a lease (S3 conditional
  writes are recent and not in every S3-compatible store), while ``file://`` and S3
  would need two different designs;
* every backup needs the database anyway: when it is unreachable, the job could not
  run and fails either way (and is reported so).

Holding the lock for the daemon's lifetime, rather than per run, matters: with a
per-run lock, a second replica whose clock is a few seconds late would take the lock
after a short job finished and run it again.  If the lock connection breaks (database
restart), the next run reconnects and competes for the lock again.  The lock needs a
direct session: through PgBouncer in transaction mode it would not hold.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import zlib
from typing import TYPE_CHECKING, Any

from drkit.errors import DatabaseError

if TYPE_CHECKING:
    import psycopg

    from drkit.config import Policy

log = logging.getLogger(__name__)

LOCK_CLASS_ID = 0x64726B74  # 'drkt'


def lock_key(env: str) -> tuple[int, int]:
    value = zlib.crc32(f"drkit:{env}".encode())
    return LOCK_CLASS_ID, value - (1 << 32) if value >= 1 << 31 else value


def _first_listed(policy: Policy) -> str | None:
    """The lock's database: the first listed; None, the one libpq connects the url to
    (asked when the lock is taken, not when a policy is loaded)."""
    return policy.database.databases[0] if policy.database.databases else None


class EnvironmentLock:
    """The session advisory lock that makes this replica the one running ``env``'s jobs."""

    def __init__(self, policy: Policy) -> None:
        self.env = policy.name
        self.dsn = policy.database.url.get_secret_value()
        # the first listed database; None: the one libpq connects the url to
        self.dbname = _first_listed(policy)
        self.key = lock_key(self.env)
        self._conn: psycopg.Connection[Any] | None = None
        # the jobs and the wal-receive supervisor ask from their own threads: one session
        self._taking = threading.Lock()

    def same_target(self, policy: Policy) -> bool:
        return (
            self.dsn == policy.database.url.get_secret_value()
            and _first_listed(policy) == self.dbname
        )

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def acquire(self) -> bool:
        """True when this process holds the lock (taking it if free); False when another
        session holds it.  DatabaseError when the database cannot be reached."""
        with self._taking:
            return self._acquire()

    def _acquire(self) -> bool:
        import psycopg

        from drkit.pg import connect, first_line

        if self._conn is not None:
            try:
                self._conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                log.warning("lock connection of %s lost; competing for the lock again", self.env)
                self.release()
        conn = connect(
            self.dsn,
            self.dbname,
            connect_timeout=10,
            application_name=f"drkit scheduler lock {self.env}"[:63],
        )
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(
                f"cannot take the scheduler lock of {self.env}: {first_line(exc)}"
            ) from None
        if row and row[0]:
            self._conn = conn
            log.info("scheduler lock of %s taken: this scheduler runs its jobs", self.env)
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
