"""The scheduler's long-running job: ``drkit wal-receive`` for each streaming environment.

Cron jobs start and end; streaming must never stop.  One :class:`StreamSupervisor`
thread per environment whose policy has ``wal_streaming`` runs
:func:`drkit.wal.receive_wal` for as long as the daemon lives and restarts it whenever it
ends (the server restarted, the network broke, the slot was busy), after a backoff that
doubles from :data:`FIRST_BACKOFF` up to :data:`MAX_BACKOFF` and starts over once a
run has streamed for :data:`STEADY` (so a flapping receiver does not hammer the server,
and one that ran for a day restarts at once).  Each failure is logged and counted with
its error line; it is never lost and never fatal to the daemon.

Only the scheduler holding the environment's lock streams (a standby's receiver would
only find the slot busy); a standby checks again after each backoff.  SIGTERM stops the
receiver, which stores what it received before the daemon exits.

``/healthz`` shows each supervisor's line (its thread alive, streaming or waiting to
restart, the restarts so far) and answers 503 when a supervisor thread itself has died:
that is the daemon failing, not a job.  ``/status`` names a receiver that is waiting to
restart, with its last error, as a problem.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from drkit.catalog import iso
from drkit.schedule.jobs import error_line

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.schedule.lock import EnvironmentLock

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: a run that streamed this long resets the backoff
STEADY = 300.0


@dataclass
class StreamState:
    """What ``/healthz`` and ``/status`` show of one environment's receiver."""

    env: str
    state: str = "starting"  # starting | streaming | backoff | standby | stopped
    since: datetime | None = None
    restarts: int = 0
    last_error: str | None = None
    next_start: datetime | None = None


class StreamSupervisor:
    """Runs wal-receive for one policy until :meth:`stop`, restarting it with backoff."""

    def __init__(self, policy: Policy, lock: EnvironmentLock) -> None:
        self.policy = policy
        self.lock = lock
        self.info = StreamState(policy.name)
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"drkit-wal-receive-{policy.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 60) -> None:
        """Stop the receiver (it stores what it received) and wait for the thread."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _set(self, state: str, **fields: Any) -> None:
        with self._guard:
            self.info.state = state
            self.info.since = datetime.now(UTC)
            for name, value in fields.items():
                setattr(self.info, name, value)

    def _run(self) -> None:
        from drkit.wal import receive_wal

        backoff = FIRST_BACKOFF
        while not self._stop.is_set():
            failure: str | None = None
            try:
                holder = self.lock.acquire()
            except Exception as exc:  # the server is down: like a failed run
                holder, failure = False, error_line(exc)
            if holder:
                self._set("streaming", next_start=None)
                started = time.monotonic()
                try:
                    receive_wal(self.policy, stop=self._stop)
                except Exception as exc:  # never lost, never fatal
                    failure = error_line(exc)
                if self._stop.is_set():
                    break
                if time.monotonic() - started >= STEADY:
                    backoff = FIRST_BACKOFF
                failure = failure or "wal-receive ended"
            if failure is not None:
                log.error(
                    "wal-receive %s ended: %s; restarting in %.0fs",
                    self.policy.name,
                    failure,
                    backoff,
                )
                with self._guard:
                    self.info.restarts += 1
                self._set(
                    "backoff",
                    last_error=failure,
                    next_start=datetime.fromtimestamp(time.time() + backoff, UTC),
                )
            else:
                self._set("standby")
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF)
        self._set("stopped", next_start=None)

    def line(self) -> dict[str, Any]:
        """Its line in ``/healthz`` and ``/status``."""
        with self._guard:
            info = self.info
            return {
                "env": info.env,
                "alive": self.thread.is_alive() or info.state == "stopped",
                "state": info.state,
                "since": iso(info.since),
                "restarts": info.restarts,
                "last_error": info.last_error,
                "next_start": iso(info.next_start),
            }
