"""Asynchronous WAL archiving (``wal_archiver.mode: async``): archive_command returns fast.

PostgreSQL runs archive_command once per segment and waits for it.  In async mode a
long-lived worker, one per cluster and repository, scans ``pg_wal/archive_status`` for
``.ready`` files and stores them in parallel (history files first, then oldest first)
with :func:`drkit.wal.push.push_file` — the same no-replace, whole-segment-checked, read-back
store as a synchronous push.  After each segment is stored whole it

1. writes an *acknowledgement* ``<spool>/<name>.ack`` (atomically: temp file + rename)
   holding the name, the size and sha256 of the bytes stored, the cluster's system
   identifier, the repository's identity and the key stored under;
2. renames ``<name>.ready`` to ``<name>.done`` — PostgreSQL's own marker, so it never
   runs archive_command for it — unless a wal-push is waiting for that very segment
   (``<name>.want``): then PostgreSQL marks it when that wal-push returns 0.

``drkit wal-push`` of segment N in async mode returns 0 at once only for an
acknowledgement it can check against the file itself: the same cluster (the spool is
``pg_wal/.drkit-archive/<system identifier>-<repository id>``, and the ack repeats both),
the same name, and the size and sha256 of the file in pg_wal now.  A stale ack (a name
re-used after a re-initdb, a forged or damaged file) is removed and not trusted.
The check itself lives in :mod:`drkit.wal.ack`, which the lean entry runs before loading
the policy.  Otherwise wal-push makes sure the worker runs (forked from itself; a
``flock`` on ``worker.lock`` admits one, and the kernel drops it when the worker dies,
even by SIGKILL), waits up to
``wal_archiver.wait`` seconds for the ack, and then stores the segment itself, or fails:
it never returns 0 for a segment that is not stored whole.

The spool is inside ``pg_wal``, which base backups do not copy.  The worker exits after
``wal_archiver.idle_exit`` seconds without a ready file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.errors import DrkitError, OperationError
from drkit.wal.ack import (
    ACK,
    ERROR,
    LOCK,
    POLL,
    WANT,
    Spool,
    check_ack,
    linger,
    policy_fingerprint,
    read_ack,
    repository_key_of,
    wait_for_ack,
    worker_running,
    write_ack,
    write_atomic,
    write_hint,
)
from drkit.wal.cluster import ControlFileError, cluster_segment_size, system_identifier
from drkit.wal.commands import load_wal_policy, module_argv
from drkit.wal.names import is_archivable
from drkit.wal.push import (
    PushOutcome,
    PushReport,
    mark_done,
    push_file,
    push_wal,
    ready_files,
)

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage import Repository

log = logging.getLogger(__name__)

_SPAWN_GRACE = 10.0  # seconds a new worker gets to take its lock
_RETRY_FAILED = 5.0  # seconds before the worker tries a failed segment again


def repository_id(policy: Policy) -> str:
    """Identity of the place WAL goes: repository URL, endpoint and environment."""
    return repository_key_of(policy.repository, policy.name)


def spool_for(policy: Policy, pg_wal: Path) -> Spool | None:
    """The spool of the cluster ``pg_wal`` belongs to; None when it is not in a data
    directory (nothing to bind an acknowledgement to: push synchronously)."""
    if pg_wal.name != "pg_wal":
        return None
    try:
        sysid = system_identifier(pg_wal.parent)
    except ControlFileError as exc:
        raise OperationError(str(exc)) from None
    if sysid is None:
        return None
    return Spool(pg_wal, sysid, repository_id(policy))


def ack_outcome(spool: Spool, outcome: PushOutcome) -> None:
    """Record that ``outcome.name`` is stored whole with content ``outcome.sha256``."""
    write_ack(
        spool, outcome.name, outcome.raw_size, outcome.sha256, outcome.key, outcome.stored_size
    )


def trusted_ack(spool: Spool, path: Path, repo_root: Path | None = None) -> bool:
    """:func:`drkit.wal.ack.check_ack`, logging an ack it refuses."""
    if not spool.file(path.name, ACK).exists():
        return False
    if check_ack(spool, path, repo_root):
        return True
    log.warning("%s: ignoring an acknowledgement that does not match the file", path.name)
    return False


def spawn_worker(policy: Policy, policy_dir: str, pg_wal: Path) -> None:
    """Start a detached worker; it exits at once if another one holds the lock.

    Forked from this process, which has the policy and the code loaded already, so the
    worker starts draining without an interpreter start; a new interpreter when forking
    is not possible."""
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:  # the worker: its own session, nothing of PostgreSQL's pipes kept open
        code = 1
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            logging.disable(logging.CRITICAL)
            code = run_worker(policy, policy_dir, pg_wal)
        finally:
            os._exit(code)
    if pid > 0:
        return
    subprocess.Popen(
        [*module_argv("drkit.wal"), "worker", policy.name, policy_dir, str(pg_wal)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def push_async(
    policy: Policy,
    path: Path | str,
    *,
    policy_dir: Path | str | None = None,
    repo: Repository | None = None,
) -> PushReport:
    """archive_command in async mode: 0 only for a segment acknowledged as stored whole
    (by the worker, or by storing it here after waiting for the worker in vain)."""
    started = time.monotonic()
    path = Path(path)
    if not path.is_absolute():
        path = Path.cwd() / path
    spool = spool_for(policy, path.parent) if path.is_file() else None
    if spool is None or not is_archivable(path.name):
        return push_wal(policy, path, repo=repo)
    spool.path.mkdir(parents=True, exist_ok=True)
    repo_root = policy.repository.local_root
    name = path.name

    def acked() -> PushReport:  # the ack stays until PostgreSQL marks the file done
        record = read_ack(spool, name)  # trusted just now: what the worker stored
        raw_size, sha256, key, stored_size = record or (0, "", "", 0)
        linger(spool, name)
        report = PushReport(PushOutcome(name, "acked", stored_size, raw_size, sha256, key))
        report.seconds = time.monotonic() - started
        return report

    if trusted_ack(spool, path, repo_root):
        return acked()
    want = spool.file(name, WANT)
    want.touch()  # before the worker starts: it must leave this file's .ready to PostgreSQL
    try:
        if not worker_running(spool):
            if policy_dir is None:
                from drkit.config import resolve_policy_dir

                policy_dir = resolve_policy_dir(None)
            spawn_worker(policy, str(Path(policy_dir).resolve()), path.parent)
            # give it the time to take its lock, then wait as for a running worker
            grace = time.monotonic() + _SPAWN_GRACE
            while not worker_running(spool) and time.monotonic() < grace:
                if trusted_ack(spool, path, repo_root):
                    return acked()
                time.sleep(POLL)
        remaining = policy.wal_archiver.wait - (time.monotonic() - started)
        if remaining > 0 and wait_for_ack(spool, path, repo_root, remaining):
            return acked()
        if spool.file(name, ACK).exists() and trusted_ack(spool, path, repo_root):
            return acked()
        log.info("%s: no acknowledgement from the async archiver; storing it here", name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            want.unlink()
    return push_wal(policy, path, repo=repo, batch=0)


def archive_wal(policy: Policy, path: Path | str, policy_dir: Path | str | None) -> PushReport:
    """``drkit wal-push``: the policy's ``wal_archiver.mode`` decides sync or async."""
    if policy.wal_archiver.mode == "async":
        return push_async(policy, path, policy_dir=policy_dir)
    return push_wal(policy, path)


# ---------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------


def default_workers(policy: Policy) -> int:
    return policy.wal_archiver.workers or policy.repository.parallel_uploads


class Worker:
    """Drains ``.ready`` files of one cluster into one repository, in parallel."""

    def __init__(self, policy: Policy, spool: Spool, repo: Repository) -> None:
        self.policy = policy
        self.spool = spool
        self.repo = repo
        self.jobs = default_workers(policy)
        self.segment_size = cluster_segment_size(spool.pg_wal / "probe")
        self.failed: dict[str, float] = {}
        #: whether the cluster's postmaster lives (read at each sweep): without it a
        #: failed file is not tried again, PostgreSQL retries it once it runs again
        self.cluster_up = True
        self._timeline_lock = threading.Lock()
        # several segments in flight: each compresses in its own thread, but no more
        # of them at a time than there are cores (S3 keeps 8 in flight for the network's
        # sake; more compressions than cores only contend)
        self.compress_threads = 0 if self.jobs > 1 else None
        cores = os.cpu_count() or 1
        self.cpu_slots = threading.BoundedSemaphore(cores) if self.jobs > cores else None

    def one(self, path: Path) -> str:
        """Store ``path``, acknowledge it, mark it done; the name, or raises."""
        from drkit.wal.timelines import note_pushed

        outcome = push_file(
            self.repo,
            path,
            self.segment_size,
            compress_threads=self.compress_threads,
            cpu_slots=self.cpu_slots,
        )
        with self._timeline_lock:
            note_pushed(self.repo, self.spool.pg_wal, [outcome.name])
        ack_outcome(self.spool, outcome)
        if not self.spool.file(outcome.name, WANT).exists() and not self.next_for_postgres(
            outcome.name
        ):
            mark_done(self.spool.pg_wal, [outcome.name])
        return outcome.name

    def next_for_postgres(self, name: str) -> bool:
        """Whether ``name`` is the file PostgreSQL's archiver takes next (history files
        first, then the oldest): it may already be running archive_command for it, so
        its ``.ready`` is left to PostgreSQL (which then finds the ack), rather than
        renamed under it."""
        head = ready_files(self.spool.pg_wal, "", 1)
        return bool(head) and head[0].name == name

    def candidates(self, busy: set[str], limit: int) -> list[Path]:
        now = time.monotonic()
        out = []
        for p in ready_files(self.spool.pg_wal, "", 10 * limit + len(busy)):
            n = p.name
            if n in busy or self.failed.get(n, 0.0) > now:
                continue
            if n in self.failed and not self.cluster_up:
                continue
            if self.spool.file(n, ACK).exists():
                continue  # stored; the wal-push waiting for it consumes the ack
            out.append(p)
            if len(out) >= limit:
                break
        return out

    def sweep(self) -> None:
        """Drop acks and markers of files PostgreSQL has finished with."""
        status = self.spool.pg_wal / "archive_status"
        try:
            entries = list(os.scandir(self.spool.path))
        except FileNotFoundError:
            return
        for entry in entries:
            for suffix in (ACK, ERROR):
                if entry.name.endswith(suffix):
                    name = entry.name[: -len(suffix)]
                    if not (status / f"{name}.ready").exists():
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)

    def run(self, idle_exit: float, still_current: Callable[[], bool] = lambda: True) -> None:
        """Drain until idle for ``idle_exit`` seconds, pg_wal is gone, or
        ``still_current()`` (checked every second) says the policy changed.  Once the
        cluster has stopped, what is ready is still stored (the sooner WAL is in the
        archive, the less a lost host loses), but a file that failed is left to
        PostgreSQL's next start: a worker never retries for a cluster that is gone."""
        from drkit.pg import postmaster_running

        busy: dict[Future[str], str] = {}
        idle_since = time.monotonic()
        last_sweep = last_check = 0.0
        current = True
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while True:
                if not self.spool.pg_wal.is_dir():
                    return
                now = time.monotonic()
                if now - last_sweep > 5.0:
                    self.sweep()
                    self.cluster_up = postmaster_running(self.spool.pg_wal.parent)
                    last_sweep = now
                if current and now - last_check > 1.0:
                    current = still_current()
                    last_check = now
                if not current and not busy:
                    return  # a wal-push under the new policy starts a new worker
                free = 2 * self.jobs - len(busy) if current else 0
                if free > 0:
                    for p in self.candidates(set(busy.values()), free):
                        busy[pool.submit(self.one, p)] = p.name
                if busy:
                    idle_since = time.monotonic()
                    done, _ = wait(list(busy), timeout=0.1, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name = busy.pop(fut)
                        self._settle(fut, name)
                    continue
                if time.monotonic() - idle_since > idle_exit:
                    return
                time.sleep(0.05)

    def _settle(self, fut: Future[str], name: str) -> None:
        try:
            fut.result()
            self.failed.pop(name, None)
        except Exception as exc:  # recorded for the waiting wal-push; PostgreSQL retries
            message = str(exc) if isinstance(exc, DrkitError) else f"{type(exc).__name__}: {exc}"
            log.warning("async archiving of %s failed: %s", name, message)
            self.failed[name] = time.monotonic() + _RETRY_FAILED
            with contextlib.suppress(OSError):
                write_atomic(self.spool.file(name, ERROR), message)


def run_worker(policy: Policy, policy_dir: str, pg_wal: Path) -> int:
    """Drain ``pg_wal`` as the one worker of its spool (0 at once if another one runs)."""
    spool = spool_for(policy, pg_wal)
    if spool is None:
        return 2
    spool.path.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool.file(LOCK, ""), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return 0  # another worker drains this spool
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    from drkit.storage import Repository

    repo = Repository.for_wal(policy)
    repo.check_encryption_available()
    # the fingerprint, then the policy it must describe: a policy changed since ``policy``
    # was loaded (or while this runs) ends this worker; the next wal-push starts another
    started_with = policy_fingerprint(policy.name, policy_dir, pg_wal, create=True)
    if started_with is None or load_wal_policy(policy.name, policy_dir) != policy:
        return 0
    write_hint(started_with, spool, policy.repository.local_root, policy.wal_archiver.wait)
    Worker(policy, spool, repo).run(
        policy.wal_archiver.idle_exit,
        lambda: policy_fingerprint(policy.name, policy_dir, pg_wal) == started_with,
    )
    return 0
