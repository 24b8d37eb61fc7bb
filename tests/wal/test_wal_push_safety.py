"""wal-push stores a name at most once, atomically, and only whole segments.

Real CLI processes against ``file://`` and S3 (moto over HTTP); no PostgreSQL needed:
the ``pg_wal`` directories are laid out as the archiver leaves them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit.storage import Repository
from drkit.wal import find_wal_key, load_wal_policy, open_wal_object
from tests.builders import pg_wal_dir, write_policy
from tests.fix_cli import DrkitRunner
from tests.fix_s3 import S3Server
from tests.wal_support import file_repo_block, shared_dir

SEG = 16 * 1024 * 1024
DRKIT = [sys.executable, "-m", "drkit"]


class Site:
    def __init__(self, root: Path, block: dict[str, str]) -> None:

        self.root = root
        self.policy_dir = write_policy(root / "policies", repository=block)

    def pg_wal(self, label: str) -> Path:
        return pg_wal_dir(self.root / label)

    def repo(self) -> Repository:
        return Repository.for_policy(load_wal_policy("prod", self.policy_dir))

    def stored(self, name: str) -> bytes | None:
        repo = self.repo()
        key = find_wal_key(repo, name)
        if key is None:
            return None
        with open_wal_object(repo, key) as stream:
            data: bytes = stream.read()
        return data


_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False)
"""


@pytest.fixture(scope="module")
def serial_s3(s3_server: S3Server) -> Iterator[S3Server]:
    """moto's S3 API, serving one request at a time.

    S3 performs a conditional write's check and store as one step; moto's threaded server
    checks ``If-None-Match`` and stores later, so two writes can both pass its check.
    Served one request at a time, moto is as atomic as S3, so this tests drkit's use of
    the conditional write (and fails on a push that writes unconditionally).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERIAL_MOTO, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto's S3 server did not start: pip install 'moto[server]'")
            time.sleep(0.1)
    try:
        yield S3Server(endpoint, "moto")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(params=["file", "s3"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    with shared_dir() as root:
        if request.param == "file":
            block = file_repo_block(root)
        else:
            s3: S3Server = request.getfixturevalue("serial_s3")
            block = {
                "url": f"s3://{s3.create_bucket()}/drkit",
                "endpoint_url": s3.endpoint,
                "region": "us-east-1",
            }
        yield Site(root, block)


def _push(site: Site, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*DRKIT, "--policy-dir", str(site.policy_dir), "wal-push", "prod", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, DRKIT_WAL_PUSH_BATCH="0"),
    )


def test_concurrent_pushes_of_different_bytes_store_exactly_one(site: Site) -> None:
    a_dir, b_dir = site.pg_wal("a"), site.pg_wal("b")
    for trial in range(12):
        name = f"0000000100000000000000{trial + 0x10:02X}"
        a, b = os.urandom(SEG), os.urandom(SEG)
        (a_dir / name).write_bytes(a)
        (b_dir / name).write_bytes(b)
        procs = [_push(site, a_dir / name), _push(site, b_dir / name)]
        codes = []
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            codes.append((proc.returncode, err.decode()))
        winners = [i for i, (code, _) in enumerate(codes) if code == 0]
        assert len(winners) == 1, f"trial {trial}: exit codes {codes}"
        loser = 1 - winners[0]
        assert codes[loser][0] == 1, codes
        assert site.stored(name) == (a, b)[winners[0]], f"trial {trial}: stored bytes differ"


def test_same_bytes_twice_concurrently_both_succeed(site: Site) -> None:
    a_dir, b_dir = site.pg_wal("a"), site.pg_wal("b")
    name = "000000010000000000000040"
    data = os.urandom(SEG)
    (a_dir / name).write_bytes(data)
    (b_dir / name).write_bytes(data)
    procs = [_push(site, a_dir / name), _push(site, b_dir / name)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    assert site.stored(name) == data


@pytest.mark.parametrize("size", [5, SEG - 1, SEG + 1, 3 * 1024 * 1024])
def test_a_file_that_is_not_a_whole_segment_is_refused(
    site: Site, run_drkit: DrkitRunner, size: int
) -> None:
    pg_wal = site.pg_wal("c")
    name = "000000010000000000000050"
    (pg_wal / name).write_bytes(b"w" * size)
    refused = run_drkit("wal-push", "prod", str(pg_wal / name), policy_dir=site.policy_dir)
    assert refused.code == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a whole WAL segment" in lines[0], refused.stderr
    assert find_wal_key(site.repo(), name) is None
    assert site.repo().list("wal/") == []
    real = os.urandom(SEG)
    (pg_wal / name).write_bytes(real)
    pushed = run_drkit("wal-push", "prod", str(pg_wal / name), policy_dir=site.policy_dir)
    assert pushed.code == 0, pushed.stderr
    assert site.stored(name) == real


def test_history_partial_and_backup_files_are_not_size_checked(
    site: Site, run_drkit: DrkitRunner
) -> None:
    pg_wal = site.pg_wal("d")
    files = {
        "00000002.history": b"1\t0/5000000\tno recovery target specified\n",
        "000000010000000000000005.partial": b"p" * 1000,
        "000000010000000000000003.00000028.backup": b"START WAL LOCATION: 0/3000028\n",
    }
    for name, data in files.items():
        (pg_wal / name).write_bytes(data)
        pushed = run_drkit("wal-push", "prod", str(pg_wal / name), policy_dir=site.policy_dir)
        assert pushed.code == 0, pushed.stderr
        assert site.stored(name) == data
