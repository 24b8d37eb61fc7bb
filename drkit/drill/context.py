"""What the stages of one drill share: its run (policy, repository, backup, report, work
directory, scratch servers), the clock of its phases, and the error of a drill that
cannot run.

:mod:`.runner` makes a :class:`DrillRun` and hands it to :mod:`.logical` or
:mod:`.physical`; they time their phases with :class:`PhaseTimer`, add checks to the
report (:mod:`.checks`) and register every server they start in ``scratch``, which the
runner tears down whatever happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from drkit.catalog import Manifest
from drkit.config import Policy
from drkit.drill.report import DrillReport
from drkit.errors import OperationError
from drkit.pg import PostgresServer
from drkit.progress import Meter, OnProgress
from drkit.restore import RecoveryTarget
from drkit.storage import Repository

log = logging.getLogger(__name__)

#: each phase as it starts and ends (a ProgressEvent with state "done" and its seconds)
PhaseCallback = OnProgress


class DrillCannotRun(OperationError):
    """The drill itself could not run (no scratch cluster): verdict ERROR, exit 1."""


class PhaseTimer:
    """Accumulates wall time per phase in the report, and tells the caller what runs."""

    def __init__(self, report: DrillReport, on_phase: PhaseCallback | None) -> None:
        self.report = report
        self.on_phase = on_phase
        self.origin = time.monotonic()
        self._lock = threading.Lock()

    @contextmanager
    def phase(self, name: str, item: str = "", total: int | None = None) -> Iterator[Meter]:
        """Time one phase (several runs of a phase add up), metering its progress."""
        meter = Meter(self.on_phase, name, item, total=total)
        started = time.monotonic()
        try:
            with meter:  # done only when the phase completed, aborted otherwise
                yield meter
        finally:
            took = time.monotonic() - started
            with self._lock:
                self.report.phases[name] = self.report.phases.get(name, 0.0) + took
            log.info("drill %s: %s took %.2fs", self.report.id, name, took)


@dataclass
class DrillRun:
    """One drill under way: what it restores, where, and what it found so far."""

    policy: Policy
    repo: Repository
    manifest: Manifest
    report: DrillReport
    timer: PhaseTimer
    #: the drill's private directory: ``pg/`` (the scratch cluster), ``fetch/`` (dumps)
    work: Path
    #: the pg_restore / fetch parallelism of a logical drill
    jobs: int = 1
    #: every server the drill started: torn down at the end, whatever happened
    scratch: list[PostgresServer] = field(default_factory=list)
    #: a physical drill's recovery target of another kind than a time (--target-xid,
    #: --target-lsn, --target-name, --immediate); None: ``report.target_point`` or the end
    point: RecoveryTarget | None = None

    @property
    def fetch_dir(self) -> Path:
        return self.work / "fetch"


def backup_major(manifest: Manifest) -> int | None:
    """The backup's PostgreSQL major, None when its version does not name one."""
    try:
        return int(str(manifest.server_version).split(".")[0])
    except (TypeError, ValueError):
        return None
