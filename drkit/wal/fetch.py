"""``drkit wal-fetch``: restore_command writes an archived WAL file where PostgreSQL asks.

The object is decoded into a temporary file next to the target and renamed over it, so
PostgreSQL never sees a partial segment; a missing object is ``False`` (exit 1).  An
object that exists but cannot be read or decoded is tried again a bounded number of
times, then fails (exit 1 too: PostgreSQL takes any failure as the end of the archive,
so a restore drkit drives gives recovery an explicit end and reads the fetch journal
this command keeps for it in ``pg_wal/.drkit-prefetch``).  After serving a segment, a
detached helper prefetches the next ones in parallel into ``pg_wal/.drkit-prefetch``;
the next call finds its segment there and only renames it.  A helper that fails leaves
nothing behind, so the foreground fetches (and reports) the segment itself.

The lean restore_command (:func:`fetch_lean`) serves a prefetched segment with nothing
of the storage stack loaded, or one from a plain ``file://`` repository a restore named
in the spool (``repo.json``) with no policy or pydantic; anything else takes the full
path (the storage modules are imported where a fetch needs them).  Neither imports
boto3 (unless the repository is ``s3://``) nor rich/typer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from drkit.errors import CheckFailed, DrkitError, ObjectNotFound, StorageError, UsageError
from drkit.wal.cluster import cluster_segment_size, env_int
from drkit.wal.commands import load_wal_policy, module_argv
from drkit.wal.names import (
    check_archivable,
    following_segments,
    is_segment,
    whole_segment_problem,
)

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.storage import Repository

log = logging.getLogger(__name__)

SPOOL_DIR = ".drkit-prefetch"
PREFETCH_ENV = "DRKIT_WAL_PREFETCH"
FETCH_JOBS_ENV = "DRKIT_WAL_FETCH_JOBS"
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
    from drkit.wal.keys import find_wal_key, open_wal_object

    def once() -> bool:
        key = find_wal_key(repo, name)
        return _install_key(key, lambda k: open_wal_object(repo, k), dest, name, segment_size)

    return with_retries(name, attempts, once)


def _install_key(
    key: str | None,
    opened: Callable[[str], AbstractContextManager[BinaryIO]],
    dest: Path,
    name: str,
    segment_size: int | None,
) -> bool:
    """Decode stored object ``key`` (``opened(key)``) into ``dest`` (:func:`_install`);
    False when there is no such object."""
    if key is None:
        return False
    try:
        with opened(key) as stream:
            _install(stream, dest, name, key, segment_size)
    except ObjectNotFound:  # deleted between head and get
        return False
    return True


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
    return env_int(FETCH_ATTEMPTS_ENV, DEFAULT_FETCH_ATTEMPTS)


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
    check_archivable(name)
    dest = Path(dest)
    if not dest.is_absolute():
        dest = Path.cwd() / dest
    spool = dest.parent / SPOOL_DIR
    count = prefetch if prefetch is not None else prefetch_count()
    if serve_prefetched(policy, policy_dir, name, dest, count):
        return True
    if repo is None:  # the policy's own repository: a copy's, seen through Policy.for_copy
        from drkit.storage import Repository

        repo = Repository.for_policy(policy)
    size = cluster_segment_size(dest) if is_segment(name) else None
    found = download(repo, name, dest, size, attempts=fetch_attempts())
    if found and is_segment(name):
        _start_prefetch(policy, policy_dir, spool, name, count, dest.stat().st_size)
    return found


def prefetch_count() -> int:
    """How many segments the helper fetches ahead of replay (0: none)."""
    return env_int(PREFETCH_ENV, DEFAULT_PREFETCH, minimum=0)


def serve_prefetched(
    policy: Policy | str,
    policy_dir: Path | str | None,
    name: str,
    dest: Path,
    count: int,
    repo: str | None = None,
) -> bool:
    """Rename segment ``name`` from the prefetch spool beside ``dest`` into place (waiting
    for a helper that is fetching it) and send the helper after the ones that follow;
    False when the spool does not hold it.  ``repo``: the copy the helper reads when
    ``policy`` is only the environment's name (a policy carries its own)."""
    spool = dest.parent / SPOOL_DIR
    if not (is_segment(name) and spool.is_dir()):
        return False
    _clean_spool(spool, name)
    if not _take_from_spool(spool, name, dest):
        return False
    log.info("%s served from the prefetch spool", name)
    _start_prefetch(policy, policy_dir, spool, name, count, dest.stat().st_size, repo)
    return True


def _start_prefetch(
    policy: Policy | str,
    policy_dir: Path | str | None,
    spool: Path,
    name: str,
    count: int,
    segment_size: int,
    repo: str | None = None,
) -> None:
    """Send a helper after the ``count`` segments following ``name``; ``segment_size`` is
    the size of ``name`` as served (checked whole), which fixes the names that follow.
    The helper reads the repository the foreground reads: ``policy``'s copy, or ``repo``
    when ``policy`` is only the environment's name."""
    env = policy if isinstance(policy, str) else policy.name
    if not isinstance(policy, str):
        repo = policy.copy_name
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
    _spawn_prefetch(env, str(Path(policy_dir).resolve()), spool, wanted, repo)


def _spawn_prefetch(
    env: str, policy_dir: str, spool: Path, wanted: list[str], repo: str | None
) -> None:
    copy = ["--repo", repo] if repo is not None else []
    try:
        spool.mkdir(exist_ok=True)
        subprocess.Popen(
            [*module_argv("drkit.wal"), "prefetch", *copy, env, policy_dir, str(spool), *wanted],
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
    segment_size = cluster_segment_size(spool.parent / "probe")

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


def run_prefetch(
    env: str, policy_dir: str, spool: str, names: list[str], repo: str | None = None
) -> int:
    """The detached helper: fetch ``names`` into ``spool`` from the primary repository
    or the copy ``repo``; 0, or 1 on any failure (the foreground fetches the segment
    itself then)."""
    hint = _read_repo_hint(Path(spool), repo)
    if hint is not None:  # plain file:// repository: no policy or storage stack needed
        return _prefetch_from_file_repo(hint, env, Path(spool), names)
    try:
        policy = load_wal_policy(env, policy_dir, repo)
        from drkit.storage import Repository

        source = Repository.for_policy(policy)
        prefetch_into(source, Path(spool), names, env_int(FETCH_JOBS_ENV, 4))
    except Exception:  # a background helper: nobody to tell, the foreground fetches anyway
        return 1
    return 0


def _prefetch_from_file_repo(hint: dict[str, str], env: str, spool: Path, names: list[str]) -> int:
    segment_size = cluster_segment_size(spool.parent / "probe")

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

    with ThreadPoolExecutor(max_workers=env_int(FETCH_JOBS_ENV, 4)) as pool:
        list(pool.map(one, names))
    return 0


def write_repo_hint(policy: Policy, pg_wal: Path) -> None:
    """Tell the lean restore_command where a plain ``file://`` repository is, and which
    one it is (the primary, or the copy ``policy`` was seen through): a fetch that names
    another takes the hint for none.

    Only for unencrypted ``file://`` repositories: then a fetch needs no policy, no
    pydantic and no storage stack, just the file and zstd.
    """
    root = policy.repository.local_root
    if root is None or policy.repository.encryption:
        return
    import json

    spool = pg_wal / SPOOL_DIR
    spool.mkdir(exist_ok=True)
    hint = {"file_root": str(root), "env": policy.name}
    if policy.copy_name is not None:
        hint["repo"] = policy.copy_name
    (spool / _REPO_HINT).write_text(json.dumps(hint))


def _read_repo_hint(spool: Path, repo: str | None) -> dict[str, str] | None:
    """The spool's ``file://`` repository when it is the one asked for (``repo``: a
    copy's name, None the primary), else None."""
    import json

    try:
        data = json.loads((spool / _REPO_HINT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "file_root" not in data or data.get("repo") != repo:
        return None
    return {str(k): str(v) for k, v in data.items()}


def _fetch_from_file_repo(
    hint: dict[str, str], env: str, name: str, dest: Path, segment_size: int | None
) -> bool:
    """:func:`download` from the plain ``file://`` repository ``hint`` names, without
    its policy: the same keys (no encrypted one: the hint is written only for unencrypted
    repositories), checks and decoding."""
    from drkit.storage import ENCODINGS, FileBackend, open_stored
    from drkit.wal.keys import WAL_DIR, candidate_keys, wal_integrity

    if hint.get("env") != env:
        raise UsageError(f"the prefetch spool belongs to environment {hint.get('env')!r}")
    backend = FileBackend(Path(hint["file_root"]))
    plain = [e for e in ENCODINGS if not e.encrypted]
    found = backend.first_existing(candidate_keys(f"{env}/{WAL_DIR}{name}", plain[0], plain))

    def opened(key: str) -> AbstractContextManager[BinaryIO]:
        return open_stored(backend, key, expected_sha256=wal_integrity(backend, key)[0])

    return _install_key(None if found is None else found.key, opened, dest, name, segment_size)


def fetch_lean(
    env: str, policy_dir: str, name: str, dest: Path, repo: str | None = None
) -> bool | None:
    """The lean restore_command: ``name`` served from the prefetch spool, or fetched from
    the plain ``file://`` repository the spool names (when it is the primary or the copy
    ``repo`` asked for), with no policy or storage stack loaded; None when neither
    applies (then the full path decides).  A segment found missing this way is recorded
    in the fetch journal."""
    count = prefetch_count()
    if serve_prefetched(env, policy_dir, name, dest, count, repo):
        return True
    spool = dest.parent / SPOOL_DIR
    hint = _read_repo_hint(spool, repo)
    if hint is None:
        return None
    size = cluster_segment_size(dest) if is_segment(name) else None
    found = with_retries(
        name, fetch_attempts(), lambda: _fetch_from_file_repo(hint, env, name, dest, size)
    )
    if found and is_segment(name):
        _start_prefetch(env, policy_dir, spool, name, count, dest.stat().st_size, repo)
    elif not found and is_segment(name):
        note_fetch(dest, name, "missing")
    return found
