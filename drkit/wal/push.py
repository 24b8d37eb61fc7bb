"""``drkit wal-push``: archive_command stores a WAL file, and archives ahead.

A segment goes to ``<repo>/<env>/wal/<name>.zst`` through the repository's encoding
(compression, later encryption); the call succeeds only once the object is stored and
its size read back.  To keep up with a busy server without a Python start per segment,
a push also takes the other files PostgreSQL has marked ``.ready`` in
``pg_wal/archive_status`` (history files first, then oldest first, up to a batch),
uploads them in parallel, and renames each one's ``.ready`` to ``.done`` *after* it is
stored — the same marker PostgreSQL's archiver writes, so it never calls the
archive_command for them again (WAL-G's background uploader does the same).  A file
whose upload failed keeps its ``.ready`` and is retried by PostgreSQL as usual.

An object that already exists is compared with the local file (decoded, sha256): same
content → success; different content → :class:`WalConflict` (exit 1) and nothing is
overwritten: two clusters are archiving into one repository.  Before any of that, every
file — its own, those archived ahead — is checked against the cluster the archive
belongs to (:mod:`drkit.wal.identity`): another cluster's is refused and nothing is
stored.

An object stored as is (``compression: none``, unencrypted) carries no checksum of its
own: its sha256 goes into a ``<key>.sha256`` file beside it before the push is
acknowledged, so a copy of the repository without extended attributes or S3 metadata
still checks it.  zstd, gzip and age objects check themselves.

The asynchronous mode (:mod:`drkit.wal.archiver`) stores with the same :func:`push_file`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from drkit.errors import CheckFailed, DrkitError, ObjectExists, OperationError
from drkit.wal.ack import sha256_file
from drkit.wal.cluster import cluster_segment_size, env_int
from drkit.wal.identity import check_identity
from drkit.wal.keys import (
    WAL_DIR,
    carries_own_checksum,
    find_wal_key,
    open_wal_object,
    read_checksum_file,
    write_checksum_file,
)
from drkit.wal.names import check_archivable, is_archivable, whole_segment_problem
from drkit.wal.timelines import note_pushed  # production's timeline, unless a restore test

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage import Repository
    from drkit.wal.documents import WalPushDocument

log = logging.getLogger(__name__)

PUSH_JOBS_ENV = "DRKIT_WAL_PUSH_JOBS"
PUSH_BATCH_ENV = "DRKIT_WAL_PUSH_BATCH"
DEFAULT_PUSH_BATCH = 64


class WalConflict(OperationError):
    """The archive holds a different file under this WAL name (exit 1)."""


class WalRejected(OperationError):
    """A file handed to wal-push is not what its name says (exit 1)."""


def _sha256_object(repo: Repository, key: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open_wal_object(repo, key) as stream:
        while chunk := stream.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@dataclass
class PushOutcome:
    name: str
    status: str  # stored | exists | acked
    stored_size: int = 0
    raw_size: int = 0
    sha256: str = ""  # of the WAL file's bytes as stored (or found stored)
    key: str = ""


@dataclass
class PushReport:
    """What one wal-push call did: its own file, and the ones it archived ahead."""

    target: PushOutcome
    ahead: list[PushOutcome] = field(default_factory=list)
    ahead_failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def document(self) -> WalPushDocument:
        from drkit.wal.documents import WalPushDocument  # pydantic, not on archive_command path

        seconds = round(self.seconds, 3)
        return WalPushDocument(
            ok=True,
            name=self.target.name,
            status=self.target.status,
            stored_size_bytes=self.target.stored_size,
            raw_size_bytes=self.target.raw_size,
            archived_ahead=[o.name for o in self.ahead],
            ahead_failed=self.ahead_failed,
            duration_seconds=seconds,
            stored_size=self.target.stored_size,
            raw_size=self.target.raw_size,
            seconds=seconds,
        )


def push_file(
    repo: Repository,
    path: Path,
    segment_size: int | None = None,
    *,
    compress_threads: int | None = None,
    cpu_slots: threading.Semaphore | None = None,
) -> PushOutcome:
    """Store one WAL file; idempotent for identical content, refuses different content.

    The object is written with a no-replace store, so of two concurrent pushes of one
    name exactly one stores it; the other compares with what is stored.  The outcome
    carries the sha256 of the bytes stored (or found stored): what an acknowledgement of
    the asynchronous archiver is bound to.  ``cpu_slots``: held while the file is read,
    compressed and hashed, not during the upload that follows."""
    from drkit.streams import GatedReader, HashingReader

    name = path.name
    size_before = path.stat().st_size
    problem = whole_segment_problem(name, size_before, segment_size)
    if problem is not None:
        raise WalRejected(f"{path}: {problem}; refusing to archive it, nothing was stored")
    check_identity(repo, path)  # another cluster's WAL: refused before anything is stored
    existing = find_wal_key(repo, name, expected=False)
    if existing is not None:
        return _compare_with_stored(repo, path, name, existing)
    try:
        with open(path, "rb") as f:
            gate = None if cpu_slots is None else GatedReader(cast(BinaryIO, f), cpu_slots)
            try:
                raw = HashingReader(cast(BinaryIO, f if gate is None else gate))
                obj = repo.store(
                    f"{WAL_DIR}{name}",
                    cast(BinaryIO, raw),
                    size_hint=size_before,
                    exclusive=True,
                    compress_threads=compress_threads,
                )
            finally:
                if gate is not None:
                    gate.release()
    except ObjectExists:
        existing = find_wal_key(repo, name)
        if existing is None:
            raise OperationError(
                f"{name}: another upload of it to {repo.location} is in flight or failed; "
                "not acknowledged (PostgreSQL retries it)"
            ) from None
        return _compare_with_stored(repo, path, name, existing)
    if obj.raw_size != size_before:
        repo.backend.delete(obj.key)
        raise OperationError(
            f"{name}: read {obj.raw_size} bytes but the file has {size_before}: it changed "
            "while being archived"
        )
    if not repo.backend.new_puts_read_back:  # S3's conditional PUT reads back the size itself
        info = repo.backend.head(obj.key)
        if info is None or info.size != obj.stored_size:
            raise OperationError(
                f"{name}: stored {obj.stored_size} bytes in {repo.location} but the repository "
                f"reports {'nothing' if info is None else info.size}; not acknowledged"
            )
    if not carries_own_checksum(obj.key):
        # before the acknowledgement: a crash in between leaves the object without its
        # checksum file, and PostgreSQL's retry (same bytes: "exists") writes it
        write_checksum_file(repo.backend, obj.key, obj.sha256)
    return PushOutcome(name, "stored", obj.stored_size, obj.raw_size, raw.hexdigest(), obj.key)


def _compare_with_stored(repo: Repository, path: Path, name: str, existing: str) -> PushOutcome:
    """Same content as the stored ``existing`` → "exists"; anything else → WalConflict."""
    local_sha, local_size = sha256_file(path)
    try:
        remote_sha, remote_size = _sha256_object(repo, existing)
    except CheckFailed as exc:
        raise WalConflict(
            f"{name}: the archive already holds {existing} and it cannot be decoded "
            f"({exc}); refusing to overwrite it — remove it by hand if it is damaged"
        ) from None
    if (remote_sha, remote_size) == (local_sha, local_size):
        log.info("%s already archived with identical content", name)
        if (
            not carries_own_checksum(existing)
            and read_checksum_file(repo.backend, existing) is None
        ):
            write_checksum_file(repo.backend, existing, local_sha)  # stored as is: same bytes
        return PushOutcome(name, "exists", raw_size=local_size, sha256=local_sha, key=existing)
    raise WalConflict(
        f"{name}: the archive already holds a different {name} ({existing}); nothing was "
        "overwritten. Two clusters are probably archiving into one repository — give "
        "each cluster its own environment/repository prefix"
    )


def ready_files(wal_dir: Path, exclude: str, limit: int) -> list[Path]:
    """Files PostgreSQL marked ready: history files first, then oldest first."""
    status = wal_dir / "archive_status"
    try:
        entries = [
            e.name[: -len(".ready")] for e in os.scandir(status) if e.name.endswith(".ready")
        ]
    except OSError:
        return []
    names = [n for n in entries if n != exclude and is_archivable(n)]
    names.sort(key=lambda n: (not n.endswith(".history"), n[8:], n))
    # the worker asks once per segment: only the files returned are looked at
    out: list[Path] = []
    for n in names:
        if len(out) >= limit:
            break
        if (wal_dir / n).is_file():
            out.append(wal_dir / n)
    return out


def mark_done(wal_dir: Path, names: Iterable[str]) -> None:
    status = wal_dir / "archive_status"
    marked = False
    for name in names:
        try:
            os.rename(status / f"{name}.ready", status / f"{name}.done")
            marked = True
        except FileNotFoundError:  # the archiver marked it itself
            continue
    if marked:
        fd = os.open(status, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def push_wal(
    policy: Policy,
    path: Path | str,
    *,
    repo: Repository | None = None,
    jobs: int | None = None,
    batch: int | None = None,
) -> PushReport:
    """archive_command: store ``path`` (and archive ahead what is ready)."""
    started = time.monotonic()
    path = Path(path)
    if not path.is_absolute():
        path = Path.cwd() / path
    check_archivable(path.name)
    if not path.is_file():
        raise OperationError(f"{path}: no such WAL file to archive")
    if repo is None:
        from drkit.storage import Repository

        repo = Repository.for_wal(policy)
    repo.check_encryption_available()
    # the files archived ahead come from the same pg_wal: another cluster's push fails
    # here, once, before any of them is looked at (push_file checks each one again)
    check_identity(repo, path)
    segment_size = cluster_segment_size(path)
    jobs = jobs or env_int(PUSH_JOBS_ENV, policy.repository.parallel_uploads)
    if batch is None:  # 0 turns archiving ahead off
        batch = env_int(PUSH_BATCH_ENV, DEFAULT_PUSH_BATCH, minimum=0)
    ahead_paths = ready_files(path.parent, path.name, batch) if batch > 0 else []
    report: PushReport
    with ThreadPoolExecutor(max_workers=min(jobs, 1 + len(ahead_paths))) as pool:
        # several files in parallel: each compresses in its own thread, without zstd's
        # worker threads competing with the other uploads for the same cores
        threads = 0 if ahead_paths and jobs > 1 else None
        own: Future[PushOutcome] = pool.submit(
            push_file, repo, path, segment_size, compress_threads=threads
        )
        others = [
            (p, pool.submit(push_file, repo, p, segment_size, compress_threads=threads))
            for p in ahead_paths
        ]
        ahead: list[PushOutcome] = []
        failed: dict[str, str] = {}
        for p, fut in others:
            try:
                ahead.append(fut.result())
            except DrkitError as exc:
                failed[p.name] = str(exc)
                log.warning("archiving %s ahead failed (PostgreSQL will retry it): %s", p, exc)
        mark_done(path.parent, [o.name for o in ahead])
        target = own.result()  # raises: PostgreSQL retries this file
        report = PushReport(target, ahead, failed)
    note_pushed(repo, path.parent, [target.name, *(o.name for o in ahead)])
    report.seconds = time.monotonic() - started
    log.info(
        "%s %s (%d archived ahead) in %.2fs",
        path.name,
        report.target.status,
        len(report.ahead),
        report.seconds,
    )
    return report
