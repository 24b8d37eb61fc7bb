"""WAL objects in a repository: where each lives (``<env>/wal/<name><suffix>``), how
its stored bytes are checked, and reading one back decoded.

Shared by push and fetch, the timeline record, base backups, PITR and the WAL chain
check, so that none of them imports another for a key.  A file may have been stored
under any encoding the policy had at the time, so a lookup tries the exact candidate
keys (current encoding first); it never lists ``wal/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from drkit.errors import CheckFailed, ObjectNotFound
from drkit.storage import ENCODINGS, Encoding, encoding_of

if TYPE_CHECKING:
    from collections.abc import Iterable
    from contextlib import AbstractContextManager

    from drkit.storage import Backend, Repository

#: the WAL directory below an environment's prefix
WAL_DIR = "wal/"


def wal_key(repo: Repository, name: str) -> str:
    """The repository key of WAL file ``name`` under the current encoding."""
    return repo.key(f"{WAL_DIR}{name}{repo.suffix}")


def candidate_keys(
    base: str, current: Encoding, encodings: Iterable[Encoding] = ENCODINGS
) -> list[str]:
    """Every key the object ``base`` (its key without suffixes) may be stored under: the
    ``current`` encoding first, then the others (a policy may have changed its
    compression or encryption since)."""
    first = base + current.suffix
    return [first, *(k for k in (base + e.suffix for e in encodings) if k != first)]


def wal_candidate_keys(repo: Repository, name: str) -> list[str]:
    """Every key ``name`` may be stored under: the current encoding first, then the others
    (a policy may have changed its compression or encryption since)."""
    return candidate_keys(repo.key(f"{WAL_DIR}{name}"), repo.encoding)


def find_wal_key(repo: Repository, name: str, *, expected: bool = True) -> str | None:
    """The stored key of ``name``, looked up by its exact candidate keys (never a listing
    of ``wal/``).  ``expected`` False: a push of a segment that is usually new."""
    info = repo.backend.first_existing(wal_candidate_keys(repo, name), expected=expected)
    return None if info is None else info.key


# ---------------------------------------------------------------------------
# The checksum file beside a WAL object that carries none of its own
# ---------------------------------------------------------------------------

#: appended to the key of a WAL object stored as is (uncompressed, unencrypted), whose
#: bytes carry no checksum: ``<key>.sha256`` holds one ``sha256sum`` line for it.  zstd
#: frames (written with their content checksum), gzip (CRC-32 and length) and age
#: (authenticated chunks) check themselves inside the object.  Kept in the repository,
#: the checksum survives any copy of it (``cp -r``, ``aws s3 sync``), which an extended
#: attribute or S3 user metadata does not.
CHECKSUM_SUFFIX = ".sha256"


def carries_own_checksum(key: str) -> bool:
    """Whether the stored bytes of WAL object ``key`` check themselves when decoded."""
    return encoding_of(key).checks_itself


def checksum_key(key: str) -> str:
    """The key of the checksum file of WAL object ``key``."""
    return key + CHECKSUM_SUFFIX


def checksum_line(key: str, hexdigest: str) -> bytes:
    """The checksum file's content: ``sha256sum``'s format (``sha256sum -c`` checks it
    in the object's directory)."""
    return f"{hexdigest}  {key.rsplit('/', 1)[-1]}\n".encode()


def parse_checksum_line(key: str, data: bytes) -> str:
    """The sha256 a checksum file of WAL object ``key`` holds; ValueError when it is not
    one line naming that object with 64 hex digits."""
    words = data.decode("ascii", "replace").split()
    if (
        len(words) != 2
        or words[1].lstrip("*") != key.rsplit("/", 1)[-1]
        or len(words[0]) != 64
        or any(c not in "0123456789abcdef" for c in words[0])
    ):
        raise ValueError(f"{checksum_key(key)} is not a sha256 line for {key}")
    return words[0]


# ---------------------------------------------------------------------------
# How each object's stored bytes are checked, and reading one back
# ---------------------------------------------------------------------------


#: how the stored bytes of a WAL object are checked as it is decoded (verify reports it)
CHECKED_BY_FILE = "sha256 file"
CHECKED_BY_ATTRIBUTE = "sha256 attribute (written before sha256 files)"
CHECKED_BY_SIZE = "size only (no checksum recorded)"


def read_checksum_file(backend: Backend, key: str) -> str | None:
    """The sha256 recorded in the checksum file of WAL object ``key``; None without one.
    A checksum file that is not a sha256 line for ``key`` fails (CheckFailed)."""
    try:
        data = backend.get_bytes(checksum_key(key))
    except ObjectNotFound:
        return None
    try:
        return parse_checksum_line(key, data)
    except ValueError as exc:
        raise CheckFailed(f"{exc}: the checksum file is damaged") from None


def wal_integrity(backend: Backend, key: str) -> tuple[str | None, str]:
    """(sha256 the stored bytes must have, how they are checked) for WAL object ``key``.

    An object that checks itself (zstd, gzip, age) needs no digest.  One stored as is is
    checked against its checksum file; objects written by earlier versions have none and
    fall back to the digest kept on the object itself (file:// extended attribute, S3
    user metadata), or, where a copy lost that too, to the decoded size alone."""
    encoding = encoding_of(key)
    if encoding.checks_itself:
        return None, encoding.self_check
    recorded = read_checksum_file(backend, key)
    if recorded is not None:
        return recorded, CHECKED_BY_FILE
    legacy = backend.stored_sha256(key)
    if legacy is not None:
        return legacy, CHECKED_BY_ATTRIBUTE
    return None, CHECKED_BY_SIZE


def write_checksum_file(backend: Backend, key: str, hexdigest: str) -> None:
    """Record ``hexdigest`` (of the bytes stored under ``key``) in its checksum file."""
    backend.put_bytes(checksum_key(key), checksum_line(key, hexdigest))


def open_wal_object(
    repo: Repository, key: str, integrity: tuple[str | None, str] | None = None
) -> AbstractContextManager[BinaryIO]:
    """Stream WAL object ``key`` decoded; damage raises CheckFailed by the end of the
    stream.  ``integrity``: :func:`wal_integrity` of ``key``, when already known."""
    expected = (integrity or wal_integrity(repo.backend, key))[0]
    return repo.open_key(key, expected_sha256=expected)


# ---------------------------------------------------------------------------
# Streamed partial segments (drkit wal-receive), beside the archive
# ---------------------------------------------------------------------------

#: where ``drkit wal-receive`` stores the segment it is receiving, apart from ``wal/``:
#: the archive's names are stored at most once, and a partial segment grows
STREAM_DIR = "stream/"
_PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.partial$")


@dataclass(frozen=True)
class StoredPartial:
    """One stored copy of a segment being streamed: its first ``end`` bytes are WAL."""

    segment: str
    end: int
    key: str
    modified: datetime


def partial_name(segment: str, end: int) -> str:
    """``<segment>.<end, 8 hex digits>.partial``: each copy of a growing segment under a
    name of its own, so none is ever overwritten and the longest is the newest."""
    return f"{segment}.{end:08X}.partial"


def stored_partials(repo: Repository) -> list[StoredPartial]:
    """Every partial segment stored under ``stream/``, oldest (segment, end) first."""
    from drkit.storage import plain_name

    found = []
    for info in repo.list(STREAM_DIR):
        match = _PARTIAL_RE.match(plain_name(info.key))
        if match is not None:
            found.append(
                StoredPartial(match.group(1), int(match.group(2), 16), info.key, info.modified)
            )
    return sorted(found, key=lambda p: (p.segment[8:], p.segment[:8], p.end))


def write_partial(repo: Repository, partial: StoredPartial, dest: Path, segment_size: int) -> None:
    """Write the stored partial copy decoded to ``dest``, zero-filled to a whole segment
    (as pg_receivewal writes one), so replay and pg_waldump read it as the segment;
    damage raises CheckFailed and leaves nothing at ``dest``.

    The receiver removes a copy once a longer one, or the whole segment, is stored: a
    copy gone since it was planned is replaced by what superseded it, which holds all
    of it (the WAL of a segment only grows), never by anything shorter."""
    key = _superseding(repo, partial)
    tmp = dest.with_name(f".{dest.name}.partial-tmp")
    try:
        with open_wal_object(repo, key) as stream, open(tmp, "wb") as out:
            written = 0
            while chunk := stream.read(1024 * 1024):
                out.write(chunk)
                written += len(chunk)
            if written < partial.end or written > segment_size:
                raise CheckFailed(
                    f"{key} holds {written} bytes, not a partial segment of "
                    f"{segment_size} reaching {partial.end}"
                )
            out.truncate(segment_size)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def _superseding(repo: Repository, partial: StoredPartial) -> str:
    """The key holding at least ``partial``'s WAL: itself, else a longer copy of its
    segment, else the whole segment; ObjectNotFound when none is stored."""
    if repo.backend.head(partial.key) is not None:
        return partial.key
    longer = [
        p for p in stored_partials(repo) if p.segment == partial.segment and p.end >= partial.end
    ]
    if longer:
        return max(longer, key=lambda p: p.end).key
    whole = find_wal_key(repo, partial.segment)
    if whole is None:
        raise ObjectNotFound(
            f"{partial.key} was removed and neither a longer copy nor the whole segment "
            f"{partial.segment} is stored: run the restore again"
        )
    return whole
