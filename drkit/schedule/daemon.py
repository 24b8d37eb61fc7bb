"""``drkit schedule run``: the scheduler daemon (DESIGN.md §7).

APScheduler 3 runs one cron job per ``schedule:`` entry of each policy, in the policy's
timezone, with ``coalesce`` (a backlog of missed runs becomes one run), one instance
per job, and a misfire grace of an hour (APScheduler's default of one second would
silently drop a run that starts a little late, e.g. after a container restart).  The
scheduler's own clock is UTC: given local times, APScheduler 3 repeats the ambiguous
hour of an autumn DST change.

Jobs of one environment run one at a time (a prune waits for the backup before it).
A failing job is logged with its error, counted in ``drkit_job_runs_total``, shown by
``/healthz``, and never stops the daemon.  SIGTERM (and SIGINT) stop the scheduling of
new runs, let the running job finish, then the daemon exits 0; SIGHUP reloads the
policies (a policy that no longer validates is reported and the old one kept).

The lock: a PostgreSQL session advisory lock on the environment's database
---------------------------------------------------------------------------
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

Monitoring: ``/metrics`` (Prometheus text, see :mod:`drkit.schedule.metrics`) and
``/healthz`` (200 with a JSON body when every job's last run succeeded and none is
overdue; 503 naming the jobs otherwise; a job is overdue when its last success — or,
if it never succeeded, the daemon's start — is older than its cron period plus the
misfire grace, so a daemon whose jobs never run turns unhealthy) share one port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import signal
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from drkit.config import Policy, load_policies
from drkit.errors import (
    DatabaseError,
    DrkitError,
    OperationError,
    PolicyError,
)
from drkit.redact import mask_url
from drkit.schedule.metrics import (
    JOB_KIND,
    CatalogSnapshot,
    DrkitCollector,
    JobState,
    MetricsView,
    cron_period,
    next_runs,
    read_catalog,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

MISFIRE_GRACE = timedelta(hours=1)
CATALOG_REFRESH = timedelta(seconds=60)
LOCK_CLASS_ID = 0x64726B74  # 'drkt'
DEFAULT_PORT = 9187


def _logical_backup(policy: Policy) -> Any:
    from drkit.backup.logical import backup_logical  # the size picks the dump format

    return backup_logical(policy)


def _physical_backup(policy: Policy) -> Any:
    from drkit.backup.physical import run_physical_backup

    return run_physical_backup(policy)


def _physical_incremental_backup(policy: Policy) -> Any:
    from drkit.backup.physical import run_physical_backup

    return run_physical_backup(policy, incremental=True)


def _prune(policy: Policy) -> Any:
    from drkit.backup.prune import prune_policy

    return prune_policy(policy)


def _drill(policy: Policy) -> Any:
    from drkit.drill import run_drill

    return run_drill(policy)


#: job name (a policy's schedule entry) -> what runs it; imported when the job runs
JOBS: dict[str, Callable[[Policy], Any]] = {
    "logical_backup": _logical_backup,
    "physical_backup": _physical_backup,
    "physical_incremental_backup": _physical_incremental_backup,
    "prune": _prune,
    "drill": _drill,
}


def scrub(text: str) -> str:
    """The first line of a message, secrets masked (:func:`drkit.redact.mask_url`)."""
    stripped = text.strip()
    return mask_url(stripped.splitlines()[0] if stripped else "")


def wall_minute(timezone: str) -> datetime:
    """The current local wall-clock minute in ``timezone`` (naive)."""
    return datetime.now(ZoneInfo(timezone)).replace(second=0, microsecond=0, tzinfo=None)


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
        import psycopg

        from drkit.pg.connect import connect, first_line

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


def dispatch(job: str, policy: Policy) -> Any:
    """Run one job for one policy; a drill that does not PASS is a failed job."""
    result = JOBS[job](policy)
    verdict = getattr(result, "verdict", None)
    if job == "drill" and verdict is not None and str(verdict).upper() != "PASS":
        raise DrkitError(f"drill verdict {verdict}")
    return result


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    scheduler: SchedulerDaemon


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                body = generate_latest(self.server.scheduler.registry)
                self._send(200, CONTENT_TYPE_LATEST, body)
            elif path in ("/healthz", "/health"):
                code, doc = self.server.scheduler.health()
                self._send(code, "application/json", json.dumps(doc, indent=2).encode() + b"\n")
            elif path == "/":
                self._send(200, "text/plain", b"drkit scheduler: /metrics /healthz\n")
            else:
                self._send(404, "text/plain", b"not found\n")
        except Exception as exc:
            log.error("serving %s failed: %s", path, scrub(str(exc)))
            self._send(500, "text/plain", b"internal error\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class SchedulerDaemon:
    """The daemon: policies, APScheduler, locks, job states, catalogs, HTTP endpoints."""

    def __init__(
        self,
        envs: list[str] | None = None,
        policy_dir: Path | str | None = None,
        *,
        bind: str = "0.0.0.0",  # noqa: S104 - a container's service port
        port: int = DEFAULT_PORT,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.envs = list(envs or [])
        self.policy_dir = policy_dir
        self.bind = bind
        self.port = port
        self.started_at = datetime.now(UTC)
        self.policies: dict[str, Policy] = {}
        self.jobs: dict[tuple[str, str], JobState] = {}
        self.catalogs: dict[str, CatalogSnapshot] = {}
        self.locks: dict[str, EnvironmentLock] = {}
        self.standby: dict[str, bool] = {}
        self._env_run_locks: dict[str, threading.Lock] = {}
        self._state = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._stopping = False
        self._server: _Server | None = None
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
        log.info("drkit scheduler serving /metrics and /healthz on %s:%d", self.bind, self.port)

    def _bind(self) -> None:
        try:
            server = _Server((self.bind, self.port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OperationError(
                    f"port {self.port} on {self.bind} is already in use: stop the other "
                    f"process or choose another with --port"
                ) from None
            raise OperationError(
                f"cannot listen on {self.bind}:{self.port}: {exc.strerror or exc}"
            ) from None
        server.scheduler = self
        self._server = server
        self.port = server.server_address[1]

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
                    state = JobState(policy.name, job, expr, policy.schedule.timezone, period, now)
                    if old is not None:  # new schedule, same job: keep its history
                        state.runs = old.runs
                        state.last_started, state.last_finished = (
                            old.last_started,
                            old.last_finished,
                        )
                        state.last_status, state.last_error = old.last_status, old.last_error
                        state.last_success, state.last_duration = (
                            old.last_success,
                            old.last_duration,
                        )
                    new_jobs[(policy.name, job)] = state
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

    def _schedule_jobs(self) -> None:
        from drkit.schedule.cron import cron_trigger

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
        from drkit.storage.repository import Repository

        with self._state:
            policy = self.policies.get(env)
        if policy is None:
            return
        try:
            repo = Repository.for_policy(policy)
            try:
                snapshot = read_catalog(repo, policy)
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
                kind = JOB_KIND.get(job)
                seeded: datetime | None = None
                if kind and kind in snapshot.newest:
                    seeded = snapshot.newest[kind].finished_at
                elif job == "drill" and snapshot.drill and snapshot.drill.passed:
                    seeded = snapshot.drill.finished_at
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
            # APScheduler 3 fires a job twice when its time falls in the hour an autumn
            # DST change repeats (02:00 CEST, then 02:00 CET): same wall clock, skip it
            wall = wall_minute(state.timezone)
            repeated = state.last_wall_minute == wall
            state.last_wall_minute = wall
        if repeated:
            log.info("%s/%s not run again: %s repeats after a DST change", env, job, wall)
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
            except DrkitError as exc:
                self._finish(state, "failure", started, scrub(str(exc)))
                return
            except Exception as exc:
                self._finish(state, "failure", started, f"{type(exc).__name__}: {scrub(str(exc))}")
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
            except DrkitError as exc:
                self._finish(state, "failure", started, scrub(str(exc)))
            except Exception as exc:  # never lost, never fatal
                log.debug("job %s/%s traceback", env, job, exc_info=True)
                self._finish(state, "failure", started, f"{type(exc).__name__}: {scrub(str(exc))}")
            else:
                self._finish(state, "success", started, None)
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

    def health(self, now: datetime | None = None) -> tuple[int, dict[str, Any]]:
        now = now or datetime.now(UTC)
        problems: list[str] = []
        jobs: list[dict[str, Any]] = []
        with self._state:
            states = sorted(self.jobs.values(), key=lambda s: (s.env, s.job))
            standby = dict(self.standby)
            for state in states:
                name = f"{state.env}/{state.job}"
                reference = state.last_success or state.baseline
                deadline = reference + state.period + MISFIRE_GRACE
                on_standby = standby.get(state.env, False) and state.last_status == "skipped"
                status = "ok"
                if on_standby:
                    status = "standby"
                elif state.last_status == "failure":
                    status = "failing"
                    problems.append(f"{name}: last run failed: {state.last_error}")
                elif now > deadline:
                    status = "overdue"
                    since = (
                        f"last success {_iso(state.last_success)}"
                        if state.last_success
                        else f"never succeeded since {_iso(state.baseline)}"
                    )
                    problems.append(f"{name}: overdue ({since}, every {state.period})")
                upcoming = next_runs(state.cron, state.timezone, 1, now)
                jobs.append(
                    {
                        "env": state.env,
                        "job": state.job,
                        "cron": state.cron,
                        "timezone": state.timezone,
                        "status": status,
                        "running": state.running_since is not None,
                        "last_run": _iso(state.last_started),
                        "last_status": state.last_status,
                        "last_error": state.last_error,
                        "last_success": _iso(state.last_success),
                        "overdue_after": _iso(deadline),
                        "next_run": _iso(upcoming[0]) if upcoming else None,
                        "runs": dict(state.runs),
                    }
                )
        if not jobs:
            problems.append("no job is scheduled: add schedule entries to the policies")
        doc = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "started_at": _iso(self.started_at),
            "jobs": jobs,
        }
        return (200 if not problems else 503), doc


def _copy_state(state: JobState) -> JobState:
    return dataclasses.replace(state, runs=dict(state.runs))


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def run_daemon(
    envs: list[str] | None,
    policy_dir: Path | str | None,
    *,
    bind: str = "0.0.0.0",  # noqa: S104
    port: int = DEFAULT_PORT,
) -> None:
    """The whole life of ``drkit schedule run``: returns after a clean SIGTERM."""
    daemon = SchedulerDaemon(envs, policy_dir, bind=bind, port=port)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.run_forever()


def checked_policies(envs: list[str] | None, policy_dir: Path | str | None) -> list[Policy]:
    """The policies, each schedule entry checked the way the daemon will read it."""
    from drkit.schedule.cron import cron_trigger

    policies = load_policies(envs or None, policy_dir)
    for policy in policies:
        for job, expr in policy.schedule.jobs().items():
            try:
                cron_trigger(expr, policy.schedule.timezone)
            except (ValueError, TypeError) as exc:
                raise PolicyError(f"{policy.source}: schedule.{job}: {exc}") from None
    return policies


def show_schedule(
    envs: list[str] | None, policy_dir: Path | str | None, count: int = 3
) -> list[dict[str, Any]]:
    """Each job of each policy with its next ``count`` run times (``schedule show``)."""
    rows = []
    for policy in checked_policies(envs, policy_dir):
        for job, expr in policy.schedule.jobs().items():
            runs = next_runs(expr, policy.schedule.timezone, count)
            rows.append(
                {
                    "env": policy.name,
                    "job": job,
                    "cron": expr,
                    "timezone": policy.schedule.timezone,
                    "next_runs": [r.isoformat() for r in runs],
                    "period_seconds": int(
                        cron_period(expr, policy.schedule.timezone).total_seconds()
                    ),
                }
            )
    return rows
