"""The recovering server, watched: WAL replay as progress, the wait until recovery
pauses at its end (what it replayed, read with SQL), and the promotion or the stop that
follows the checks of :mod:`drkit.restore.goal`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from drkit.errors import DatabaseError, OperationError
from drkit.lsn import parse_lsn
from drkit.pg import PostgresServer
from drkit.progress import Meter, OnProgress
from drkit.restore.plan import RecoveryPlan
from drkit.wal import parse_segment

#: how long a recovering server may show no live postmaster before it counts as dead
DOWN_GRACE = 5.0
#: how long a fast shutdown may take (pg_ctl's own default)
STOP_WAIT = 60.0


class ReplayProgress:
    """WAL replay as progress: the bytes of WAL replayed since the base backup's start
    (``pg_last_wal_replay_lsn()`` as the server reports it), out of the span to the
    planned end, so the line shows a percent and an ETA.  The end is exact where the plan
    names an LSN (``latest``'s last record, a name, an LSN, ``immediate``); for a time or
    a transaction it is the end of the last planned segment, an upper bound shown as an
    estimate (``≈``), since replay stops at the target, before it; so is any end for a
    replay that pauses on the way (``pause``: an observer's restore point)."""

    def __init__(
        self,
        sink: OnProgress | None,
        plan: RecoveryPlan,
        end_lsn: str | None,
        pause: str | None,
    ) -> None:
        wal_start = plan.manifest.wal_start
        self.start = parse_lsn(wal_start) if wal_start else None
        exact = end_lsn or plan.stop_lsn
        if exact is not None:
            end = parse_lsn(exact)
        else:
            end = (parse_segment(str(plan.reach.last_segment), plan.segment_size).segno + 1) * (
                plan.segment_size
            )
        total = end - self.start if self.start is not None and end > self.start else None
        self.done = 0
        self.meter = Meter(
            sink,
            "WAL replay",
            f"to restore point {pause}" if pause is not None else "",
            total=total,
            estimate=total is not None and (exact is None or pause is not None),
        )

    def reached(self, lsn: str) -> None:
        """The server has replayed up to ``lsn``: advance by what is new."""
        if self.start is None:
            return
        now = parse_lsn(lsn) - self.start
        if now > self.done:
            self.meter(now - self.done)
            self.done = now

    def finish(self, lsn: str) -> None:
        """The end is reached and checked: count the last stretch, then done."""
        self.reached(lsn)
        self.meter.finish()


@dataclass
class Replayed:
    """What a server paused at the end of its recovery says it replayed (SQL)."""

    lsn: str
    last_commit: datetime | None


def wait_paused(
    server: PostgresServer, timeout: float, on_lsn: Callable[[str], None] | None = None
) -> Replayed | None:
    """Wait until recovery pauses at its end and return what it replayed (SQL), or None
    when the server stopped first (PostgreSQL ends recovery with a FATAL when the WAL
    ends before an explicit target).  ``on_lsn`` is told ``pg_last_wal_replay_lsn()`` at
    every look (from the consistent point on, when the server first accepts a login)."""
    deadline = time.monotonic() + timeout
    seen = False
    down_since: float | None = None
    while True:
        if not server.is_running():
            # pg_ctl -W may return before the pid file is written: a server never
            # seen running gets a moment; one seen running and gone has stopped
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if seen or now - down_since > DOWN_GRACE:
                return None
        else:
            seen, down_since = True, None
            with contextlib.suppress(DatabaseError):
                row = server.query(
                    "SELECT pg_is_in_recovery(), "
                    "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() "
                    "ELSE '' END, pg_last_wal_replay_lsn()::text, "
                    "pg_last_xact_replay_timestamp()"
                )
                in_recovery, pause_state, lsn, last_commit = row
                if lsn is not None and on_lsn is not None:
                    on_lsn(str(lsn))
                if not in_recovery:  # never, with an explicit target and 'pause'
                    raise OperationError(
                        f"the recovering server on port {server.port} left recovery before "
                        f"drkit checked it (log: {server.log_file})"
                    )
                if pause_state == "paused" and lsn is not None:
                    return Replayed(str(lsn), last_commit.astimezone(UTC) if last_commit else None)
        if time.monotonic() > deadline:
            raise OperationError(
                f"recovery did not finish within {timeout:.0f}s (log: {server.log_file}); "
                f"the server is still running on port {server.port}"
            )
        time.sleep(0.3)


def stop(server: PostgresServer) -> None:
    """A fast shutdown, within pg_ctl's own default wait; a failure raises."""
    server.stop(
        "fast",
        STOP_WAIT,
        check=True,
        what=f"stopping the recovering PostgreSQL (log: {server.log_file})",
    )


def promote(server: PostgresServer, timeout: float) -> None:
    """``pg_ctl promote`` as the cluster's OS user (no SQL privilege needed), and wait
    until the server has left recovery."""
    server.ctl(
        "-w",
        "-t",
        str(int(timeout)),
        "promote",
        what=f"promoting the recovered server (log: {server.log_file})",
        timeout=timeout + 30,
    )
    deadline = time.monotonic() + timeout
    while server.query("SELECT pg_is_in_recovery()")[0]:
        if time.monotonic() > deadline:
            raise OperationError(
                f"the recovered server on port {server.port} did not leave recovery within "
                f"{timeout:.0f}s of its promotion (log: {server.log_file})"
            )
        time.sleep(0.2)
