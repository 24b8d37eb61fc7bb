"""Which cluster an environment's WAL archive belongs to: ``<repo>/<env>/identity.json``.

Every WAL file is pushed from a data directory (archive_command runs in it and gets
``pg_wal/NAME``), whose ``global/pg_control`` names the cluster: its *system identifier*,
set by initdb and kept by every copy of the cluster (standbys, base backups, a restore
with ``--archive-mode preserve``).  The first push records it in the repository with a
no-replace store (of two clusters racing, exactly one is recorded); every push — the
file archive_command was given, the ones archived ahead, the async worker's, history
files — is checked against it *before anything is stored*, and a file from another
cluster is refused (:class:`ForeignWal`, exit 1): nothing stored, no ``.done`` marker, so
PostgreSQL keeps retrying and ``pg_stat_archiver`` shows the failures.

The first record is checked against the newest physical backup of the environment:
where backups exist, the cluster archiving must be theirs (a repository used before the
record existed is bound to the cluster it holds backups of, not to whoever pushes first).

A different identifier is never accepted, whatever the reason: a fresh initdb is a new
cluster, whose WAL names collide with the old one's, so it needs its own environment or
repository prefix.  Removing ``identity.json`` is the explicit reset, for an archive
emptied on purpose.

The check costs no repository request per segment: a confirmed match is remembered for
:data:`CACHE_SECONDS` in memory and in ``pg_wal/.drkit-archive/identity-<repository>.json``
(inside pg_wal, which only the cluster's OS user writes), keyed by the cluster's system
identifier *now* and the repository, so a cache copied into another cluster's pg_wal, or
left from before a re-initdb, matches nothing.  A segment pushed from no data directory
(by hand, from a copy) is identified by its own first page header; a file with neither
(a history file copied out) is refused once the repository has an identity.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.errors import ObjectExists, ObjectNotFound, OperationError, StorageError
from drkit.wal.ack import SPOOL_ROOT, repository_key_of
from drkit.wal.cluster import ControlFileError, data_directory, system_identifier
from drkit.wal.names import LONG_HEADER_SIZE, is_segment, segment_system_identifier

if TYPE_CHECKING:
    from drkit.storage import Repository

log = logging.getLogger(__name__)

IDENTITY_RECORD = "identity.json"
#: how long a confirmed match is trusted before the repository is read again
CACHE_SECONDS = 60.0
_lock = threading.Lock()
_confirmed: dict[tuple[str, int], float] = {}  # (repository, system identifier) -> checked at


class ForeignWal(OperationError):
    """A WAL file from a cluster the repository's archive does not belong to (exit 1)."""


def cluster_identity(wal_path: Path) -> tuple[Path | None, int] | None:
    """(data directory, system identifier) of the cluster ``wal_path`` is pushed from:
    its data directory's pg_control; for a segment pushed from elsewhere (a copy), the
    identifier its own first page carries (no data directory then); None when neither."""
    directory = data_directory(wal_path)
    if directory is not None:
        try:
            sysid = system_identifier(directory)
        except ControlFileError as exc:
            raise OperationError(str(exc)) from None
        if sysid is not None:
            return directory, sysid
    if not is_segment(wal_path.name[:24]) or wal_path.name[24:] not in ("", ".partial"):
        return None
    try:
        with open(wal_path, "rb") as f:
            head = f.read(LONG_HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    sysid = segment_system_identifier(head, size)
    return None if sysid is None else (None, sysid)


def read_identity(repo: Repository) -> str | None:
    """The system identifier the environment's archive is bound to, or None."""
    try:
        doc = repo.get_json(IDENTITY_RECORD)
    except ObjectNotFound:
        return None
    value = doc.get("system_identifier")
    if not isinstance(value, str) or not value.isdigit():
        raise StorageError(
            f"{repo.key(IDENTITY_RECORD)} holds no system identifier: the archive's "
            "identity is unreadable; restore that file, or remove it to bind the archive "
            "to the next cluster that pushes"
        )
    return value


def record_identity(repo: Repository, sysid: int, source: str) -> str:
    """Bind the archive to ``sysid`` unless bound already; the identifier bound."""
    import io

    from drkit.catalog import list_backups

    physical = [m for m in list_backups(repo, "physical") if m.system_identifier]
    if physical and physical[-1].system_identifier != str(sysid):
        newest = physical[-1]
        raise ForeignWal(
            f"this server is PostgreSQL cluster {sysid} but the newest base backup in "
            f"{repo.location} ({newest.id}) is of cluster {newest.system_identifier}: "
            "nothing was stored. Give this cluster its own environment or repository prefix"
        )
    doc = {
        "system_identifier": str(sysid),
        "recorded_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": source,
    }
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    try:
        repo.backend.put_stream_new(repo.key(IDENTITY_RECORD), io.BytesIO(data))
    except ObjectExists:  # another push recorded one first: that one holds
        recorded = read_identity(repo)
        if recorded is None:
            raise StorageError(
                f"cannot record the archive's identity in {repo.key(IDENTITY_RECORD)}: it "
                "exists but cannot be read; PostgreSQL retries"
            ) from None
        return recorded
    log.info("bound the WAL archive of %s to cluster %d", repo.location, sysid)
    return str(sysid)


def _cache_file(data_dir: Path, repo: Repository) -> Path:
    key = repository_key_of(repo.config, repo.env)
    return data_dir / "pg_wal" / SPOOL_ROOT / f"identity-{key}.json"


def _fresh(checked: float | None) -> bool:
    return checked is not None and 0 <= time.time() - checked < CACHE_SECONDS


def _cached(path: Path, sysid: int) -> float | None:
    """When the match of ``sysid`` recorded in the cache ``path`` was confirmed."""
    try:
        doc = json.loads(path.read_text())
        checked = float(doc["checked_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return checked if doc.get("system_identifier") == str(sysid) else None


def _remember(path: Path, sysid: int) -> None:
    doc = {"system_identifier": str(sysid), "checked_at": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError as exc:  # only a cache: the next push reads the repository again
        log.debug("cannot write %s: %s", path, exc)


def check_identity(repo: Repository, wal_path: Path) -> None:
    """Refuse (:class:`ForeignWal`) a WAL file from a cluster other than the one the
    repository's archive belongs to, binding the archive on its first push."""
    found = cluster_identity(wal_path)
    if found is None:
        recorded = read_identity(repo)
        if recorded is not None:
            raise ForeignWal(
                f"{wal_path.name}: cannot tell which cluster it is from (no global/pg_control "
                f"beside its pg_wal or in the working directory, no WAL page header) and "
                f"{repo.location} archives cluster {recorded}: nothing was stored. Push it "
                "from its data directory"
            )
        return
    data_dir, sysid = found
    memo = (repository_key_of(repo.config, repo.env), sysid)
    cache = _cache_file(data_dir, repo) if data_dir is not None else None
    with _lock:  # the files of one push share one check
        if _fresh(_confirmed.get(memo)):
            return
        checked = _cached(cache, sysid) if cache is not None else None
        if checked is not None and _fresh(checked):
            _confirmed[memo] = checked
            return
        recorded = read_identity(repo)
        if recorded is None:
            source = f"wal-push from {data_dir or wal_path}"
            recorded = record_identity(repo, sysid, source)
        if recorded != str(sysid):
            raise ForeignWal(
                f"{wal_path.name}: this server is PostgreSQL cluster {sysid} but "
                f"{repo.location} archives cluster {recorded} ({repo.key(IDENTITY_RECORD)}): "
                "nothing was stored. Give this cluster its own environment or repository "
                "prefix (a new initdb is a new cluster; a restore with --archive-mode "
                "preserve keeps its identifier)"
            )
        _confirmed[memo] = time.time()
        if cache is not None:
            _remember(cache, sysid)
