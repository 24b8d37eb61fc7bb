"""``drkit schedule run``: the scheduler daemon.

APScheduler 3 runs one cron job per ``schedule:`` entry of each policy, in the policy's
timezone, with ``coalesce`` (a backlog of missed runs becomes one run), one instance
per job, and a misfire grace of an hour (:data:`~drkit.schedule.timing.MISFIRE_GRACE`).
The scheduler's own clock is UTC, and the trigger (:func:`drkit.cron.cron_trigger`) runs
a fixed-hour job once when an autumn DST change repeats its hour.

Jobs of one environment run one at a time (a prune waits for the backup before it).
A failing job is logged with its error, counted in ``drkit_job_runs_total``, shown by
``/status``, and never stops the daemon (nor turns ``/healthz``, its liveness, to 503).  SIGTERM (and SIGINT) stop the scheduling of
new runs, let the running job finish, then the daemon exits 0; SIGHUP reloads the
policies (a policy that no longer validates is reported and the old one kept).

The pieces: :mod:`.jobs` (what each job runs), :mod:`.timing` (when: fire times,
periods, the misfire grace), :mod:`.lock` (the advisory lock that makes one replica run
an environment's jobs), :mod:`.metrics` and :mod:`.endpoints` (``/metrics`` and
``/healthz`` and ``/status`` on one port).  This module holds the daemon itself: it installs the
policies' jobs in APScheduler, runs them one environment at a time and records how
each run ended, keeps every environment's catalog fresh, and handles the signals.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from drkit.config import Policy
from drkit.errors import DrkitError
from drkit.schedule.endpoints import (
    DEFAULT_BIND,
    DEFAULT_PORT,
    MonitoringServer,
    bind_server,
    job_status,
    liveness,
)
from drkit.schedule.jobs import JOBS, JobState, dispatch, error_line, scrub
from drkit.schedule.lock import EnvironmentLock
from drkit.schedule.metrics import CatalogSnapshot, DrkitCollector, MetricsView, read_catalog
from drkit.schedule.page import DrillCharts, render_page
from drkit.schedule.streaming import StreamSupervisor
from drkit.schedule.timing import MISFIRE_GRACE, checked_policies, cron_period, next_runs

log = logging.getLogger(__name__)

CATALOG_REFRESH = timedelta(seconds=60)


class SchedulerDaemon:
    """The daemon: policies, APScheduler, locks, job states, catalogs, HTTP endpoints."""

    def __init__(
        self,
        envs: list[str] | None = None,
        policy_dir: Path | str | None = None,
        *,
        bind: str = DEFAULT_BIND,
        port: int = DEFAULT_PORT,
        token: bytes | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.envs = list(envs or [])
        self.policy_dir = policy_dir
        self.bind = bind
        self.port = port
        self.token = token
        self.charts = DrillCharts()
        self.started_at = datetime.now(UTC)
        self.policies: dict[str, Policy] = {}
        self.jobs: dict[tuple[str, str], JobState] = {}
        self.catalogs: dict[str, CatalogSnapshot] = {}
        self.locks: dict[str, EnvironmentLock] = {}
        self.standby: dict[str, bool] = {}
        self._env_run_locks: dict[str, threading.Lock] = {}
        #: env -> the supervisor of its wal-receive (policies with wal_streaming)
        self.streams: dict[str, StreamSupervisor] = {}
        self._state = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._stopping = False
        self._server: MonitoringServer | None = None
        self._scheduler: Any = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DrkitCollector(self.metrics_view))

    # -- set-up ---------------------------------------------------------------------

    def load(self) -> list[Policy]:
        """Load and validate the policies (PolicyError, exit 2, before anything runs)."""
        return checked_policies(self.envs or None, self.policy_dir)

    def start(self) -> None:
        """Validate, bind the port, read the catalogs, start scheduling."""
        policies = self.load()
        self._bind()
        self._apply(policies)
        for env in list(self.policies):
            self.refresh_catalog(env)
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=8)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(MISFIRE_GRACE.total_seconds()),
            },
        )
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

        self._scheduler.add_listener(
            self.on_scheduler_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self._schedule_jobs()
        self._scheduler.start()
        self._supervise_streams()
        assert self._server is not None
        threading.Thread(target=self._server.serve_forever, name="drkit-http", daemon=True).start()
        for state in sorted(self.jobs.values(), key=lambda s: (s.env, s.job)):
            runs = next_runs(state.cron, state.timezone, 1)
            log.info(
                "scheduled %s/%s (%s, %s), next run %s",
                state.env,
                state.job,
                state.cron,
                state.timezone,
                runs[0].isoformat() if runs else "never",
            )
        log.info(
            "drkit scheduler serving /, /metrics, /healthz and /status on %s:%d%s",
            self.bind,
            self.port,
            " (bearer token required but on /healthz)" if self.token else "",
        )

    def _bind(self) -> None:
        self._server = bind_server(self.bind, self.port, self, self.token)
        self.port = self._server.server_address[1]

    def _apply(self, policies: list[Policy]) -> None:
        """Install a (re)loaded set of policies, keeping the state of unchanged jobs."""
        now = datetime.now(UTC)
        with self._state:
            new_policies = {p.name: p for p in policies}
            new_jobs: dict[tuple[str, str], JobState] = {}
            for policy in policies:
                for job, expr in policy.schedule.jobs().items():
                    old = self.jobs.get((policy.name, job))
                    period = cron_period(expr, policy.schedule.timezone)
                    if (
                        old is not None
                        and old.cron == expr
                        and old.timezone == policy.schedule.timezone
                    ):
                        new_jobs[(policy.name, job)] = old
                        continue
                    new_jobs[(policy.name, job)] = (
                        JobState(policy.name, job, expr, policy.schedule.timezone, period, now)
                        if old is None
                        else old.rescheduled(expr, policy.schedule.timezone, period, now)
                    )
            for env, lock in list(self.locks.items()):
                if env not in new_policies or not lock.same_target(new_policies[env]):
                    lock.release()
                    del self.locks[env]
                    self.standby.pop(env, None)
            for policy in policies:
                self.locks.setdefault(policy.name, EnvironmentLock(policy))
                self._env_run_locks.setdefault(policy.name, threading.Lock())
            self.policies = new_policies
            self.jobs = new_jobs
            for env in list(self.catalogs):
                if env not in new_policies:
                    del self.catalogs[env]

    def _supervise_streams(self) -> None:
        """One wal-receive supervisor per policy with wal_streaming: started for a new
        or changed policy, stopped for one that no longer streams."""
        with self._state:
            wanted = {
                env: policy
                for env, policy in self.policies.items()
                if policy.wal_streaming.enabled and env in self.locks
            }
            stale = [
                env
                for env, sup in self.streams.items()
                if env not in wanted or sup.policy != wanted[env] or sup.lock is not self.locks[env]
            ]
        for env in stale:
            self.streams.pop(env).stop()
        for env, policy in wanted.items():
            if env not in self.streams:
                supervisor = StreamSupervisor(policy, self.locks[env])
                self.streams[env] = supervisor
                supervisor.start()
                log.info("supervising wal-receive %s (slot drkit_%s)", env, env)

    def _schedule_jobs(self) -> None:
        from drkit.cron import cron_trigger

        scheduler = self._scheduler
        wanted = set()
        with self._state:
            states = list(self.jobs.values())
        for state in states:
            job_id = f"{state.env}:{state.job}"
            wanted.add(job_id)
            trigger = cron_trigger(state.cron, state.timezone)
            existing = scheduler.get_job(job_id)
            if existing is not None and str(existing.trigger) == str(trigger):
                continue
            scheduler.add_job(
                self.run_job,
                trigger,
                args=[state.env, state.job],
                id=job_id,
                name=job_id,
                replace_existing=True,
            )
        for job in scheduler.get_jobs():
            if job.id not in wanted:
                job.remove()

    # -- the catalog ------------------------------------------------------------------

    def refresh_catalog(self, env: str) -> None:
        from drkit.storage import Repository

        with self._state:
            policy = self.policies.get(env)
        if policy is None:
            return
        try:
            repo = Repository.for_policy(policy)
            try:
                with self._state:
                    previous = self.catalogs.get(env)
                snapshot = read_catalog(repo, policy, previous=previous)
            finally:
                repo.close()
        except Exception as exc:
            message = scrub(str(exc)) or type(exc).__name__
            log.error("reading the repository catalog of %s failed: %s", env, message)
            with self._state:
                previous = self.catalogs.get(env)
                snapshot = previous or CatalogSnapshot(env, datetime.now(UTC))
                snapshot.refreshed_at = datetime.now(UTC)
                snapshot.error = message
                self.catalogs[env] = snapshot
            return
        with self._state:
            self.catalogs[env] = snapshot
            # after a restart, a backup job's last success is the newest backup of its kind
            for (job_env, job), state in self.jobs.items():
                if job_env != env:
                    continue
                seeded = snapshot.newest_made(JOBS[job].makes if job in JOBS else None)
                if seeded and (state.last_success is None or seeded > state.last_success):
                    state.last_success = seeded

    # -- running jobs ---------------------------------------------------------------

    def run_job(self, env: str, job: str) -> None:
        """One scheduled run (APScheduler's callback); never raises."""
        with self._state:
            run_lock = self._env_run_locks.get(env)
            state = self.jobs.get((env, job))
            if run_lock is None or state is None:
                return
        with run_lock:
            with self._state:
                state = self.jobs.get((env, job))
                policy = self.policies.get(env)
                lock = self.locks.get(env)
            if state is None or policy is None or lock is None:
                return
            started = datetime.now(UTC)
            if self._stopping:
                log.info("%s/%s not started: the scheduler is shutting down", env, job)
                return
            try:
                holder = lock.acquire()
            except Exception as exc:
                self._finish(state, "failure", started, error_line(exc))
                return
            with self._state:
                self.standby[env] = not holder
            if not holder:
                log.info("%s/%s skipped: another scheduler holds the lock of %s", env, job, env)
                self._finish(state, "skipped", started, None)
                return
            log.info("job %s/%s started", env, job)
            with self._state:
                state.running_since = started
            try:
                dispatch(job, policy)
            except Exception as exc:  # never lost, never fatal
                if not isinstance(exc, DrkitError):
                    log.debug("job %s/%s traceback", env, job, exc_info=True)
                self._finish(state, "failure", started, error_line(exc))
            else:
                self._finish(state, "success", started, None)
            self._keep_lock(env, lock)
            self.refresh_catalog(env)

    def on_scheduler_event(self, event: Any) -> None:
        """Runs APScheduler did not start: later than the misfire grace, or still running."""
        from apscheduler.events import EVENT_JOB_MISSED

        env, _, job = str(event.job_id).partition(":")
        missed = event.code == EVENT_JOB_MISSED
        with self._state:
            state = self.jobs.get((env, job))
            if state is None:
                return
            status = "missed" if missed else "skipped"
            state.runs[status] = state.runs.get(status, 0) + 1
        when = getattr(event, "scheduled_run_time", None)
        if missed:
            log.warning(
                "%s/%s: the run due at %s was missed (more than %s late)",
                env,
                job,
                when,
                MISFIRE_GRACE,
            )
        else:
            log.warning("%s/%s: the run due at %s skipped, the last one still runs", env, job, when)

    def _keep_lock(self, env: str, lock: EnvironmentLock) -> None:
        """Take the lock again as soon as a job ends if the job ended its session: a
        scheduled sanitize replaces the very database the lock lives in, ending its
        sessions.  A standby that took the lock in between wins; this one stands by."""
        try:
            holder = lock.acquire()
        except Exception as exc:  # the next run reports it as that run's failure
            log.warning("scheduler lock of %s not re-taken after a job: %s", env, error_line(exc))
            return
        with self._state:
            self.standby[env] = not holder

    def _finish(self, state: JobState, status: str, started: datetime, error: str | None) -> None:
        finished = datetime.now(UTC)
        with self._state:
            state.running_since = None
            state.record(status, started, finished, error)
        took = (finished - started).total_seconds()
        if status == "failure":
            log.error("job %s/%s failed after %.1fs: %s", state.env, state.job, took, error)
        elif status == "success":
            log.info("job %s/%s succeeded in %.1fs", state.env, state.job, took)

    # -- signals and the main loop ----------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self, *_: Any) -> None:
        self._reload_requested = True
        self._wake.set()

    def install_signal_handlers(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info(
                "%s received: finishing the running job, then exiting", signal.Signals(signum).name
            )
            self.request_stop()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self) -> None:
        try:
            policies = self.load()
        except DrkitError as exc:
            log.error(
                "SIGHUP: policies not reloaded, keeping the running ones: %s", scrub(str(exc))
            )
            return
        self._apply(policies)
        self._schedule_jobs()
        self._supervise_streams()
        for env in list(self.policies):
            self.refresh_catalog(env)
        log.info(
            "SIGHUP: policies reloaded: %s",
            ", ".join(f"{s.env}/{s.job}" for s in self.jobs.values()) or "no jobs",
        )

    def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT; then let the running job finish and return."""
        last_refresh = datetime.now(UTC)
        while not self._stop.is_set():
            self._wake.wait(timeout=5)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            if datetime.now(UTC) - last_refresh >= CATALOG_REFRESH:
                last_refresh = datetime.now(UTC)
                for env in list(self.policies):
                    self.refresh_catalog(env)
        self.shutdown()

    def shutdown(self) -> None:
        self._stopping = True
        if self._scheduler is not None and self._scheduler.running:
            running = [s for s in self.jobs.values() if s.running_since]
            if running:
                log.info(
                    "waiting for %s to finish",
                    ", ".join(f"{s.env}/{s.job}" for s in running),
                )
            self._scheduler.shutdown(wait=True)
        for supervisor in self.streams.values():  # each stores what it received
            supervisor.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for lock in self.locks.values():
            lock.release()
        log.info("drkit scheduler stopped")

    # -- what the endpoints show --------------------------------------------------------

    def metrics_view(self) -> MetricsView:
        with self._state:
            return MetricsView(
                policies=list(self.policies.values()),
                jobs=[_copy_state(s) for s in self.jobs.values()],
                catalogs=dict(self.catalogs),
                locks={env: lock.held for env, lock in self.locks.items()},
                now=datetime.now(UTC),
            )

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: is the scheduler running (its thread alive, not shutting down)?"""
        scheduler = self._scheduler
        # APScheduler 3's BackgroundScheduler keeps its loop in ``_thread``: ``running``
        # alone stays true when that thread has died of an exception
        thread = getattr(scheduler, "_thread", None)
        alive = (
            scheduler is not None
            and scheduler.running
            and thread is not None
            and thread.is_alive()
            and not self._stopping
        )
        streams = [s.line() for s in self.streams.values()]
        # a supervisor thread that died is the daemon failing (a receiver restarting is not)
        alive = alive and all(line["alive"] for line in streams)
        with self._state:
            code, doc = liveness(alive, len(self.jobs), self.started_at)
        if streams:
            doc["wal_receive"] = streams
        return code, doc

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        """``/status``: each job's outcome and the problems."""
        with self._state:
            doc = job_status(
                self.jobs.values(), self.standby, self.started_at, now or datetime.now(UTC)
            )
        streams = [s.line() for s in self.streams.values()]
        if streams:
            doc["wal_receive"] = streams
            for line in streams:
                if line["state"] == "backoff":
                    doc["problems"].append(
                        f"{line['env']}/wal-receive: ended ({line['last_error']}), restarting "
                        f"at {line['next_start']} ({line['restarts']} restarts)"
                    )
            doc["ok"] = not doc["problems"]
            doc["status"] = "ok" if doc["ok"] else "attention"
        return doc

    def page(self) -> str:
        """``/``: the status page, from the same snapshot as the metrics and ``/status``."""
        with self._state:
            view = self.metrics_view()
            status = self.status(view.now)
        return render_page(view, status, self.charts)


def _copy_state(state: JobState) -> JobState:
    return dataclasses.replace(state, runs=dict(state.runs))


def run_daemon(
    envs: list[str] | None,
    policy_dir: Path | str | None,
    *,
    bind: str = DEFAULT_BIND,
    port: int = DEFAULT_PORT,
    token: bytes | None = None,
) -> None:
    """The whole life of ``drkit schedule run``: returns after a clean SIGTERM."""
    daemon = SchedulerDaemon(envs, policy_dir, bind=bind, port=port, token=token)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.run_forever()
