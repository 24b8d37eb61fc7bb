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
