"""A small fault-injecting HTTP proxy between drkit and the S3 server (tests only).

drkit's policy points ``endpoint_url`` at the proxy; the proxy forwards every request to
the real S3 server (moto or MinIO) unchanged, except for the requests a :class:`Fault`
rule matches, which get instead:

* ``500`` — ``InternalError``; ``503`` — ``SlowDown`` (S3's throttling answer);
* ``reset`` — the TCP connection is reset (RST) after the request was read;
* ``stall`` — the request is read and never answered (until the proxy stops);
* ``truncate`` — (GET) the real response's headers, then half its body, then a reset;
* ``corrupt`` — (GET) the real response with one byte of its body changed (stored bytes
  that are not what was sent, as a disk or a store that rots them returns them).

Rules match on the HTTP method and a substring of the path or query (``?uploadId``,
``partNumber``, ``manifest.json``...) and fire ``times`` times (``None``: forever).
Every request is recorded in :attr:`FaultProxy.log` as ``(method, path, outcome)``.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
)
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


@dataclass
class Fault:
    kind: str  # 500 | 503 | reset | stall | truncate | corrupt
    method: str | None = None  # GET, PUT, POST, HEAD, DELETE; None: any
    match: str = ""  # substring of path+query
    times: int | None = 1  # None: every matching request
    fired: int = 0

    def wants(self, method: str, target: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.match not in target:
            return False
        return self.times is None or self.fired < self.times


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _serve(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def set_faults(self, *faults: Fault) -> None:
        with self._lock:
            self.faults = list(faults)

    def outcomes(self, kind: str) -> int:
        return sum(1 for _m, _p, outcome in self.log if outcome == kind)

    # -- one request ----------------------------------------------------------------

    def _pick(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.wants(method, target):
                    fault.fired += 1
                    return fault
        return None

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        body = _read_body(req)
        method, target = req.command, req.path
        fault = self._pick(method, target)
        outcome = fault.kind if fault else "forwarded"
        with self._lock:
            self.log.append((method, target, outcome))
        if fault is None or fault.kind in ("truncate", "corrupt"):
            kind = fault.kind if fault is not None else ""
            self._forward(req, body, truncate=kind == "truncate", corrupt=kind == "corrupt")
        elif fault.kind in ("500", "503"):
            code, message = (
                ("InternalError", "We encountered an internal error. Please try again.")
                if fault.kind == "500"
                else ("SlowDown", "Please reduce your request rate.")
            )
            data = _ERROR_BODY.format(code=code, message=message).encode()
            req.send_response(int(fault.kind))
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            if method != "HEAD":
                req.wfile.write(data)
        elif fault.kind == "reset":
            _reset(req)
        elif fault.kind == "stall":
            self._stop.wait(600)
            _reset(req)
        else:
            raise ValueError(f"unknown fault {fault.kind}")

    def _forward(
        self, req: BaseHTTPRequestHandler, body: bytes, *, truncate: bool, corrupt: bool = False
    ) -> None:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_HEADERS}
            if body or req.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(req.command, req.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if corrupt and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
        finally:
            conn.close()
        req.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() in _HOP_HEADERS or key.lower() in ("content-length", "date", "server"):
                continue
            req.send_header(key, value)
        length = len(data)
        if req.command == "HEAD":
            length = int(response.getheader("Content-Length") or 0)
        req.send_header("Content-Length", str(length))
        req.end_headers()
        if req.command == "HEAD":
            return
        if truncate and len(data) > 1:
            req.wfile.write(data[: len(data) // 2])
            req.wfile.flush()
            _reset(req)
            return
        req.wfile.write(data)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # resets and stalls are the point; no tracebacks on the test's stderr


def _read_body(req: BaseHTTPRequestHandler) -> bytes:
    if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while req.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            parts.append(req.rfile.read(size))
            req.rfile.readline()
        return b"".join(parts)
    length = int(req.headers.get("Content-Length") or 0)
    return req.rfile.read(length) if length else b""


def _reset(req: BaseHTTPRequestHandler) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a dying middlebox would."""
    sock: socket.socket = req.connection
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    req.close_connection = True
    with contextlib.suppress(OSError):
        sock.close()
