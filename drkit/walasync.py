"""Asynchronous WAL archiving (``wal_archiver.mode: async``): archive_command returns fast.

PostgreSQL runs archive_command once per segment and waits for it.  In async mode a
long-lived worker, one per cluster and repository, scans ``pg_wal/archive_status`` for
``.ready`` files and stores them in parallel (history files first, then oldest first)
with :func:`drkit.wal.push_file` — the same no-replace, whole-segment-checked, read-back
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
Otherwise wal-push makes sure the worker runs (a ``flock`` on ``worker.lock`` admits one;
the kernel drops it when the worker dies, even by SIGKILL), waits up to
``wal_archiver.wait`` seconds for the ack, and then stores the segment itself, or fails:
it never returns 0 for a segment that is not stored whole.

The spool is inside ``pg_wal``, which base backups do not copy.  The worker exits after
``wal_archiver.idle_exit`` seconds without a ready file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import DrkitError, OperationError
from drkit.wal import (
    PushOutcome,
    PushReport,
    cluster_segment_size,
    load_wal_policy,
    mark_done,
    push_file,
    push_wal,
    ready_files,
)
from drkit.wal_names import is_archivable

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage.repository import Repository

log = logging.getLogger(__name__)

SPOOL_ROOT = ".drkit-archive"
ACK = ".ack"
WANT = ".want"
ERROR = ".error"
LOCK = "worker.lock"
_POLL = 0.02
_SPAWN_GRACE = 10.0  # seconds a new worker gets to take its lock
_RETRY_FAILED = 5.0  # seconds before the worker tries a failed segment again
_ACK_VERSION = 1


@dataclass(frozen=True)
class Spool:
    """The async archiver's directory for one cluster and one repository."""

    pg_wal: Path
    system_identifier: int
    repository_id: str

    @property
    def path(self) -> Path:
        return self.pg_wal / SPOOL_ROOT / f"{self.system_identifier}-{self.repository_id}"

    def file(self, name: str, suffix: str) -> Path:
        return self.path / f"{name}{suffix}"


def system_identifier(data_dir: Path) -> int | None:
    """The cluster's system identifier (the first 8 bytes of pg_control), or None when
    ``data_dir`` is not a data directory."""
    try:
        with open(data_dir / "global" / "pg_control", "rb") as f:
            head = f.read(8)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise OperationError(
            f"cannot read {data_dir}/global/pg_control for the cluster's identity: {exc.strerror}"
        ) from None
    if len(head) != 8:
        raise OperationError(f"{data_dir}/global/pg_control is truncated")
    return int.from_bytes(head, sys.byteorder)


def repository_id(policy: Policy) -> str:
    """Identity of the place WAL goes: repository URL, endpoint and environment."""
    repo = policy.repository
    ident = f"{repo.url}\n{repo.endpoint_url or ''}\n{policy.name}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def spool_for(policy: Policy, pg_wal: Path) -> Spool | None:
    """The spool of the cluster ``pg_wal`` belongs to; None when it is not in a data
    directory (nothing to bind an acknowledgement to: push synchronously)."""
    if pg_wal.name != "pg_wal":
        return None
    sysid = system_identifier(pg_wal.parent)
    if sysid is None:
        return None
    return Spool(pg_wal, sysid, repository_id(policy))


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_ack(spool: Spool, outcome: PushOutcome) -> None:
    """Record that ``outcome.name`` is stored whole with content ``outcome.sha256``."""
    doc = {
        "version": _ACK_VERSION,
        "name": outcome.name,
        "size": outcome.raw_size,
        "sha256": outcome.sha256,
        "system_identifier": spool.system_identifier,
        "repository": spool.repository_id,
        "key": outcome.key,
        "stored_size": outcome.stored_size,
    }
    _write_atomic(spool.file(outcome.name, ACK), json.dumps(doc))


def _read_ack(spool: Spool, name: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(spool.file(name, ACK).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def trusted_ack(spool: Spool, path: Path, repo_root: Path | None = None) -> bool:
    """Whether the ack of ``path`` proves that this very file is stored whole.

    Every field must match: this cluster, this repository, this name, and the size and
    sha256 of ``path`` as it is now.  With ``repo_root`` (a ``file://`` repository) the
    object must also still be there with the size stored.  An ack that does not match
    is removed."""
    name = path.name
    doc = _read_ack(spool, name)
    if doc is None:
        return False
    trusted = (
        doc.get("version") == _ACK_VERSION
        and doc.get("name") == name
        and doc.get("system_identifier") == spool.system_identifier
        and doc.get("repository") == spool.repository_id
        and isinstance(doc.get("sha256"), str)
        and len(doc["sha256"]) == 64
    )
    if trusted:
        try:
            trusted = _sha256_file(path) == (doc["sha256"], doc.get("size"))
        except FileNotFoundError:
            trusted = False
    if trusted and repo_root is not None:
        key = doc.get("key")
        try:
            trusted = (
                isinstance(key, str)
                and ".." not in key.split("/")
                and (repo_root / key).stat().st_size == doc.get("stored_size")
            )
        except OSError:
            trusted = False
    if not trusted:
        log.warning("%s: ignoring an acknowledgement that does not match the file", name)
        with contextlib.suppress(FileNotFoundError):
            spool.file(name, ACK).unlink()
    return trusted


def worker_running(spool: Spool) -> bool:
    """Whether a worker holds the spool's lock."""
    try:
        fd = os.open(spool.file(LOCK, ""), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


def spawn_worker(env: str, policy_dir: str, pg_wal: Path) -> None:
    """Start a detached worker; it exits at once if another one holds the lock."""
    subprocess.Popen(
        [sys.executable, "-m", "drkit.walasync", "worker", env, policy_dir, str(pg_wal)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _file_repo_root(policy: Policy) -> Path | None:
    if not policy.repository.url.startswith("file://"):
        return None
    from drkit.storage.file import FileBackend

    return FileBackend.from_url(policy.repository.url).root


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
    repo_root = _file_repo_root(policy)
    name = path.name

    def acked() -> PushReport:  # the ack stays until PostgreSQL marks the file done
        report = PushReport(PushOutcome(name, "acked"))
        report.seconds = time.monotonic() - started
        return report

    if trusted_ack(spool, path, repo_root):
        return acked()
    want = spool.file(name, WANT)
    want.touch()
    with contextlib.suppress(FileNotFoundError):
        spool.file(name, ERROR).unlink()
    try:
        spawned_at: float | None = None
        if not worker_running(spool):
            if policy_dir is None:
                from drkit.config import resolve_policy_dir

                policy_dir = resolve_policy_dir(None)
            spawn_worker(policy.name, str(Path(policy_dir).resolve()), path.parent)
            spawned_at = time.monotonic()
        deadline = started + policy.wal_archiver.wait
        while time.monotonic() < deadline:
            if spool.file(name, ACK).exists() and trusted_ack(spool, path, repo_root):
                return acked()
            if spool.file(name, ERROR).exists():
                break  # the worker failed on it: store it here, reporting why it fails
            if not worker_running(spool) and (
                spawned_at is None or time.monotonic() - spawned_at > _SPAWN_GRACE
            ):
                break  # no worker (it died or exited): don't wait for nothing
            time.sleep(_POLL)
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
    if policy.wal_archiver.workers:
        return policy.wal_archiver.workers
    if policy.repository.url.startswith("s3://"):
        return 8
    return max(2, os.cpu_count() or 1)


class Worker:
    """Drains ``.ready`` files of one cluster into one repository, in parallel."""

    def __init__(self, policy: Policy, spool: Spool, repo: Repository) -> None:
        self.policy = policy
        self.spool = spool
        self.repo = repo
        self.jobs = default_workers(policy)
        self.segment_size = cluster_segment_size(spool.pg_wal / "probe")
        self.failed: dict[str, float] = {}
        self._timeline_lock = threading.Lock()
        # several segments in flight: each compresses in its own thread
        self.compress_threads = 0 if self.jobs > 1 else None

    def one(self, path: Path) -> str:
        """Store ``path``, acknowledge it, mark it done; the name, or raises."""
        from drkit.timelines import note_pushed

        outcome = push_file(
            self.repo, path, self.segment_size, compress_threads=self.compress_threads
        )
        with self._timeline_lock:
            note_pushed(self.repo, self.spool.pg_wal, [outcome.name])
        write_ack(self.spool, outcome)
        if not self.spool.file(outcome.name, WANT).exists():
            mark_done(self.spool.pg_wal, [outcome.name])
        return outcome.name

    def candidates(self, busy: set[str], limit: int) -> list[Path]:
        now = time.monotonic()
        out = []
        for p in ready_files(self.spool.pg_wal, "", 10 * limit + len(busy)):
            n = p.name
            if n in busy or self.failed.get(n, 0.0) > now:
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

    def run(self, idle_exit: float) -> None:
        busy: dict[Future[str], str] = {}
        idle_since = time.monotonic()
        last_sweep = 0.0
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while True:
                if not self.spool.pg_wal.is_dir():
                    return
                if time.monotonic() - last_sweep > 5.0:
                    self.sweep()
                    last_sweep = time.monotonic()
                free = 2 * self.jobs - len(busy)
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
                _write_atomic(self.spool.file(name, ERROR), message)


def worker_main(argv: list[str]) -> int:
    """``python -m drkit.walasync worker ENV POLICY_DIR PG_WAL``: one worker per spool."""
    env, policy_dir, pg_wal = argv
    policy = load_wal_policy(env, policy_dir)
    spool = spool_for(policy, Path(pg_wal))
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
    from drkit.storage.repository import Repository

    repo = Repository.for_policy(policy)
    repo.check_encryption_available()
    Worker(policy, spool, repo).run(policy.wal_archiver.idle_exit)
    return 0


if __name__ == "__main__":  # pragma: no cover - the detached worker
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        import signal

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            raise SystemExit(worker_main(sys.argv[2:]))
        except (DrkitError, KeyboardInterrupt):
            raise SystemExit(1) from None
    raise SystemExit(2)
