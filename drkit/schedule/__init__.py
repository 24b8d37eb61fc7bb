"""The scheduler: ``drkit schedule run`` and ``drkit schedule show``.

This is the package's face:

- :mod:`.jobs`: the one table of jobs (:data:`JOBS`: what each runs, what it leaves in
  the repository, what its schedule key means), and the record of a job's runs;
- :mod:`.timing`: when jobs run (fire times, a job's period, the misfire grace) and
  ``schedule show`` (its ``--json`` document, :class:`ScheduleShowDocument`);
- :mod:`.lock`: the advisory lock that makes one replica run an environment's jobs;
- :mod:`.cron`: cron expressions with cron's meaning, as APScheduler triggers.

The daemon and what it serves are loaded only when the command that runs them (``drkit
schedule run``) first uses their names (:func:`drkit.lazy_face`): :mod:`.daemon`
(APScheduler, job runs, signals; :func:`run_daemon`), :mod:`.metrics` (one row a metric,
over the catalog view) and :mod:`.endpoints` (``/metrics``, ``/healthz`` and ``/status``;
:func:`read_token`).  They bring prometheus_client and the HTTP server, which ``schedule
show``, the docs generator and a policy's validation do without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face
from drkit.schedule.jobs import JOBS as JOBS
from drkit.schedule.jobs import RUN_STATUSES as RUN_STATUSES
from drkit.schedule.jobs import Job as Job
from drkit.schedule.jobs import JobState as JobState
from drkit.schedule.jobs import dispatch as dispatch
from drkit.schedule.jobs import scrub as scrub
from drkit.schedule.lock import LOCK_CLASS_ID as LOCK_CLASS_ID
from drkit.schedule.lock import EnvironmentLock as EnvironmentLock
from drkit.schedule.lock import lock_key as lock_key
from drkit.schedule.timing import MISFIRE_GRACE as MISFIRE_GRACE
from drkit.schedule.timing import ScheduleShowDocument as ScheduleShowDocument
from drkit.schedule.timing import checked_policies as checked_policies
from drkit.schedule.timing import cron_period as cron_period
from drkit.schedule.timing import next_runs as next_runs
from drkit.schedule.timing import show_schedule as show_schedule

if TYPE_CHECKING:
    from drkit.schedule.daemon import run_daemon as run_daemon
    from drkit.schedule.endpoints import read_token as read_token

#: loaded on first use: APScheduler, prometheus_client and the HTTP server come with them
lazy_face(
    __name__,
    {
        "daemon": "run_daemon",
        "endpoints": "read_token",
    },
)
