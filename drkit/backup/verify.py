"""``drkit verify``: re-read every stored object and check it against its manifest.

Each object is streamed once: its stored size and sha256 are checked against the
manifest, it is decrypted (when encrypted) and decompressed to the end, and the raw size
compared.  Physical backups additionally get their WAL chain checked: every WAL file of
the chain verify reports, from the backup's start to the end of the recoverable window,
is read the same way, one at a time (see :func:`drkit.backup.walchain.check_backup_wal`).

An incremental base backup (PostgreSQL 17+) is only as good as its chain: every
ancestor must exist and every object of every ancestor is checked the same way; then
the chain is combined aside with ``pg_combinebackup`` and ``pg_verifybackup`` checks
the combined backup against the manifest PostgreSQL wrote for it (``-n``: its WAL is
in the archive, checked above).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from drkit.catalog import Manifest
from drkit.documents import Document, Shape, Timestamp, described
from drkit.errors import CheckFailed, DrkitError, StorageError
from drkit.storage import Repository
from drkit.streams import CountingReader, drain, spool_dir

if TYPE_CHECKING:
    from drkit.backup.retention import WalPlan
    from drkit.backup.walchain import WalReading


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

    def document(self) -> Verdict:
        """Its entry in verify's document; the physical and incremental checks'
        ``details`` are its optional keys."""
        return Verdict(
            id=self.backup_id,
            kind=self.kind,
            ok=self.ok,
            objects=self.objects,
            size_bytes=self.bytes,
            bytes=self.bytes,
            problems=self.problems,
            **self.details,
        )


def verify_backup(
    repo: Repository,
    manifest: Manifest,
    on_bytes: Callable[[int], None] | None = None,
    wal: WalReading | None = None,
    wal_plan: WalPlan | None = None,
) -> BackupVerdict:
    """Read back every object of ``manifest`` (size, sha256, decompression) and, for a
    physical backup, every WAL file of the chain it reports; a bad object is a problem in
    the verdict, not an exception.  ``wal``: shared by the backups of one run, so that
    WAL their chains share is read once.  ``wal_plan``: the WAL the retention policy
    keeps (``prune``'s plan); a base backup it keeps only the start..stop segments of is
    reported as restorable to its consistent point only, whatever WAL is still there."""
    verdict = BackupVerdict(manifest.id, manifest.kind)
    _check_objects(repo, manifest, verdict, on_bytes)
    if manifest.kind == "physical":
        from drkit.backup.walchain import check_backup_wal
        from drkit.catalog import iso

        problems, details = check_backup_wal(repo, manifest, wal)
        verdict.problems += problems
        verdict.details.update(details)
        if wal_plan is not None and wal_plan.consistent_point_only(manifest.id):
            from drkit.config import format_duration

            anchor = wal_plan.anchor.id if wal_plan.anchor else "a newer one"
            keep_for = format_duration(wal_plan.retention) if wal_plan.retention else "set"
            verdict.details["wal_scope"] = "consistent point only"
            verdict.details["recoverable_to"] = iso(manifest.restorable_at)
            verdict.details["wal_note"] = (
                f"restores to its consistent point only: retention.wal "
                f"({keep_for}) keeps WAL for point-in-time recovery from backup "
                f"{anchor} on, and prune deletes the WAL after this backup's stop segment"
            )
        elif wal_plan is not None and wal_plan.cutoff is not None:
            verdict.details["wal_scope"] = "point-in-time"
    if manifest.parent is not None:
        _check_chain(repo, manifest, verdict, on_bytes)
    return verdict


def _check_chain(
    repo: Repository,
    manifest: Manifest,
    verdict: BackupVerdict,
    on_bytes: Callable[[int], None] | None,
) -> None:
    from drkit.backup.chain import by_id, resolve_chain
    from drkit.catalog import list_backups

    try:
        chain = resolve_chain(manifest, by_id(list_backups(repo, "physical")))
    except CheckFailed as exc:
        verdict.problems.append(str(exc))
        verdict.details["pg_verifybackup"] = "not run: the chain is broken"
        return
    verdict.details["chain"] = [m.id for m in chain]
    before = len(verdict.problems)
    for ancestor in chain[:-1]:
        _check_objects(repo, ancestor, verdict, on_bytes, prefix=f"ancestor {ancestor.id}: ")
    if len(verdict.problems) > before:
        verdict.details["pg_verifybackup"] = "not run: an object of the chain is damaged"
        return
    problem = _verify_combined(repo, chain)
    if problem:
        verdict.problems.append(problem)
        verdict.details["pg_verifybackup"] = "failed"
    else:
        verdict.details["pg_verifybackup"] = "combined chain verified"


def _verify_combined(repo: Repository, chain: list[Manifest]) -> str | None:
    """Combine the chain aside and run pg_verifybackup on it; a problem line or None."""
    from drkit.backup.unpack import unpack_chain
    from drkit.pg import find_binary

    last = chain[-1]
    major = last.major
    verifier = find_binary("pg_verifybackup", major)
    work = Path(tempfile.mkdtemp(prefix="drkit-verify-", dir=spool_dir()))
    try:
        combined = work / "combined"
        try:
            unpack_chain(repo, chain, combined, None)
        except CheckFailed as exc:
            return str(exc)
        except DrkitError as exc:
            return f"combining the chain of {last.id} failed: {exc}"
        proc = subprocess.run(
            [verifier, "-n", str(combined)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return (
                f"pg_verifybackup of the combined chain of {last.id} failed: "
                f"{lines[0] if lines else f'exit code {proc.returncode}'}"
            )
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_objects(
    repo: Repository,
    manifest: Manifest,
    verdict: BackupVerdict,
    on_bytes: Callable[[int], None] | None,
    prefix: str = "",
) -> None:
    for obj in manifest.objects:
        verdict.objects += 1
        try:
            with repo.open_decoded(obj) as stream:
                raw = drain(CountingReader(stream, on_bytes))  # type: ignore[arg-type]
            if raw != obj.raw_size:
                verdict.problems.append(
                    f"{prefix}{obj.key}: decodes to {raw} bytes, manifest says {obj.raw_size}"
                )
            verdict.bytes += obj.stored_size
        except (CheckFailed, StorageError) as exc:
            verdict.problems.append(f"{prefix}{exc}")


# -- the --json documents --------------------------------------------------------


class WalChecked(Shape):
    files: int = described("WAL files read to their end and decoded (segments and history files)")
    damaged: int = described("of those, the ones that failed a check")
    by: dict[str, int] = described(
        "how their stored content was checked, with counts: sha256 file (uncompressed "
        "objects), zstd frame checksum, gzip CRC-32, age authentication; 'sha256 attribute' "
        "and 'size only' for uncompressed objects written before sha256 files"
    )


class Verdict(Shape):
    id: str = described("the backup ID")
    kind: Literal["logical", "physical"]
    ok: bool = described("every object and the WAL chain checked out")
    objects: int = described("objects re-read")
    size_bytes: int = described("bytes re-read (stored size of its objects)")
    bytes: int = described("the same as size_bytes (kept for version 1; prefer size_bytes)")
    problems: list[str] = described("what is wrong, one line each")
    wal_chain: Literal["complete", "gap", "damaged"] | None = described(
        "physical backups only: every WAL file of the chain is there and reads back, one is "
        "missing (gap) or one fails its checks (damaged)",
        default=None,
    )
    recoverable_from: Timestamp | None = described("physical backups only", default=None)
    recoverable_to: Timestamp | None = described(
        "physical backups only: when the last WAL segment of the window was archived",
        default=None,
    )
    last_wal: str | None = described(
        "last WAL segment of the chain (physical): before the first missing or damaged one",
        default=None,
    )
    wal_checked: WalChecked | None = described(
        "physical backups only: the WAL files read, from the backup's start to last_wal",
        default=None,
    )
    wal_scope: Literal["point-in-time", "consistent point only"] | None = described(
        "physical backups: whether the retention policy keeps the WAL after its consistent "
        "point (point-in-time) or only the WAL that makes it consistent (retention.wal); "
        "then recoverable_to is its consistent point",
        default=None,
    )
    wal_note: str | None = described(
        "physical backups restorable to their consistent point only: why", default=None
    )
    chain: list[str] | None = described(
        "incremental backups: the chain checked, full backup first", default=None
    )
    pg_verifybackup: str | None = described(
        "incremental backups: pg_verifybackup on the combined chain", default=None
    )


class VerifyDocument(Document):
    """`drkit verify ENV [ID|latest|--all] --json` (exit 3 when a backup fails)"""

    backups: list[Verdict]


def verify_document(verdicts: list[BackupVerdict]) -> VerifyDocument:
    """``drkit verify --json``: each backup's verdict, ok only when every one is."""
    return VerifyDocument(ok=all(v.ok for v in verdicts), backups=[v.document() for v in verdicts])
