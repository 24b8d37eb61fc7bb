"""``drkit wal-push`` (archive_command) and ``drkit wal-fetch`` (restore_command).

**Push.**  A segment goes to ``<repo>/<env>/wal/<name>.zst`` through the repository's
encoding (compression, later encryption); the call succeeds only once the object is
stored and its size read back.  To keep up with a busy server without a Python start per
segment, a push also takes the other files PostgreSQL has marked ``.ready`` in
``pg_wal/archive_status`` (history files first, then oldest first, up to a batch),
uploads them in parallel, and renames each one's ``.ready`` to ``.done`` *after* it is
stored — the same marker PostgreSQL's archiver writes, so it never calls the
archive_command for them again (WAL-G's background uploader does the same).  A file
whose upload failed keeps its ``.ready`` and is retried by PostgreSQL as usual.

An object that already exists is compared with the local file (decoded, sha256): same
content → success; different content → :class:`WalConflict` (exit 1) and nothing is
overwritten: two clusters are archiving into one repository.  Before any of that, every
file — its own, those archived ahead — is checked against the cluster the archive
belongs to (drkit/wal_identity.py): another cluster's is refused and nothing is stored.

An object stored as is (``compression: none``, unencrypted) carries no checksum of its
own: its sha256 goes into a ``<key>.sha256`` file beside it before the push is
acknowledged, so a copy of the repository without extended attributes or S3 metadata
still checks it.  zstd, gzip and age objects check themselves.

**Fetch.**  The object is decoded into a temporary file next to the target and renamed
over it, so PostgreSQL never sees a partial segment; a missing object is ``False``
(exit 1).  An object that exists but cannot be read or decoded is tried again a bounded
number of times, then fails (exit 1 too: PostgreSQL takes any failure as the end of the
archive, so a restore drkit drives gives recovery an explicit end and reads the fetch
journal this command keeps for it in ``pg_wal/.drkit-prefetch``).  After serving a
segment, a detached helper prefetches the next ones in parallel into
``pg_wal/.drkit-prefetch``; the next call finds its segment there and only renames it.
A helper that fails leaves nothing behind, so the foreground fetches (and reports) the
segment itself.

The hot path imports neither boto3 (unless the repository is ``s3://``) nor rich/typer.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from drkit.errors import (
    CheckFailed,
    DrkitError,
    ObjectExists,
    ObjectNotFound,
    OperationError,
    StorageError,
    UsageError,
)
from drkit.timelines import note_pushed  # production's timeline, unless a restore test
from drkit.wal_identity import check_identity

# where WAL objects live: drkit/wal_keys.py (shared with timelines); re-exported here
from drkit.wal_keys import WAL_DIR as WAL_DIR
from drkit.wal_keys import (
    carries_own_checksum,
    checksum_key,
    checksum_line,
    parse_checksum_line,
)
from drkit.wal_keys import find_wal_key as find_wal_key
from drkit.wal_keys import wal_candidate_keys as wal_candidate_keys
from drkit.wal_keys import wal_key as wal_key
from drkit.wal_names import (
    following_segments,
    is_archivable,
    is_segment,
    is_valid_segment_size,
    segment_size_from_control,
)
from drkit.walack import sha256_file

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage.repository import Repository

log = logging.getLogger(__name__)

SPOOL_DIR = ".drkit-prefetch"
PUSH_JOBS_ENV = "DRKIT_WAL_PUSH_JOBS"
PUSH_BATCH_ENV = "DRKIT_WAL_PUSH_BATCH"
PREFETCH_ENV = "DRKIT_WAL_PREFETCH"
FETCH_JOBS_ENV = "DRKIT_WAL_FETCH_JOBS"
DEFAULT_PUSH_BATCH = 64
DEFAULT_PREFETCH = 8
_INPROGRESS = ".inprogress"
_MISSING = ".missing"
_MISSING_TTL = 10.0
_REPO_HINT = "repo.json"
FETCH_JOURNAL = "fetch-journal"
FETCH_ATTEMPTS_ENV = "DRKIT_WAL_FETCH_ATTEMPTS"
DEFAULT_FETCH_ATTEMPTS = 3
#: seconds before the first retry of a failed fetch, doubling for each further one
FETCH_RETRY_DELAY = 0.5
_STALE_MARKER_SECONDS = 120.0


class WalConflict(OperationError):
    """The archive holds a different file under this WAL name (exit 1)."""


class WalRejected(OperationError):
    """A file handed to wal-push is not what its name says (exit 1)."""


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    try:
        return max(minimum, int(os.environ.get(name, "")))
    except ValueError:
        return default


def load_wal_policy(env: str, policy_dir: Path | str | None = None) -> Policy:
    """The policy, validated, without needing its database URL.

    archive_command and restore_command run in PostgreSQL's environment, which has no
    reason to hold the database password; only the repository section is used.
    """
    from drkit.config import load_policy, parse_policy, policy_path, read_yaml
    from drkit.errors import PolicyError

    path = policy_path(env, policy_dir)
    if not path.exists():
        return load_policy(env, policy_dir)  # raises the usual "no policy" error
    raw = read_yaml(path, PolicyError)
    if isinstance(raw, dict) and "database" in raw:
        raw = {**raw, "database": {"url": "postgresql:///unused-by-wal-commands"}}
    return parse_policy(env, raw, str(path))


def _check_name(name: str) -> None:
    if not is_archivable(name):
        raise UsageError(
            f"{name!r} is not a WAL file name (24 hex digits, NNNNNNNN.history, "
            "*.backup or *.partial)"
        )


# ---------------------------------------------------------------------------
# Decoding objects whatever encoding they were stored with
# ---------------------------------------------------------------------------


def _encoding_of(key: str) -> tuple[str, bool]:
    """(compression, encrypted) from a stored key's suffixes."""
    encrypted = key.endswith(".age")
    base = key[: -len(".age")] if encrypted else key
    if base.endswith(".zst"):
        return "zstd", encrypted
    if base.endswith(".gz"):
        return "gzip", encrypted
    return "none", encrypted


#: how the stored bytes of a WAL object are checked as it is decoded (verify reports it)
CHECKED_BY_FILE = "sha256 file"
CHECKED_BY_ATTRIBUTE = "sha256 attribute (written before sha256 files)"
CHECKED_BY_SIZE = "size only (no checksum recorded)"
_SELF_CHECKED = {
    ("zstd", True): "age authentication + zstd frame checksum",
    ("gzip", True): "age authentication + gzip CRC-32",
    ("none", True): "age authentication",
    ("zstd", False): "zstd frame checksum",
    ("gzip", False): "gzip CRC-32",
}


def read_checksum_file(repo: Repository, key: str) -> str | None:
    """The sha256 recorded in the checksum file of WAL object ``key``; None without one.
    A checksum file that is not a sha256 line for ``key`` fails (CheckFailed)."""
    try:
        data = repo.backend.get_bytes(checksum_key(key))
    except ObjectNotFound:
        return None
    try:
        return parse_checksum_line(key, data)
    except ValueError as exc:
        raise CheckFailed(f"{exc}: the checksum file is damaged") from None


def wal_integrity(repo: Repository, key: str) -> tuple[str | None, str]:
    """(sha256 the stored bytes must have, how they are checked) for WAL object ``key``.

    An object that checks itself (zstd, gzip, age) needs no digest.  One stored as is is
    checked against its checksum file; objects written by earlier versions have none and
    fall back to the digest kept on the object itself (file:// extended attribute, S3
    user metadata), or, where a copy lost that too, to the decoded size alone."""
    compression, encrypted = _encoding_of(key)
    if carries_own_checksum(key):
        return None, _SELF_CHECKED[(compression, encrypted)]
    recorded = read_checksum_file(repo, key)
    if recorded is not None:
        return recorded, CHECKED_BY_FILE
    legacy = repo.backend.stored_sha256(key)
    if legacy is not None:
        return legacy, CHECKED_BY_ATTRIBUTE
    return None, CHECKED_BY_SIZE


def write_checksum_file(repo: Repository, key: str, hexdigest: str) -> None:
    """Record ``hexdigest`` (of the bytes stored under ``key``) in its checksum file."""
    repo.backend.put_bytes(checksum_key(key), checksum_line(key, hexdigest))


@contextlib.contextmanager
def open_wal_object(
    repo: Repository, key: str, integrity: tuple[str | None, str] | None = None
) -> Any:
    """Stream WAL object ``key`` decoded; damage raises CheckFailed by the end of the
    stream.  ``integrity``: :func:`wal_integrity` of ``key``, when already known."""
    from drkit.streams import ChecksumReader, decompress

    compression, encrypted = _encoding_of(key)
    expected = (integrity or wal_integrity(repo, key))[0]
    raw = repo.backend.open_read(key)
    decryptor = None
    try:
        stream: BinaryIO = raw
        if expected is not None:
            stream = cast(BinaryIO, ChecksumReader(raw, expected, key))
        if encrypted:
            from drkit import crypto

            identities = repo.config.encryption.identities() if repo.config.encryption else []
            decryptor = crypto.decrypt_stream(stream, identities, name=key)
            stream = decryptor.reader
        yield decompress(stream, compression, name=key)
        if decryptor is not None:
            decryptor.finish()
    finally:
        if decryptor is not None:
            decryptor.abort()
        raw.close()


def cluster_segment_size(wal_path: Path) -> int | None:
    """The WAL segment size of the cluster ``wal_path`` belongs to, from its pg_control.

    ``wal_path`` is ``<pgdata>/pg_wal/<file>`` (or in the prefetch spool below it); else
    the current directory is tried (archive_command and restore_command run in the data
    directory).  None when neither is a data directory.  An unreadable or unparsable
    pg_control fails: nothing is checked against a guess.
    """
    parent = wal_path.parent
    if parent.name == SPOOL_DIR:
        parent = parent.parent
    candidates = [parent.parent] if parent.name == "pg_wal" else []
    candidates.append(Path.cwd())
    for data_dir in dict.fromkeys(candidates):
        control = data_dir / "global" / "pg_control"
        try:
            data = control.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise OperationError(
                f"cannot read {control} for the cluster's WAL segment size: {exc.strerror}"
            ) from None
        try:
            return segment_size_from_control(data)
        except ValueError as exc:
            raise OperationError(f"{control}: {exc}") from None
    return None


def whole_segment_problem(name: str, size: int, segment_size: int | None) -> str | None:
    """Why a WAL file of ``size`` bytes cannot be segment ``name``, or None when it can: a
    segment must be exactly the cluster's segment size (any size PostgreSQL allows, when
    the cluster's is unknown).  History, ``.partial`` and ``.backup`` files are not sized."""
    if not is_segment(name):
        return None
    if segment_size is not None and size == segment_size:
        return None
    if segment_size is None and is_valid_segment_size(size):
        return None
    expected = (
        f"{segment_size} bytes in this cluster"
        if segment_size is not None
        else "a power of two from 1 MiB to 1 GiB"
    )
    return f"{size} bytes is not a whole WAL segment ({expected})"


def _sha256_object(repo: Repository, key: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open_wal_object(repo, key) as stream:
        while chunk := stream.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# ---------------------------------------------------------------------------
# wal-push
# ---------------------------------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.target.name,
            "status": self.target.status,
            "stored_size": self.target.stored_size,
            "raw_size": self.target.raw_size,
            "archived_ahead": [o.name for o in self.ahead],
            "ahead_failed": self.ahead_failed,
            "seconds": round(self.seconds, 3),
            "stored_size_bytes": self.target.stored_size,
            "raw_size_bytes": self.target.raw_size,
            "duration_seconds": round(self.seconds, 3),
        }


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
        write_checksum_file(repo, obj.key, obj.sha256)
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
        if not carries_own_checksum(existing) and read_checksum_file(repo, existing) is None:
            write_checksum_file(repo, existing, local_sha)  # stored as is: same bytes
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
    _check_name(path.name)
    if not path.is_file():
        raise OperationError(f"{path}: no such WAL file to archive")
    if repo is None:
        from drkit.storage.repository import Repository

        repo = Repository.for_wal(policy)
    repo.check_encryption_available()
    # the files archived ahead come from the same pg_wal: another cluster's push fails
    # here, once, before any of them is looked at (push_file checks each one again)
    check_identity(repo, path)
    segment_size = cluster_segment_size(path)
    s3 = policy.repository.url.startswith("s3://")
    jobs = jobs or _env_int(PUSH_JOBS_ENV, 8 if s3 else max(2, os.cpu_count() or 1))
    if batch is None:  # 0 turns archiving ahead off
        batch = _env_int(PUSH_BATCH_ENV, DEFAULT_PUSH_BATCH, minimum=0)
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


# ---------------------------------------------------------------------------
# wal-fetch
# ---------------------------------------------------------------------------


def download(
    repo: Repository,
    name: str,
    dest: Path,
    segment_size: int | None = None,
    *,
    attempts: int = 1,
) -> bool:
    """Decode WAL file ``name`` into ``dest`` atomically; False when it is not archived.

    A segment must decode to ``segment_size`` bytes (any allowed size when None).  An
    object that exists but cannot be read or decoded (a storage error, a checksum or
    decompression error) is tried ``attempts`` times in all, then raises: it is never
    "not archived"."""

    def once() -> bool:
        key = find_wal_key(repo, name)
        if key is None:
            return False
        try:
            with open_wal_object(repo, key) as stream:
                _install(stream, dest, name, key, segment_size)
        except ObjectNotFound:  # deleted between head and get
            return False
        return True

    return with_retries(name, attempts, once)


def with_retries(name: str, attempts: int, fetch: Callable[[], bool]) -> bool:
    """``fetch()`` of WAL file ``name``, again after a failure (storage, checksum or
    decoding error) until ``attempts`` tries failed; one log line per retry."""
    from drkit.redact import mask_url

    attempt = 1
    while True:
        try:
            return fetch()
        except (CheckFailed, StorageError) as exc:
            if attempt >= attempts:
                raise
            delay = FETCH_RETRY_DELAY * 2 ** (attempt - 1)
            log.warning(
                "wal-fetch %s: attempt %d of %d failed (%s); retrying in %.1fs",
                name,
                attempt,
                attempts,
                mask_url(str(exc)),
                delay,
            )
            time.sleep(delay)
            attempt += 1


def fetch_attempts() -> int:
    """How many times the foreground wal-fetch tries an object that fails to read."""
    return _env_int(FETCH_ATTEMPTS_ENV, DEFAULT_FETCH_ATTEMPTS)


# -- the fetch journal: what a restore drkit drives learns from its restore_command --


def start_fetch_journal(pg_wal: Path) -> Path:
    """Create (empty) the journal in which wal-fetch records, for the recovery of this
    data directory, every segment it found missing and every file it failed to serve.

    PostgreSQL reads a failed restore_command as the end of the archive; drkit reads the
    journal to tell a real end from a failure.  wal-fetch appends to it only when it
    exists, so a server drkit does not drive (a standby asking every few seconds) never
    grows one."""
    spool = pg_wal / SPOOL_DIR
    spool.mkdir(exist_ok=True)
    journal = spool / FETCH_JOURNAL
    journal.write_bytes(b"")
    return journal


@dataclass(frozen=True)
class FetchOutcome:
    """One line of the fetch journal: ``name`` was ``missing`` or ``failed`` (detail)."""

    name: str
    outcome: str
    detail: str = ""


def read_fetch_journal(pg_wal: Path) -> list[FetchOutcome]:
    try:
        text = (pg_wal / SPOOL_DIR / FETCH_JOURNAL).read_text(errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        name, _, rest = line.partition("\t")
        outcome, _, detail = rest.partition("\t")
        if name and outcome:
            found.append(FetchOutcome(name, outcome, detail))
    return found


def note_fetch(dest: Path, name: str, outcome: str, detail: str = "") -> None:
    """Append one outcome to the fetch journal beside ``dest`` (only if it exists)."""
    from drkit.redact import mask_url

    journal = dest.parent / SPOOL_DIR / FETCH_JOURNAL
    text = " ".join(mask_url(detail).split())[:1000]
    try:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND)  # never created here
    except OSError:
        return
    try:
        os.write(fd, f"{name}\t{outcome}\t{text}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _install(stream: BinaryIO, dest: Path, name: str, key: str, segment_size: int | None) -> None:
    """Write decoded WAL ``stream`` beside ``dest`` and rename it into place once whole
    (a segment must decode to a whole segment of the cluster's size); nothing is left
    behind on error."""
    tmp = dest.with_name(f".{dest.name}.drkit-{os.getpid()}-{os.urandom(4).hex()}")
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := stream.read(1024 * 1024):
                out.write(chunk)
                size += len(chunk)
        problem = whole_segment_problem(name, size, segment_size)
        if problem is not None:
            raise CheckFailed(f"{key}: decodes to {problem}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _take_from_spool(spool: Path, name: str, dest: Path, wait: float = 60.0) -> bool:
    ready = spool / name
    marker = spool / f"{name}{_INPROGRESS}"
    deadline = time.monotonic() + wait
    while True:
        try:
            os.replace(ready, dest)
            return True
        except FileNotFoundError:
            pass
        try:
            age = time.time() - marker.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > _STALE_MARKER_SECONDS or time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _clean_spool(spool: Path, served: str) -> None:
    """Drop prefetched segments older than the one just served (replay moved past them)."""
    try:
        entries = list(os.scandir(spool))
    except FileNotFoundError:
        return
    for entry in entries:
        base = entry.name[:24]
        if is_segment(base) and base[8:] < served[8:] and not entry.name.endswith(_INPROGRESS):
            # segments and .missing markers replay has moved past
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def fetch_wal(
    policy: Policy,
    name: str,
    dest: Path | str,
    *,
    repo: Repository | None = None,
    prefetch: int | None = None,
    policy_dir: Path | str | None = None,
) -> bool:
    """restore_command: write ``name`` to ``dest``; False when the archive lacks it."""
    _check_name(name)
    dest = Path(dest)
    if not dest.is_absolute():
        dest = Path.cwd() / dest
    spool = dest.parent / SPOOL_DIR
    count = (
        prefetch if prefetch is not None else _env_int(PREFETCH_ENV, DEFAULT_PREFETCH, minimum=0)
    )
    if is_segment(name) and spool.is_dir():
        _clean_spool(spool, name)
        if _take_from_spool(spool, name, dest):
            log.info("%s served from the prefetch spool", name)
            _start_prefetch(policy, policy_dir, spool, name, count, dest.stat().st_size)
            return True
    if repo is None:
        from drkit.storage.repository import Repository

        repo = Repository.for_policy(policy)
    size = cluster_segment_size(dest) if is_segment(name) else None
    found = download(repo, name, dest, size, attempts=fetch_attempts())
    if found and is_segment(name):
        _start_prefetch(policy, policy_dir, spool, name, count, dest.stat().st_size)
    return found


def _start_prefetch(
    policy: Policy | str,
    policy_dir: Path | str | None,
    spool: Path,
    name: str,
    count: int,
    segment_size: int,
) -> None:
    """Send a helper after the ``count`` segments following ``name``; ``segment_size`` is
    the size of ``name`` as served (checked whole), which fixes the names that follow."""
    env = policy if isinstance(policy, str) else policy.name
    if count <= 0:
        return
    now = time.time()

    def recently_missing(n: str) -> bool:
        try:
            return now - (spool / f"{n}{_MISSING}").stat().st_mtime < _MISSING_TTL
        except FileNotFoundError:
            return False

    wanted = [
        n
        for n in following_segments(name, count, segment_size)
        if not (spool / n).exists()
        and not (spool / f"{n}{_INPROGRESS}").exists()
        and not recently_missing(n)
    ]
    if len(wanted) < max(1, count // 2):  # still half a window ahead: no new helper yet
        return
    if policy_dir is None:
        from drkit.config import resolve_policy_dir

        policy_dir = resolve_policy_dir(None)
    _spawn_prefetch(env, str(Path(policy_dir).resolve()), spool, wanted)


def module_argv(module: str) -> list[str]:
    """The argv that starts drkit's ``module`` as this process was started: through the
    runtime's checked launcher when PostgreSQL started it so (see drkit.walcmd), else
    ``python -m``."""
    launcher = getattr(sys, "drkit_launcher", None)
    if isinstance(launcher, list) and launcher:
        return [*launcher, module]
    return [sys.executable, "-m", module]


def _spawn_prefetch(env: str, policy_dir: str, spool: Path, wanted: list[str]) -> None:
    try:
        spool.mkdir(exist_ok=True)
        subprocess.Popen(
            [*module_argv("drkit.wal"), "prefetch", env, policy_dir, str(spool), *wanted],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:  # prefetching is an optimisation; never fail the fetch for it
        log.warning("could not start WAL prefetch: %s", exc)


def prefetch_into(repo: Repository, spool: Path, names: list[str], jobs: int) -> list[str]:
    """Fetch ``names`` into ``spool`` in parallel; returns those that were archived."""
    spool.mkdir(exist_ok=True)
    segment_size = cluster_segment_size(spool / "probe")

    def one(name: str) -> bool:
        if (spool / name).exists():
            return True
        marker = spool / f"{name}{_INPROGRESS}"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        os.close(fd)
        try:
            found = download(repo, name, spool / name, segment_size)
            if not found:  # not archived (yet): don't send a helper after it again at once
                (spool / f"{name}{_MISSING}").write_text("")
            return found
        except DrkitError as exc:
            log.warning("prefetch of %s failed: %s", name, exc)
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, names))
    return [n for n, ok in zip(names, results, strict=True) if ok]


def _prefetch_main(argv: list[str]) -> int:
    env, policy_dir, spool, *names = argv
    hint = _read_repo_hint(Path(spool))
    if hint is not None:  # plain file:// repository: no policy or storage stack needed
        return _prefetch_from_file_repo(hint, env, Path(spool), names)
    try:
        policy = load_wal_policy(env, policy_dir)
        from drkit.storage.repository import Repository

        repo = Repository.for_policy(policy)
        prefetch_into(repo, Path(spool), names, _env_int(FETCH_JOBS_ENV, 4))
    except Exception:  # a background helper: nobody to tell, the foreground fetches anyway
        return 1
    return 0


def run_fetch(
    load: Callable[[], Policy], name: str, dest: Path | str, policy_dir: Path | str | None
) -> tuple[int, str]:
    """wal-fetch for the command line: (exit code, message); never raises.

    0 fetched, 1 not archived or failed.  PostgreSQL treats an exit above 125 or a
    death by signal as fatal, so nothing here may produce one.
    """
    import signal

    with contextlib.suppress(ValueError, OSError):  # not in the main thread
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    message = ""
    try:
        found = fetch_wal(load(), name, dest, policy_dir=policy_dir)
    except DrkitError as exc:
        message = str(exc)
    except KeyboardInterrupt:
        message = "interrupted"
    except Exception as exc:
        message = f"internal error: {type(exc).__name__}: {exc}"
    if message:
        note_fetch(Path(dest), name, "failed", message)
        return 1, message
    if not found and is_segment(name):
        note_fetch(Path(dest), name, "missing")
    return (0, "") if found else (1, "")


def _prefetch_from_file_repo(hint: dict[str, str], env: str, spool: Path, names: list[str]) -> int:
    segment_size = cluster_segment_size(spool / "probe")

    def one(name: str) -> None:
        marker = spool / f"{name}{_INPROGRESS}"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        os.close(fd)
        try:
            if not _fetch_from_file_repo(hint, env, name, spool / name, segment_size):
                (spool / f"{name}{_MISSING}").write_text("")
        except Exception:  # the foreground fetches it itself
            return
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    with ThreadPoolExecutor(max_workers=_env_int(FETCH_JOBS_ENV, 4)) as pool:
        list(pool.map(one, names))
    return 0


def write_repo_hint(policy: Policy, pg_wal: Path) -> None:
    """Tell the lean restore_command where a plain ``file://`` repository is.

    Only for unencrypted ``file://`` repositories: then a fetch needs no policy, no
    pydantic and no storage stack, just the file and zstd.
    """
    if not policy.repository.url.startswith("file://") or policy.repository.encryption:
        return
    import json

    from drkit.storage.file import FileBackend

    spool = pg_wal / SPOOL_DIR
    spool.mkdir(exist_ok=True)
    root = FileBackend.from_url(policy.repository.url).root
    (spool / _REPO_HINT).write_text(json.dumps({"file_root": str(root), "env": policy.name}))


def _read_repo_hint(spool: Path) -> dict[str, str] | None:
    import json

    try:
        data = json.loads((spool / _REPO_HINT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "file_root" not in data:
        return None
    return {str(k): str(v) for k, v in data.items()}


def _fetch_from_file_repo(
    hint: dict[str, str], env: str, name: str, dest: Path, segment_size: int | None
) -> bool:
    from drkit.storage.file import FileBackend
    from drkit.streams import ChecksumReader, decompress

    if hint.get("env") != env:
        raise UsageError(f"the prefetch spool belongs to environment {hint.get('env')!r}")
    backend = FileBackend(Path(hint["file_root"]))
    wal_dir = backend.root / env / "wal"
    for suffix, algorithm in ((".zst", "zstd"), (".gz", "gzip"), ("", "none")):
        key = f"{env}/wal/{name}{suffix}"
        if not (wal_dir / f"{name}{suffix}").is_file():
            continue
        expected = None
        if algorithm == "none":  # stored as is: its checksum file, else (older) its xattr
            try:
                expected = parse_checksum_line(key, (wal_dir / f"{name}.sha256").read_bytes())
            except FileNotFoundError:
                expected = backend.stored_sha256(key)
            except ValueError as exc:
                raise CheckFailed(f"{exc}: the checksum file is damaged") from None
        try:
            raw = backend.open_read(key)
        except ObjectNotFound:  # removed since the look-up
            return False
        with raw:
            stream: BinaryIO = raw
            if expected is not None:
                stream = cast(BinaryIO, ChecksumReader(raw, expected, key))
            _install(decompress(stream, algorithm, name=key), dest, name, key, segment_size)
        return True
    return False


def fetch_main(argv: list[str]) -> int:
    """``python -m drkit.wal fetch ENV NAME PATH POLICY_DIR``: the restore_command drkit writes.

    The same as ``drkit wal-fetch``, minus the command-line framework: a segment already
    in the prefetch spool is renamed into place without loading the policy or any storage
    library, so replay is not held up by interpreter start-up.
    """
    env, name, dest, policy_dir = argv
    target = Path(dest)
    try:
        import signal

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if not target.is_absolute():
            target = Path.cwd() / target
        spool = target.parent / SPOOL_DIR
        count = _env_int(PREFETCH_ENV, DEFAULT_PREFETCH, minimum=0)
        if is_segment(name) and spool.is_dir():
            _clean_spool(spool, name)
            if _take_from_spool(spool, name, target):
                _start_prefetch(env, policy_dir, spool, name, count, target.stat().st_size)
                return 0
        hint = _read_repo_hint(spool)
        if hint is not None:  # a plain file:// repository: no policy, no storage stack
            size = cluster_segment_size(target) if is_segment(name) else None
            found = with_retries(
                name,
                fetch_attempts(),
                lambda: _fetch_from_file_repo(hint, env, name, target, size),
            )
            if found and is_segment(name):
                _start_prefetch(env, policy_dir, spool, name, count, target.stat().st_size)
            elif not found and is_segment(name):
                note_fetch(target, name, "missing")
            return 0 if found else 1
    except KeyboardInterrupt:
        note_fetch(target, name, "failed", "interrupted")
        return 1
    except Exception as exc:
        from drkit.redact import mask_url

        note_fetch(target, name, "failed", str(exc))
        sys.stderr.write(f"drkit: wal-fetch {name}: {mask_url(str(exc))}\n")
        return 1
    code, message = run_fetch(lambda: load_wal_policy(env, policy_dir), name, dest, policy_dir)
    if message:
        from drkit.config import mask_url

        sys.stderr.write(f"drkit: wal-fetch {name}: {mask_url(message)}\n")
    return code


if __name__ == "__main__":  # pragma: no cover - entry points for PostgreSQL and the helper
    if sys.argv[1:] == ["probe"]:  # drkit.walcmd: the cluster's OS user can import this
        raise SystemExit(0)
    if len(sys.argv) >= 5 and sys.argv[1] == "prefetch":
        raise SystemExit(_prefetch_main(sys.argv[2:]))
    if len(sys.argv) == 6 and sys.argv[1] == "fetch":
        raise SystemExit(fetch_main(sys.argv[2:]))
    raise SystemExit(2)
