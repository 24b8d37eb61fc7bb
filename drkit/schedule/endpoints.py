"""The scheduler's HTTP port: ``/``, ``/metrics``, ``/healthz`` and ``/status``.

``/`` is the read-only status page (:mod:`drkit.schedule.page`).  The port listens on
127.0.0.1 unless ``--bind`` says otherwise (the image binds 0.0.0.0 on purpose).  With
``--token-file`` every path but ``/healthz`` answers 401 unless the request carries
``Authorization: Bearer <the file's token>`` (compared in constant time); the liveness
probe of a container runtime carries no token and learns nothing but "alive".

``/metrics`` is the Prometheus text of the daemon's registry (:mod:`drkit.schedule.metrics`).

``/healthz`` (and ``/health``) answers one question, the one a container runtime or
Kubernetes asks: are the daemon and its scheduler alive?  200 while the scheduler runs,
503 once it has stopped (or before it started).  It never looks at job outcomes: a
failed drill must not mark the container unhealthy for a week and get it restarted,
which would not fix the drill.

``/status`` is the jobs' verdict, as JSON and always 200 (:func:`job_status`): each job's
last run, next run and status, and the problems — a job whose last run failed, or that
is overdue (its last success — or, if it never succeeded, the daemon's start — older
than its cron period plus the misfire grace, so jobs that never run show up).  A job
skipped because another replica holds the environment's lock shows as ``standby``.
Alerting on outcomes is the metrics' job (``drkit_job_last_run_success`` and the rest).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from drkit.errors import OperationError, UsageError
from drkit.schedule.jobs import JobState, scrub
from drkit.schedule.timing import MISFIRE_GRACE, next_runs

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

DEFAULT_PORT = 9187
#: only this machine, unless --bind says otherwise (a container binds 0.0.0.0 itself)
DEFAULT_BIND = "127.0.0.1"
#: the liveness probe, answered without a token
OPEN_PATHS = frozenset({"/healthz", "/health"})


class Monitored(Protocol):
    """What the endpoints show: the metrics registry, liveness and the jobs' status."""

    registry: CollectorRegistry

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def page(self) -> str: ...


class MonitoringServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    monitored: Monitored
    token: bytes | None = None


def read_token(path: str) -> bytes:
    """The bearer token in ``path`` (its first line); UsageError (exit 2) when the file
    cannot be read or holds no token, so a daemon never starts open by mistake."""
    try:
        with open(path, "rb") as handle:
            token = handle.read().strip().split(b"\n", 1)[0].strip()
    except OSError as exc:
        raise UsageError(
            f"--token-file {path}: cannot be read ({exc.strerror or exc}): "
            f"point it at a readable file holding the token"
        ) from None
    if not token:
        raise UsageError(f"--token-file {path}: the file is empty: write the token into it")
    return token


class _Handler(BaseHTTPRequestHandler):
    server: MonitoringServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in OPEN_PATHS and not self._authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="drkit"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "13")
            self.end_headers()
            self.wfile.write(b"unauthorized\n")
            return
        try:
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                body = generate_latest(self.server.monitored.registry)
                self._send(200, CONTENT_TYPE_LATEST, body)
            elif path in ("/healthz", "/health"):
                code, doc = self.server.monitored.health()
                self._send(code, "application/json", json.dumps(doc, indent=2).encode() + b"\n")
            elif path == "/status":
                doc = self.server.monitored.status()
                self._send(200, "application/json", json.dumps(doc, indent=2).encode() + b"\n")
            elif path == "/":
                body = self.server.monitored.page().encode()
                self._send(200, "text/html; charset=utf-8", body)
            else:
                self._send(404, "text/plain", b"not found\n")
        except Exception as exc:
            log.error("serving %s failed: %s", path, scrub(str(exc)))
            self._send(500, "text/plain", b"internal error\n")

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        scheme, _, offered = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def bind_server(
    bind: str, port: int, monitored: Monitored, token: bytes | None = None
) -> MonitoringServer:
    """The listening server (not yet serving); OperationError when the port is taken.
    ``token``: the bearer token every path but ``/healthz`` requires (None: none)."""
    try:
        server = MonitoringServer((bind, port), _Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OperationError(
                f"port {port} on {bind} is already in use: stop the other "
                f"process or choose another with --port"
            ) from None
        raise OperationError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    server.monitored = monitored
    server.token = token
    return server


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def liveness(scheduler_alive: bool, jobs: int, started_at: datetime) -> tuple[int, dict[str, Any]]:
    """``/healthz``: 200 while the scheduler runs, 503 when not; no job outcome in it."""
    doc = {
        "status": "alive" if scheduler_alive else "down",
        "scheduler": "running" if scheduler_alive else "stopped",
        "started_at": iso(started_at),
        "jobs_scheduled": jobs,
        "jobs": "/status",
    }
    return (200 if scheduler_alive else 503), doc


def job_status(
    states: Iterable[JobState], standby: dict[str, bool], started_at: datetime, now: datetime
) -> dict[str, Any]:
    """``/status``: each job's status and the problems (``ok`` false when there are)."""
    problems: list[str] = []
    jobs: list[dict[str, Any]] = []
    for state in sorted(states, key=lambda s: (s.env, s.job)):
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
                f"last success {iso(state.last_success)}"
                if state.last_success
                else f"never succeeded since {iso(state.baseline)}"
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
                "last_run": iso(state.last_started),
                "last_status": state.last_status,
                "last_error": state.last_error,
                "last_success": iso(state.last_success),
                "overdue_after": iso(deadline),
                "next_run": iso(upcoming[0]) if upcoming else None,
                "runs": dict(state.runs),
            }
        )
    if not jobs:
        problems.append("no job is scheduled: add schedule entries to the policies")
    return {
        "ok": not problems,
        "status": "ok" if not problems else "attention",
        "problems": problems,
        "started_at": iso(started_at),
        "jobs": jobs,
    }
