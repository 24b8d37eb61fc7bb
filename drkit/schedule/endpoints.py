"""The scheduler's HTTP port: ``/``, ``/metrics``, ``/healthz`` and ``/status``.

``/`` is the read-only status page (:mod:`drkit.schedule.page`).  The port listens on
127.0.0.1 unless ``--bind`` says otherwise (the image binds 0.0.0.0 on purpose).  With
``--token-file`` every path but ``/healthz`` answers 401 unless the request carries
``Authorization: Bearer <the file's token>`` (compared in constant time); the liveness
probe of a container runtime carries no token and learns nothing but "alive".

``/metrics`` is prometheus_client's own WSGI app (``make_wsgi_app``) over the daemon's
registry (:mod:`drkit.schedule.metrics`, whose collector yields the metric table): the
text format, or OpenMetrics when the scraper asks for it, gzip when it accepts it.  The
port is one WSGI app (:func:`monitoring_app`) served by the standard library's
``wsgiref`` server, one thread per request; it answers GET only.

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
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from drkit.errors import OperationError, UsageError
from drkit.schedule.jobs import JobState, scrub
from drkit.schedule.timing import MISFIRE_GRACE, next_runs

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
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


class MonitoringServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


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


#: on every answer: nothing cached, no type sniffing, no script or remote resource
_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
]


def _authorized(header: str, token: bytes | None) -> bool:
    """Whether an ``Authorization`` header carries the token (constant-time compare)."""
    if token is None:
        return True
    scheme, _, offered = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token)


def monitoring_app(monitored: Monitored, token: bytes | None = None) -> WSGIApplication:
    """The port as one WSGI app: the token check in front of every path but the liveness
    probe, then ``/metrics`` (prometheus_client's app), ``/healthz``, ``/status``, ``/``."""
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(monitored.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")

        def reply(
            status: str, content_type: str, body: bytes, *extra: tuple[str, str]
        ) -> list[bytes]:
            headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
            start_response(status, [*headers, *_HEADERS, *extra])
            return [body]

        def with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, *_HEADERS], exc_info)

        if path not in OPEN_PATHS and not _authorized(
            str(environ.get("HTTP_AUTHORIZATION", "")), token
        ):
            return reply(
                "401 Unauthorized",
                "text/plain",
                b"unauthorized\n",
                ("WWW-Authenticate", 'Bearer realm="drkit"'),
            )
        if environ.get("REQUEST_METHOD") != "GET":
            return reply("405 Method Not Allowed", "text/plain", b"GET only\n", ("Allow", "GET"))
        try:
            if path == "/metrics":
                exposition: Iterable[bytes] = metrics(environ, with_headers)
                return exposition
            if path in ("/healthz", "/health"):
                code, doc = monitored.health()
                status = "200 OK" if code == 200 else "503 Service Unavailable"
                return reply(status, "application/json", json.dumps(doc, indent=2).encode() + b"\n")
            if path == "/status":
                body = json.dumps(monitored.status(), indent=2).encode() + b"\n"
                return reply("200 OK", "application/json", body)
            if path == "/":
                return reply("200 OK", "text/html; charset=utf-8", monitored.page().encode())
            return reply("404 Not Found", "text/plain", b"not found\n")
        except Exception as exc:
            log.error("serving %s failed: %s", path, scrub(str(exc)))
            return reply("500 Internal Server Error", "text/plain", b"internal error\n")

    return app


def bind_server(
    bind: str, port: int, monitored: Monitored, token: bytes | None = None
) -> MonitoringServer:
    """The listening server (not yet serving); OperationError when the port is taken.
    ``token``: the bearer token every path but ``/healthz`` requires (None: none)."""
    try:
        server = MonitoringServer((bind, port), _QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OperationError(
                f"port {port} on {bind} is already in use: stop the other "
                f"process or choose another with --port"
            ) from None
        raise OperationError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    server.set_app(monitoring_app(monitored, token))
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
