"""A TLS front for moto: pgBackRest talks to S3 over HTTPS only, moto serves plain HTTP.

    python -m benchmarks.tls LISTEN_PORT TARGET_PORT CERT KEY

A small asyncio proxy, run in its own process (its CPU is then measured apart from the
benchmark's and from moto's): it accepts TLS on 127.0.0.1:LISTEN_PORT with ``CERT``/
``KEY`` and relays the plain bytes to 127.0.0.1:TARGET_PORT.  :func:`tls_proxy` makes a
self-signed certificate for 127.0.0.1 at run time (``cryptography``) and starts it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 18


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 and localhost: (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "proxy.crt", directory / "proxy.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.chmod(0o644)
    return cert_path, key_path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _serve(listen: int, target: int, context: ssl.SSLContext) -> None:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", listen, ssl=context, backlog=128)
    async with server:
        await server.serve_forever()


def main() -> None:
    listen, target, cert, key = sys.argv[1:5]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    asyncio.run(_serve(int(listen), int(target), context))


class TlsProxy:
    """The running proxy: its ``endpoint`` (https://127.0.0.1:PORT), ``cert`` and ``pid``."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, cert: Path) -> None:
        self.proc = proc
        self.port = port
        self.cert = cert
        self.endpoint = f"https://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def tls_proxy(directory: Path, target_port: int) -> Iterator[TlsProxy]:
    """A TLS proxy to 127.0.0.1:``target_port``, with a certificate made in ``directory``."""
    from drkit.pg import free_port

    cert, key = self_signed(directory)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.tls", str(port), str(target_port), str(cert), str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the TLS proxy on port {port} did not start") from None
                time.sleep(0.05)
        yield TlsProxy(proc, port, cert)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
