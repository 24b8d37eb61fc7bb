"""Storage faults: drkit talks to S3 through a proxy that fails, resets and stalls.

The proxy (:mod:`tests.reliability.faultproxy`) sits between drkit and the real S3
server; what landed is always checked on the server directly, never through drkit.
Transient faults are retried (botocore standard mode: exponential backoff with jitter,
``DRKIT_S3_MAX_ATTEMPTS`` attempts, connect/read timeouts on every call); persistent
ones end in exit 1 with one clear line, in bounded time (every ``run_drkit`` has a
timeout: a hang fails the test), and never with a manifest or an object that did not
arrive whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DrkitRunner, PolicyWriter, RepoTarget, S3Server
from tests.reliability.faultproxy import Fault, FaultProxy
from tests.reliability.helpers import RepoView

MiB = 1024 * 1024
FAST_FAIL = {
    "DRKIT_S3_MAX_ATTEMPTS": "3",
    "DRKIT_S3_CONNECT_TIMEOUT": "2",
    "DRKIT_S3_READ_TIMEOUT": "3",
    "DRKIT_S3_UPLOAD_READ_TIMEOUT": "3",
}
SEGMENT = "000000010000000000000007"


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_server.endpoint).start()
    yield p
    p.stop()


@pytest.fixture
def proxied(s3_server: S3Server, proxy: FaultProxy) -> tuple[RepoTarget, RepoView]:
    """A fresh bucket; drkit reaches it through the proxy, the test directly."""
    bucket = s3_server.create_bucket()
    target = RepoTarget("s3", f"s3://{bucket}/drkit", endpoint_url=proxy.endpoint, bucket=bucket)
    return target, RepoView(target, s3_server)


#: a retried S3 call logs one warning record per new attempt (drkit.storage.s3)
RETRY_RE = re.compile(r" WARNING drkit\.storage\.s3: S3 (\w+) (\S+): attempt (\d+) of (\d+) ")


def one_clear_line(stderr: str) -> str:
    """The one error line, besides the warnings of retried calls."""
    lines = [line for line in stderr.splitlines() if line.strip() and not RETRY_RE.search(line)]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def retries(stderr: str) -> list[tuple[str, str, int, int]]:
    """(operation, object path, attempt, of) of each retry line."""
    return [
        (m[1], m[2], int(m[3]), int(m[4])) for m in map(RETRY_RE.search, stderr.splitlines()) if m
    ]


def wal_file(tmp_path: Path, size: int = 16 * MiB) -> Path:
    path = tmp_path / "pg_wal" / SEGMENT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_transient_faults_are_retried_and_the_backup_is_whole(
    sample_db: tuple[str, str],
    proxied: tuple[RepoTarget, RepoView],
    proxy: FaultProxy,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
) -> None:
    _name, url = sample_db
    target, view = proxied
    policy_dir = make_policy("prod", url, target)
    # each rule fires once, in order: the first PUT gets 503, the next 500, the next a reset;
    # the fourth attempt of the dump's PUT goes through
    proxy.set_faults(Fault("503", "PUT"), Fault("500", "PUT"), Fault("reset", "PUT"))
    env = {**FAST_FAIL, "DRKIT_S3_MAX_ATTEMPTS": "4"}
    made = run_drkit("backup", "prod", "--json", policy_dir=policy_dir, env=env, timeout=120)
    assert made.code == 0, made.stderr
    assert (proxy.outcomes("503"), proxy.outcomes("500"), proxy.outcomes("reset")) == (1, 1, 1)
    complete, orphans = view.check_backups()  # sizes and sha256 against the server's bytes
    assert complete == {made.json()["id"]} and not orphans

    proxy.set_faults(Fault("503", "GET"), Fault("reset", "GET"), Fault("500", "HEAD"))
    verified = run_drkit("verify", "prod", "--all", policy_dir=policy_dir, env=env)
    assert verified.code == 0, verified.stderr
    assert proxy.outcomes("reset") == 2


@pytest.mark.parametrize("kind", ["503", "500", "reset"])
def test_persistent_upload_errors_fail_clearly_and_record_nothing(
    kind: str,
    sample_db: tuple[str, str],
    proxied: tuple[RepoTarget, RepoView],
    proxy: FaultProxy,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
) -> None:
    _name, url = sample_db
    target, view = proxied
    policy_dir = make_policy("prod", url, target)
    proxy.set_faults(Fault(kind, "PUT", times=None))
    result = run_drkit("backup", "prod", policy_dir=policy_dir, env=FAST_FAIL, timeout=120)
    assert result.code == 1, result.stderr
    line = one_clear_line(result.stderr)
    assert "prod/backups/" in line and target.bucket in line  # which object, where
    assert view.objects() == {} and view.pending_uploads() == 0
    # bounded: each object was tried exactly DRKIT_S3_MAX_ATTEMPTS times, not forever
    assert proxy.outcomes(kind) == int(FAST_FAIL["DRKIT_S3_MAX_ATTEMPTS"])
    # and once S3 is healthy again the same command works
    proxy.set_faults()
    assert run_drkit("backup", "prod", policy_dir=policy_dir, env=FAST_FAIL).code == 0


def test_a_stalled_server_times_out_instead_of_hanging(
    sample_db: tuple[str, str],
    proxied: tuple[RepoTarget, RepoView],
    proxy: FaultProxy,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    _name, url = sample_db
    target, view = proxied
    policy_dir = make_policy("prod", url, target)
    proxy.set_faults(Fault("stall", "PUT", times=None))
    env = {
        **FAST_FAIL,
        "DRKIT_S3_MAX_ATTEMPTS": "2",
        "DRKIT_S3_READ_TIMEOUT": "2",
        "DRKIT_S3_UPLOAD_READ_TIMEOUT": "2",
    }
    result = run_drkit("backup", "prod", policy_dir=policy_dir, env=env, timeout=120)
    assert result.code == 1, result.stderr
    assert "not answering" in one_clear_line(result.stderr)
    assert view.objects() == {}

    # archive_command: a stalled store must fail the call, never hang PostgreSQL's archiver
    wal = wal_file(tmp_path, MiB)  # the smallest segment size PostgreSQL allows
    pushed = run_drkit("wal-push", "prod", str(wal), policy_dir=policy_dir, env=env, timeout=120)
    assert pushed.code == 1, pushed.stderr
    assert view.objects() == {}


def test_a_wal_upload_that_never_arrives_leaves_no_object(
    proxied: tuple[RepoTarget, RepoView],
    proxy: FaultProxy,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    """wal-push stores a segment with one conditional PUT (never-replace): a PUT whose
    connection is reset every time leaves nothing visible, a transient 503 is retried."""
    target, view = proxied
    repository = {"compression": {"algorithm": "none"}}
    policy_dir = make_policy("prod", "postgresql:///unused", target, repository=repository)
    env = {**FAST_FAIL, "DRKIT_WAL_PUSH_BATCH": "0"}
    wal = wal_file(tmp_path)  # 16 MiB

    proxy.set_faults(Fault("reset", "PUT", match="/wal/", times=None))
    failed = run_drkit("wal-push", "prod", str(wal), policy_dir=policy_dir, env=env, timeout=180)
    assert failed.code == 1, failed.stderr
    assert SEGMENT in one_clear_line(failed.stderr)
    assert view.objects() == {}, "a partial WAL segment became visible"
    assert view.pending_uploads() == 0

    # one transient failure: retried, and the object is the file, byte for byte
    proxy.set_faults(Fault("503", "PUT", match="/wal/"))
    pushed = run_drkit("wal-push", "prod", str(wal), policy_dir=policy_dir, env=env, timeout=180)
    assert pushed.code == 0, pushed.stderr
    assert proxy.outcomes("503") == 1
    # beside it: prod/timeline.json, and (stored as is) the segment's checksum file
    wal_keys = sorted(k for k in view.objects() if "/wal/" in k)
    assert wal_keys == [f"prod/wal/{SEGMENT}", f"prod/wal/{SEGMENT}.sha256"]
    stored = view.get(wal_keys[0])
    digest = hashlib.sha256(wal.read_bytes()).hexdigest()
    assert hashlib.sha256(stored).hexdigest() == digest
    assert view.get(wal_keys[1]) == f"{digest}  {SEGMENT}\n".encode()


def test_a_truncated_download_is_never_taken_for_the_object(
    sample_db: tuple[str, str],
    proxied: tuple[RepoTarget, RepoView],
    proxy: FaultProxy,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    name, url = sample_db
    target, _view = proxied
    policy_dir = make_policy("prod", url, target)
    made = run_drkit("backup", "prod", "--json", policy_dir=policy_dir, env=FAST_FAIL)
    assert made.code == 0, made.stderr
    wal = wal_file(tmp_path)
    env = {**FAST_FAIL, "DRKIT_WAL_PUSH_BATCH": "0"}
    assert run_drkit("wal-push", "prod", str(wal), policy_dir=policy_dir, env=env).code == 0

    proxy.set_faults(Fault("truncate", "GET", match=".dump", times=None))
    verified = run_drkit("verify", "prod", "--all", "--json", policy_dir=policy_dir, env=env)
    assert verified.code in (1, 3), verified.stderr
    assert f"{name}.dump" in verified.stderr
    if verified.stdout.strip():
        assert json.loads(verified.stdout)["ok"] is False

    proxy.set_faults(Fault("truncate", "GET", match="/wal/", times=None))
    restored = tmp_path / "restore" / "RECOVERYXLOG"
    restored.parent.mkdir()
    fetched = run_drkit(
        "wal-fetch", "prod", SEGMENT, str(restored), policy_dir=policy_dir, env=env, timeout=120
    )
    assert fetched.code == 1, fetched.stderr
    assert not restored.exists(), "PostgreSQL would have been handed a partial segment"
    assert [p.name for p in restored.parent.iterdir()] == []

    proxy.set_faults()
    fetched = run_drkit("wal-fetch", "prod", SEGMENT, str(restored), policy_dir=policy_dir)
    assert fetched.code == 0, fetched.stderr
    assert restored.read_bytes() == wal.read_bytes()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An S3 endpoint that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError:
                continue
            held.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_an_endpoint_that_never_answers_fails_backups_saying_each_retry(
    silent_endpoint: str, make_policy: PolicyWriter, run_drkit: DrkitRunner
) -> None:
    """``drkit backups`` against a store that accepts and never answers used to sit six
    silent minutes (six attempts of a 60 s read timeout).  Each retry now says so on its
    own line, and the command ends with one error line (here with a 1 s read timeout;
    the default bound is checked below)."""
    repo = {"url": "s3://silent/drkit", "endpoint_url": silent_endpoint, "region": "us-east-1"}
    policy_dir = make_policy("prod", "postgresql:///unused", repo)
    env = {
        "AWS_ACCESS_KEY_ID": "drkit-test",
        "AWS_SECRET_ACCESS_KEY": "silent-endpoint-secret",
        "DRKIT_S3_MAX_ATTEMPTS": "3",
        "DRKIT_S3_CONNECT_TIMEOUT": "2",
        "DRKIT_S3_READ_TIMEOUT": "1",
    }
    result = run_drkit("backups", "prod", policy_dir=policy_dir, env=env, timeout=120)
    assert result.code == 1, result.stderr
    assert "not answering" in one_clear_line(result.stderr)
    seen = retries(result.stderr)
    assert [(op, attempt, of) for op, _path, attempt, of in seen] == [
        ("ListObjectsV2", 2, 3),
        ("ListObjectsV2", 3, 3),
    ], result.stderr
    assert all(path.startswith("/silent") for _op, path, _a, _o in seen)
    assert "ReadTimeoutError" in result.stderr  # why the attempt before failed
    assert "silent-endpoint-secret" not in result.stderr and "Signature=" not in result.stderr


def test_s3_calls_are_bounded_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without overrides, a call S3 never answers ends within a minute: every attempt's
    connect and read timeouts plus botocore's backoff between them (at most 2**n s).
    Upload bodies wait longer for S3's answer (see drkit/storage/s3.py)."""
    from drkit.storage.s3 import S3Backend

    for name in list(os.environ):
        if name.startswith("DRKIT_S3_"):
            monkeypatch.delenv(name)
    backend = S3Backend("bucket", "drkit", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    try:
        config = backend.client.meta.config
        attempts = config.retries["total_max_attempts"]
        backoff = sum(2**n for n in range(attempts - 1))
        worst = attempts * (config.connect_timeout + config.read_timeout) + backoff
        assert worst <= 60, (attempts, config.connect_timeout, config.read_timeout)
        upload = backend.upload_client.meta.config
        assert upload.read_timeout > config.read_timeout
        assert upload.retries["total_max_attempts"] == attempts
        assert upload.connect_timeout == config.connect_timeout
    finally:
        backend.close()
