"""``drkit verify``: re-read every stored object and check it against its manifest.

Each object is streamed once: its stored size and sha256 are checked against the
manifest, it is decrypted (when encrypted) and decompressed to the end, and the raw size
compared.  Physical backups additionally get their WAL chain checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drkit.backup.catalog import Manifest
from drkit.errors import CheckFailed, StorageError
from drkit.storage.repository import Repository
from drkit.streams import drain


@dataclass
class BackupVerdict:
    backup_id: str
    kind: str
    objects: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.backup_id,
            "kind": self.kind,
            "ok": self.ok,
            "objects": self.objects,
            "bytes": self.bytes,
            "size_bytes": self.bytes,
            "problems": self.problems,
            **self.details,
        }


def verify_backup(
    repo: Repository, manifest: Manifest, on_bytes: Callable[[int], None] | None = None
) -> BackupVerdict:
    """Read back every object of ``manifest`` (size, sha256, decompression) and, for a
    physical backup, its WAL; a bad object is a problem in the verdict, not an exception."""
    verdict = BackupVerdict(manifest.id, manifest.kind)
    for obj in manifest.objects:
        verdict.objects += 1
        try:
            with repo.open_decoded(obj) as stream:
                raw = drain(_Counting(stream, on_bytes))  # type: ignore[arg-type]
            if raw != obj.raw_size:
                verdict.problems.append(
                    f"{obj.key}: decodes to {raw} bytes, manifest says {obj.raw_size}"
                )
            verdict.bytes += obj.stored_size
        except (CheckFailed, StorageError) as exc:
            verdict.problems.append(str(exc))
    if manifest.kind == "physical":
        from drkit.backup.walchain import check_backup_wal

        problems, details = check_backup_wal(repo, manifest)
        verdict.problems += problems
        verdict.details.update(details)
    return verdict


class _Counting:
    def __init__(self, source: Any, on_bytes: Callable[[int], None] | None) -> None:
        self._source = source
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._source.read(size)
        if data and self._on_bytes is not None:
            self._on_bytes(len(data))
        return data
