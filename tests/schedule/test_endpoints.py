"""The scheduler's port in-process: ``/metrics`` is prometheus_client's own WSGI app
(content negotiation, compression), behind the same bearer token as every path but
``/healthz``; the metric table's collector is what it exposes."""

from __future__ import annotations

import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from drkit.schedule.endpoints import MonitoringServer, bind_server

TOKEN = b"scrape-token-9d2e"


class Fixed:
    """What the endpoints show, fixed: one gauge, alive, an empty status and page."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        Gauge("drkit_probe_seconds", "a probe", ["env"], registry=self.registry).labels(
            env="prod"
        ).set(1.5)

    def health(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "alive"}

    def status(self) -> dict[str, Any]:
        return {"ok": True}

    def page(self) -> str:
        return "<html><body>drkit</body></html>"


@pytest.fixture
def server() -> Iterator[MonitoringServer]:
    served = bind_server("127.0.0.1", 0, Fixed(), TOKEN)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.shutdown()
        served.server_close()


def get(
    server: MonitoringServer, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    port = server.server_address[1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_metrics_negotiate_like_prometheus_client_behind_the_token(
    server: MonitoringServer,
) -> None:
    bearer = "Bearer " + TOKEN.decode()
    # no token, or a wrong one: 401 on /metrics as on the page; /healthz stays open
    assert get(server, "/metrics")[0] == 401
    assert get(server, "/metrics", Authorization="Bearer nope")[0] == 401
    assert get(server, "/healthz")[0] == 200
    # the text format by default
    code, headers, body = get(server, "/metrics", Authorization=bearer)
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=")
    assert b'drkit_probe_seconds{env="prod"} 1.5' in body
    # OpenMetrics when the scraper asks for it, as Prometheus does, with its end marker
    code, headers, body = get(
        server,
        "/metrics",
        Authorization=bearer,
        Accept="application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
    )
    assert code == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    # compressed when the scraper accepts gzip
    code, headers, body = get(server, "/metrics", Authorization=bearer, Accept_Encoding="gzip")
    assert code == 200 and headers.get("Content-Encoding") == "gzip"
    assert b"drkit_probe_seconds" in gzip.decompress(body)
    # the other paths as before, and nothing but reads
    code, headers, body = get(server, "/", Authorization=bearer)
    assert code == 200 and b"drkit" in body and headers["Cache-Control"] == "no-store"
    assert get(server, "/nope", Authorization=bearer)[0] == 404
    assert get(server, "/metrics", "POST", Authorization=bearer)[0] == 405
