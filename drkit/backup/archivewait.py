"""The wait for a backup's WAL to be archived: the base backup's own end
(:class:`ArchiveWatch` ends ``pg_basebackup`` once the server has waited too long for its
archiver), the wait for given segments to reach the repository (:func:`wait_for_wal`,
stopped early by a failure ``pg_stat_archiver`` reports), and what the server says of
its archiver for the message (:func:`archiver_status`)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from drkit.errors import DatabaseError, OperationError
from drkit.pg import connect
from drkit.storage import Repository
from drkit.wal import find_wal_key

log = logging.getLogger(__name__)

ARCHIVE_WAIT_ENV = "DRKIT_ARCHIVE_WAIT"
DEFAULT_ARCHIVE_WAIT = 600.0

#: how the archiver's failures read in the server log (PostgreSQL 15-18, English messages)
_ARCHIVER_LOG_RE = re.compile(
    r"(archive command failed.*|archive module failed.*|archiving write-ahead log file .*)"
)
_LOG_TAIL = 256 * 1024


def archiver_status(dsn: str) -> str:
    """What the server says of its archiver, for a message: `` (the server's archiver
    failed N times, last on SEGMENT at TIME: <its last line about it in the server log>)``,
    or ``""`` when it has not failed since it last archived, or cannot be asked."""
    try:
        with connect(dsn, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT failed_count, last_failed_wal, last_failed_time,"
                " last_failed_time > coalesce(last_archived_time, '-infinity')"
                " FROM pg_stat_archiver"
            ).fetchone()
            if not row or not row[0] or not row[3]:
                return ""
            logged = _archiver_log_line(conn)
    except (DatabaseError, psycopg.Error):
        return ""
    when = row[2].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"the server's archiver failed {row[0]} times, last on {row[1]} at {when}"
    return f" ({text}: {logged})" if logged else f" ({text})"


def _archiver_log_line(conn: psycopg.Connection[Any]) -> str | None:
    """The last line about the archiver in the server's current log file, when the
    server has one (logging_collector) and it can be read: from here (drkit on the
    database host), else through pg_read_file (a superuser or pg_read_server_files)."""
    from drkit.redact import mask_url

    try:
        row = conn.execute(
            "SELECT pg_current_logfile(), current_setting('data_directory')"
        ).fetchone()
    except psycopg.Error:
        return None
    if not row or not row[0]:
        return None
    path = row[0] if os.path.isabs(row[0]) else os.path.join(row[1], row[0])
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _LOG_TAIL))
            tail = f.read(_LOG_TAIL).decode("utf-8", "replace")
    except OSError:
        try:
            found = conn.execute(
                "SELECT pg_read_file(%s, greatest((pg_stat_file(%s)).size - %s, 0), %s)",
                (path, path, _LOG_TAIL, _LOG_TAIL),
            ).fetchone()
        except psycopg.Error:
            return None
        tail = str(found[0]) if found and found[0] else ""
    lines = [m.group(1).strip() for m in map(_ARCHIVER_LOG_RE.search, tail.splitlines()) if m]
    return mask_url(lines[-1][:200]) if lines else None


class ArchiveWatch:
    """Ends ``pg_basebackup`` once the server has waited ``wait`` seconds for WAL archiving.

    With ``-X none`` the server ends a base backup only when every WAL segment it needs
    is archived, and never gives up: a failing ``archive_command`` would hold the backup
    (and a scheduled job) forever.  A thread asks the server, on a connection of its own,
    whether the walsender named ``application_name`` waits for archiving (its
    ``pg_stat_progress_basebackup`` phase, or its wait event); after ``wait`` seconds of
    that it records why (:func:`archiver_status`), ends the walsender (which would
    otherwise wait on, holding a WAL sender slot, without noticing its client is gone),
    and kills pg_basebackup.  :meth:`reason` says so, for the reader
    of pg_basebackup's stream to raise instead of storing a cut one."""

    POLL_SECONDS = 0.5
    #: the walsender waits for archiving: its phase ("waiting for wal archiving to
    #: finish"), or the wait event it sleeps on
    _WAITING_SQL = (
        "SELECT p.phase ILIKE 'waiting for wal archiving%%' "
        " OR a.wait_event = 'BackupWaitWalArchive', a.pid "
        "FROM pg_stat_activity a LEFT JOIN pg_stat_progress_basebackup p USING (pid) "
        "WHERE a.application_name = %s AND a.backend_type = 'walsender'"
    )

    def __init__(
        self, dsn: str, application_name: str, wait: float, kill: Callable[[], None]
    ) -> None:
        self._dsn = dsn
        self._name = application_name
        self._wait = wait
        self._kill = kill
        self._done = threading.Event()
        self._reason: str | None = None
        self._thread = threading.Thread(target=self._run, name="drkit-archive-watch", daemon=True)

    def __enter__(self) -> ArchiveWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=15)

    def reason(self) -> str | None:
        return self._reason

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        waiting_since: float | None = None
        try:
            while not self._done.wait(self.POLL_SECONDS):
                try:
                    if conn is None or conn.closed:
                        conn = connect(self._dsn, connect_timeout=10)
                    row = conn.execute(self._WAITING_SQL, (self._name,)).fetchone()
                except (DatabaseError, psycopg.Error) as exc:
                    log.debug("watching the base backup's phase: %s", exc)
                    conn = None
                    continue
                if not row or not row[0]:
                    waiting_since = None
                    continue
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > self._wait:
                    self._reason = (
                        f"WAL archiving did not complete within {self._wait:.0f}s "
                        f"({ARCHIVE_WAIT_ENV}) at the end of the base backup"
                        f"{archiver_status(self._dsn)}: the backup cannot be restored "
                        "without that WAL; fix archive_command (see the server log), then "
                        "take the backup again"
                    )
                    log.info("ending pg_basebackup, which waited %.0fs for archiving", self._wait)
                    try:  # the walsender never notices its client is gone while it waits
                        conn.execute("SELECT pg_terminate_backend(%s)", (row[1],))
                    except psycopg.Error as exc:
                        log.warning("could not end the base backup's walsender: %s", exc)
                    self._kill()
                    return
        finally:
            if conn is not None:
                conn.close()


def wait_for_wal(
    repo: Repository,
    names: list[str],
    timeout: float,
    dsn: str | None = None,
    *,
    failed_since: datetime | None = None,
    needed_by: str = "the backup",
) -> None:
    """Block until every WAL file in ``names`` is in the repository (``needed_by``: what
    cannot be restored without them, for the message).

    With ``failed_since`` (a time of the server's clock) and ``dsn``, stop as soon as the
    server's archiver reports a failure since then and has archived nothing after it
    (``pg_stat_archiver``), naming it, instead of waiting out ``timeout``: after three
    quick tries PostgreSQL retries a failing archive_command only once a minute."""
    deadline = time.monotonic() + timeout
    since = failed_since
    pending = list(names)
    delay = 0.1
    while pending:
        pending = [n for n in pending if find_wal_key(repo, n) is None]
        if not pending:
            return
        failed = dsn is not None and since is not None and _archiver_failed_since(dsn, since)
        if failed or time.monotonic() > deadline:
            within = "" if failed else f" within {timeout:.0f}s"
            raise OperationError(
                f"WAL {pending[0]} was not archived to {repo.location}{within}"
                f"{archiver_status(dsn) if dsn else ''}: {needed_by} cannot be restored "
                "without it — check archive_command and the server log"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _archiver_failed_since(dsn: str, since: datetime) -> bool:
    """Whether the server's archiver failed at or after ``since`` and has archived
    nothing after that failure."""
    try:
        with connect(dsn, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT last_failed_time >= %s"
                " AND last_failed_time > coalesce(last_archived_time, '-infinity')"
                " FROM pg_stat_archiver",
                (since,),
            ).fetchone()
    except (DatabaseError, psycopg.Error):
        return False
    return bool(row and row[0])
