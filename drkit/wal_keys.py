"""Where WAL files live in a repository: ``<env>/wal/<name><suffix>``, and finding one.

Shared by ``wal-push``/``wal-fetch`` (drkit/wal.py), the timeline record
(drkit/timelines.py), base backups, PITR and the WAL chain check, so that none of them
imports another for a key.  A file may have been stored under any encoding the policy
had at the time, so a lookup tries the exact candidate keys (current encoding first);
it never lists ``wal/``.  No import here beyond the standard library at run time: the
WAL commands' hot path stays lean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drkit.storage.repository import Repository

#: the WAL directory below an environment's prefix
WAL_DIR = "wal/"
#: the compression suffixes a WAL object may carry (each possibly followed by ``.age``)
KNOWN_SUFFIXES = (".zst", ".gz", "")


def wal_key(repo: Repository, name: str) -> str:
    """The repository key of WAL file ``name`` under the current encoding."""
    return repo.key(f"{WAL_DIR}{name}{repo.suffix}")


def wal_candidate_keys(repo: Repository, name: str) -> list[str]:
    """Every key ``name`` may be stored under: the current encoding first, then the others
    (a policy may have changed its compression or encryption since)."""
    current = wal_key(repo, name)
    base = repo.key(f"{WAL_DIR}{name}")
    others = [base + c + e for c in KNOWN_SUFFIXES for e in ("", ".age")]
    return [current, *(k for k in others if k != current)]


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
    return key.endswith((".zst", ".gz", ".age"))


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
