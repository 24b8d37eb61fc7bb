"""The asynchronous WAL archiver (``wal_archiver.mode: async``) keeps every archive promise.

Real PostgreSQL clusters archive a backlog through ``drkit wal-push`` into ``file://``
and S3 (moto over HTTP); the worker is the real detached process.  Each test checks the
repository's bytes against the segments PostgreSQL wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drkit.pg import LocalCluster, chown_tree, cluster_os_user
from drkit.storage import Repository
from drkit.wal import (
    ACK,
    LOCK,
    Spool,
    ack_outcome,
    archive_command,
    find_wal_key,
    load_wal_policy,
    open_wal_object,
    prepare_file_repository,
    push_async,
    repository_id,
    spool_for,
    system_identifier,
    trusted_ack,
)
from tests import builders
from tests.fix_cli import DrkitRunner, valid
from tests.fix_s3 import S3Server
from tests.wal_support import file_repo_block, shared_dir

SEG = 16 * 1024 * 1024


def write_policy(policy_dir: Path, block: dict[str, Any], **archiver: Any) -> None:
    builders.write_policy(
        policy_dir,
        repository=block,
        wal_archiving=True,
        wal_archiver={"mode": "async", **archiver},
    )
    chown_tree(policy_dir, cluster_os_user())


def ready(cluster: LocalCluster) -> list[str]:
    status = cluster.data_dir / "pg_wal" / "archive_status"
    return sorted(p.name[: -len(".ready")] for p in status.iterdir() if p.name.endswith(".ready"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_sha(repo: Repository, name: str) -> str | None:
    key = find_wal_key(repo, name)
    if key is None:
        return None
    with open_wal_object(repo, key) as stream:
        data: bytes = stream.read()
    return sha(data)


class Backlog:
    """A cluster whose archiving was paused while ``segments`` segments filled up."""

    def __init__(self, root: Path, block: dict[str, Any], segments: int, **archiver: Any):
        self.root = root
        self.policy_dir = root / "policies"
        write_policy(self.policy_dir, block, **archiver)
        prepare_file_repository(str(block["url"]), "prod", cluster_os_user())
        self.cluster = LocalCluster.create(
            root / "pg",
            settings={
                "archive_mode": "on",
                "archive_command": "",
                "max_wal_size": f"{(segments + 8) * 32}MB",
                "min_wal_size": f"{(segments + 8) * 32}MB",
                "checkpoint_timeout": "1h",
            },
            fast=True,
        )
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE filler (id bigint, payload text)")
            while len([n for n in ready(self.cluster) if len(n) == 24]) < segments:
                conn.execute(
                    "INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 60000) g"
                )
                conn.execute("SELECT pg_switch_wal()")
        self.pg_wal = self.cluster.data_dir / "pg_wal"
        # what PostgreSQL wrote, before anything archives it
        self.expected = {n: sha((self.pg_wal / n).read_bytes()) for n in ready(self.cluster)}

    def start_archiving(self) -> None:
        command = archive_command("prod", self.policy_dir, self.cluster.os_user)
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET archive_command = {}").format(command))
            conn.execute("SELECT pg_reload_conf()")

    def wait_drained(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while ready(self.cluster):
            if time.monotonic() > deadline:
                log = self.cluster.log_file.read_text()[-3000:]
                raise AssertionError(f"still ready: {ready(self.cluster)}\n{log}")
            time.sleep(0.1)

    def spool(self) -> Spool:
        spool = spool_for(load_wal_policy("prod", self.policy_dir), self.pg_wal)
        assert spool is not None
        return spool

    def repo(self) -> Repository:
        return Repository.for_policy(load_wal_policy("prod", self.policy_dir))

    def assert_all_whole(self) -> None:
        repo = self.repo()
        for name, digest in self.expected.items():
            assert stored_sha(repo, name) == digest, f"{name} is not stored byte-identical"
            assert (self.pg_wal / "archive_status" / f"{name}.done").exists() or not (
                self.pg_wal / name
            ).exists()


@pytest.fixture
def root() -> Iterator[Path]:
    with shared_dir("drkit-walasync-") as path:
        yield path


def worker_pid(spool: Spool) -> int | None:
    try:
        text = spool.file(LOCK, "").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def test_backlog_drains_whole_and_byte_identical(root: Path) -> None:
    backlog = Backlog(root, file_repo_block(root), 8, workers=2, idle_exit=2)
    try:
        backlog.start_archiving()
        backlog.wait_drained()
        backlog.assert_all_whole()
        # the worker did the work: its spool exists, bound to this cluster
        spool = backlog.spool()
        assert spool.path.is_dir()
        assert str(system_identifier(backlog.cluster.data_dir)) in spool.path.name
        log = backlog.cluster.log_file.read_text()
        assert "archive command failed" not in log, log[-2000:]
        # PostgreSQL's own archive_command ran for fewer files than the backlog: the worker
        # marked the others done (while an acknowledged wal-push held the oldest one)
        with psycopg.connect(backlog.cluster.dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()
        assert row is not None and row[0] < len(backlog.expected)
    finally:
        backlog.cluster.destroy()


def test_worker_killed_mid_drain_loses_nothing(root: Path) -> None:
    backlog = Backlog(root, file_repo_block(root), 16, workers=1, idle_exit=30, wait=600)
    try:
        spool = backlog.spool()
        backlog.start_archiving()
        deadline = time.monotonic() + 300
        killed = None
        while killed is None and time.monotonic() < deadline:
            pid = worker_pid(spool)
            acks = list(spool.path.glob(f"*{ACK}")) if spool.path.is_dir() else []
            done = [n for n in backlog.expected if n not in ready(backlog.cluster)]
            if pid is not None and (acks or done):
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.01)
        assert killed is not None, "the worker never started"
        left_at_kill = ready(backlog.cluster)
        assert left_at_kill, "the backlog drained before the kill: make it larger"
        backlog.wait_drained()
        backlog.assert_all_whole()
        # a new worker took over (the lock of the dead one was released by the kernel)
        pid = worker_pid(spool)
        assert pid is not None and pid != killed
    finally:
        pid = worker_pid(backlog.spool()) if backlog.spool().path.is_dir() else None
        if pid is not None:
            with_suppress_kill(pid)
        backlog.cluster.destroy()


def with_suppress_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_backlog_drains_to_s3(root: Path, s3_server: S3Server) -> None:
    block = {
        "url": f"s3://{s3_server.create_bucket()}/drkit",
        "endpoint_url": s3_server.endpoint,
        "region": "us-east-1",
    }
    backlog = Backlog(root, block, 6, workers=4, idle_exit=2)
    try:
        backlog.start_archiving()
        backlog.wait_drained()
        backlog.assert_all_whole()
    finally:
        backlog.cluster.destroy()


# ---------------------------------------------------------------------------
# acknowledgements: only one that matches the file itself is trusted
# ---------------------------------------------------------------------------


class Site:
    """A real (running, not archiving) cluster's data directory with a fake ready
    segment on a timeline the server never uses."""

    name = "000000090000000000000042"

    def __init__(self, root: Path, cluster: LocalCluster, **archiver: Any) -> None:
        self.root = root
        self.block = file_repo_block(root)
        self.policy_dir = root / "policies"
        write_policy(self.policy_dir, self.block, **archiver)
        self.cluster = cluster
        self.pg_wal = cluster.data_dir / "pg_wal"
        self.data = os.urandom(1024) * (SEG // 1024)
        self.path = self.pg_wal / self.name
        self.path.write_bytes(self.data)
        (self.pg_wal / "archive_status" / f"{self.name}.ready").write_text("")
        self.policy = load_wal_policy("prod", self.policy_dir)
        spool = spool_for(self.policy, self.pg_wal)
        assert spool is not None
        self.spool = spool
        spool.path.mkdir(parents=True, exist_ok=True)

    def forge(self, **changes: Any) -> None:
        doc = {
            "version": 1,
            "name": self.name,
            "size": SEG,
            "sha256": sha(self.data),
            "system_identifier": self.spool.system_identifier,
            "repository": self.spool.repository_id,
            "key": f"prod/wal/{self.name}.zst",
            "stored_size": 1234,
            **changes,
        }
        self.spool.file(self.name, ACK).write_text(json.dumps(doc))

    def repo(self) -> Repository:
        return Repository.for_policy(self.policy)


@pytest.mark.parametrize(
    "forged",
    [
        {"sha256": "0" * 64},  # another file once stored under this name
        {"system_identifier": 1},  # another cluster
        {"repository": "0123456789abcdef"},  # another repository
        {"size": SEG - 1},
        {},  # everything right, but nothing is stored
    ],
    ids=["wrong-sha", "other-cluster", "other-repository", "wrong-size", "not-stored"],
)
def test_forged_or_stale_ack_is_not_trusted(
    root: Path, local_cluster: Any, forged: dict[str, Any]
) -> None:
    site = Site(root, local_cluster(), wait=5, idle_exit=1)
    site.forge(**forged)
    assert not trusted_ack(site.spool, site.path, Path(site.block["url"][len("file://") :]))
    assert not site.spool.file(site.name, ACK).exists()  # removed, never consulted again
    site.forge(**forged)
    # wal-push then returns 0 only once this file is stored (by the worker or by itself)
    push_async(site.policy, site.path, policy_dir=site.policy_dir)
    assert stored_sha(site.repo(), site.name) == sha(site.data)


def test_ack_from_another_cluster_spool_is_not_used(root: Path, local_cluster: Any) -> None:
    site = Site(root, local_cluster(), wait=5, idle_exit=1)
    other = Spool(site.pg_wal, site.spool.system_identifier + 1, site.spool.repository_id)
    other.path.mkdir(parents=True)
    from drkit.wal import PushOutcome

    ack_outcome(other, PushOutcome(site.name, "stored", 10, SEG, sha(site.data), "k"))
    push_async(site.policy, site.path, policy_dir=site.policy_dir)
    assert stored_sha(site.repo(), site.name) == sha(site.data)


def test_a_true_ack_returns_at_once_and_changed_bytes_are_refused(
    root: Path, local_cluster: Any, run_cli: DrkitRunner
) -> None:
    site = Site(root, local_cluster(), wait=30, idle_exit=1)
    first = push_async(site.policy, site.path, policy_dir=site.policy_dir)
    assert first.target.status in ("stored", "exists", "acked")
    assert stored_sha(site.repo(), site.name) == sha(site.data)
    # the worker (or this push) left a true ack: the next push trusts it
    if not site.spool.file(site.name, ACK).exists():
        from drkit.wal import push_file

        ack_outcome(site.spool, push_file(site.repo(), site.path))
    acked = push_async(site.policy, site.path).target
    assert acked.status == "acked"
    # and wal-push --json says so in the shape its published schema allows, with the
    # sizes and content the worker stored (not zeros)
    pushed = run_cli("wal-push", "prod", str(site.path), "--json", policy_dir=site.policy_dir)
    document = valid("wal-push", pushed)
    assert document["status"] == "acked"
    assert (acked.raw_size, acked.sha256) == (SEG, sha(site.data))
    assert document["raw_size_bytes"] == SEG
    assert 0 < document["stored_size_bytes"] == acked.stored_size
    # the same name with other bytes (a re-used name): the ack no longer matches and the
    # archive refuses the different file; nothing is overwritten
    site.path.write_bytes(os.urandom(1024) * (SEG // 1024))
    from drkit.wal import WalConflict

    with pytest.raises(WalConflict):
        push_async(site.policy, site.path, policy_dir=site.policy_dir)
    assert stored_sha(site.repo(), site.name) == sha(site.data)


def test_ack_names_this_cluster_and_repository(root: Path, local_cluster: Any) -> None:
    site = Site(root, local_cluster())
    assert site.spool.system_identifier == system_identifier(site.cluster.data_dir)
    assert site.spool.repository_id == repository_id(site.policy)
    assert site.spool.path.parent == site.pg_wal / ".drkit-archive"


# ---------------------------------------------------------------------------
# one worker per spool, and it goes away when idle
# ---------------------------------------------------------------------------


def start_worker(site: Site) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drkit.wal",
            "worker",
            "prod",
            str(site.policy_dir),
            str(site.pg_wal),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_worker_drains_then_exits_when_idle(root: Path, local_cluster: Any) -> None:
    site = Site(root, local_cluster(), idle_exit=1)
    worker = start_worker(site)
    _out, err = worker.communicate(timeout=120)  # returns only because the worker exits
    assert worker.returncode == 0, err.decode()
    assert stored_sha(site.repo(), site.name) == sha(site.data)
    # the oldest ready file is the one PostgreSQL archives next: its .ready is left to
    # PostgreSQL, whose wal-push finds the ack
    assert (site.pg_wal / "archive_status" / f"{site.name}.ready").exists()
    assert trusted_ack(site.spool, site.path, Path(site.block["url"][len("file://") :]))


def test_a_second_worker_does_not_start(root: Path, local_cluster: Any) -> None:
    site = Site(root, local_cluster(), idle_exit=1)
    # a worker holds the lock (this test, standing in for it): another one must not run
    fd = os.open(site.spool.file(LOCK, ""), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = start_worker(site)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()
        assert stored_sha(site.repo(), site.name) is None  # it did nothing
        assert (site.pg_wal / "archive_status" / f"{site.name}.ready").exists()
    finally:
        os.close(fd)
    # the lock is free again: a worker runs and drains
    third = start_worker(site)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err.decode()
    assert stored_sha(site.repo(), site.name) == sha(site.data)


# ---------------------------------------------------------------------------
# the lean wal-push (before the policy is loaded) trusts no more than the full one
# ---------------------------------------------------------------------------


def cli_push(site: Site) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRKIT, "wal-push", "prod", str(site.path), "--policy-dir", str(site.policy_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


DRKIT = [sys.executable, "-m", "drkit"]


def test_lean_wal_push_checks_the_ack_against_the_file(root: Path, local_cluster: Any) -> None:
    from drkit.wal import fast_push

    site = Site(root, local_cluster(), idle_exit=1, wait=5)
    worker = start_worker(site)
    worker.communicate(timeout=120)
    assert stored_sha(site.repo(), site.name) == sha(site.data)
    assert (site.pg_wal / "archive_status" / f"{site.name}.ready").exists()
    ack_outcome_text = site.spool.file(site.name, ACK).read_text()

    # the true ack: the lean path answers without the policy
    assert fast_push("prod", str(site.path), str(site.policy_dir))
    assert cli_push(site).returncode == 0

    # a re-used name with other bytes: the ack is refused and the archive refuses the file
    site.path.write_bytes(os.urandom(1024) * (SEG // 1024))
    assert not fast_push("prod", str(site.path), str(site.policy_dir))
    site.spool.file(site.name, ACK).write_text(ack_outcome_text)  # put the stale ack back
    result = cli_push(site)
    assert result.returncode == 1, result.stderr
    assert "different" in result.stderr
    assert stored_sha(site.repo(), site.name) == sha(site.data)

    # the object is gone from the repository: a true-looking ack proves nothing
    site.path.write_bytes(site.data)
    site.spool.file(site.name, ACK).write_text(ack_outcome_text)
    repo = site.repo()
    key = find_wal_key(repo, site.name)
    assert key is not None
    repo.backend.delete(key)
    assert not fast_push("prod", str(site.path), str(site.policy_dir))
    site.spool.file(site.name, ACK).write_text(ack_outcome_text)
    assert cli_push(site).returncode == 0
    assert stored_sha(site.repo(), site.name) == sha(site.data)


def test_a_changed_policy_finds_no_hint(root: Path, local_cluster: Any) -> None:
    from drkit.wal import fast_push

    site = Site(root, local_cluster(), idle_exit=1)
    start_worker(site).communicate(timeout=120)
    assert (site.pg_wal / "archive_status" / f"{site.name}.ready").exists()
    assert fast_push("prod", str(site.path), str(site.policy_dir))
    # the same file, another repository: the acknowledgement is not about it
    other = root / "repo2"
    other.mkdir()
    write_policy(site.policy_dir, {"url": f"file://{other}"}, idle_exit=1)
    assert not fast_push("prod", str(site.path), str(site.policy_dir))
    # a variable the policy reads changed: not the same policy either
    write_policy(site.policy_dir, {"url": "file://${DRKIT_TEST_REPO}"}, idle_exit=1)
    os.environ["DRKIT_TEST_REPO"] = str(other)
    try:
        assert not fast_push("prod", str(site.path), str(site.policy_dir))
    finally:
        del os.environ["DRKIT_TEST_REPO"]


def test_the_worker_stops_when_its_policy_changes(root: Path, local_cluster: Any) -> None:
    site = Site(root, local_cluster(), idle_exit=3600)
    (site.pg_wal / "archive_status" / f"{site.name}.ready").unlink()  # nothing to do
    worker = start_worker(site)
    try:
        deadline = time.monotonic() + 120
        while worker_pid(site.spool) != worker.pid:
            assert worker.poll() is None, worker.communicate()[1].decode()
            assert time.monotonic() < deadline, "the worker never took its lock"
            time.sleep(0.05)
        # another repository: this worker's acknowledgements would name the wrong one
        other = root / "repo2"
        other.mkdir()
        write_policy(site.policy_dir, {"url": f"file://{other}"}, idle_exit=3600)
        _, err = worker.communicate(timeout=120)  # returns only because the worker exits
        assert worker.returncode == 0, err.decode()
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_worker_leaves_a_failed_file_to_postgresql_once_its_cluster_has_stopped(
    root: Path, local_cluster: Any
) -> None:
    """After the cluster stops, a file whose store fails (here: the archive holds other
    bytes under its name, a conflict no retry mends) is tried once and left to
    PostgreSQL's next start: the worker goes idle and exits, instead of retrying every
    few seconds, for ever, for a cluster that is gone."""
    import threading

    from drkit.wal import push_file
    from drkit.wal.ack import ERROR
    from drkit.wal.archiver import Worker

    cluster = local_cluster()
    site = Site(root, cluster, idle_exit=6)
    other = root / "other" / "pg_wal"
    other.mkdir(parents=True)
    (other / site.name).write_bytes(os.urandom(1024) * (SEG // 1024))
    push_file(site.repo(), other / site.name)
    cluster.stop()

    worker = Worker(site.policy, site.spool, site.repo())
    thread = threading.Thread(target=worker.run, args=(site.policy.wal_archiver.idle_exit,))
    thread.daemon = True
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the worker kept retrying for a stopped cluster"
    assert site.spool.file(site.name, ERROR).exists()  # it tried, and recorded why
    assert (site.pg_wal / "archive_status" / f"{site.name}.ready").exists()  # still ready
