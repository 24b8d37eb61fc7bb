"""``drkit copy``: the primary repository's backups and WAL into the policy's copies.

A copy (``copies.NAME`` in the policy) is another repository holding the same objects
under the same keys, byte for byte: never decoded, re-compressed or re-encrypted on the
way, so every manifest's sizes and sha256 hold in the copy as they do in the primary,
and ``verify``, ``backups``, ``restore``, ``drill`` and ``status`` read a copy exactly
as they read the primary (``--repo NAME``, :meth:`drkit.config.Policy.for_copy`).

What is copied is what the copy's own retention keeps (the prune plan of
:mod:`drkit.backup.prune`, run over the primary's catalog with the copy's retention), so
a copy pruned to fewer backups is not filled again on the next run.  Order, so that an
interruption at any moment leaves a copy that is consistent and that a rerun completes:

1. ``identity.json`` (the archive's cluster identity): a copy that holds another
   cluster's archive is refused (exit 4) before anything is written;
2. WAL the copy lacks (a physical backup copied next then finds its WAL there);
3. each backup the copy lacks, oldest first: its objects, then its manifest last, as a
   backup is published in the primary: a backup exists in the copy iff its manifest
   does, and a backup cut short by an interruption is finished by the next run (its
   objects already there are not sent again; ``prune --repo NAME`` removes leftovers
   past the grace);
4. the environment's other records (timeline record, restore points, drill reports).

Every object is verified on arrival: the sha256 of the bytes read from the primary
(and, for a backup's object, the manifest's sha256 and size) must equal the sha256 of
the bytes read back from the copy.  A mismatch removes the copied object and fails
(exit 3).  An object already in the copy is never replaced when its size differs (the
copy holds something else under that name: exit 3) — except the records written in
place on purpose (``timeline.json``, a backup's ``keep.json``), brought up to date.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, cast

from drkit.backup.prune import plan_prune
from drkit.catalog import KEEP, MANIFEST, Manifest, backup_prefix, chronological
from drkit.documents import Document, Shape, described
from drkit.errors import (
    CheckFailed,
    DrkitError,
    NotFoundError,
    ObjectExists,
    ObjectNotFound,
    SafetyRefused,
)
from drkit.storage import ObjectInfo, Repository
from drkit.streams import HashingReader

if TYPE_CHECKING:
    from drkit.config import Policy

log = logging.getLogger(__name__)

#: the records below an environment's prefix that are rewritten in place (not once)
MUTABLE_NAMES = ("timeline.json", KEEP)
#: the archive's identity record (:mod:`drkit.wal.identity`)
IDENTITY_NAME = "identity.json"


@dataclass
class CopyResult:
    """What one run did to one copy."""

    name: str
    location: str
    copied_objects: int = 0
    copied_bytes: int = 0
    present_objects: int = 0
    updated_records: int = 0
    published: list[str] = field(default_factory=list)
    #: the backups the copy's retention leaves out (not copied)
    skipped: list[str] = field(default_factory=list)
    error: DrkitError | None = None

    def document(self) -> CopyRun:
        return CopyRun(
            name=self.name,
            location=self.location,
            ok=self.error is None,
            copied_objects=self.copied_objects,
            copied_bytes=self.copied_bytes,
            present_objects=self.present_objects,
            updated_records=self.updated_records,
            published=list(self.published),
            skipped=list(self.skipped),
            error=str(self.error) if self.error is not None else None,
        )


class CopyRun(Shape):
    """What one run did to one copy (``copies.NAME``)."""

    name: str = described("the copy's name in the policy")
    location: str = described("where the copy lives (the environment's prefix in it)")
    ok: bool = described("false: this copy failed (error says why); the others still ran")
    copied_objects: int = described("objects copied, each read back and its sha256 compared")
    copied_bytes: int = described("bytes copied")
    present_objects: int = described("objects the copy already held (not sent again)")
    updated_records: int = described("records rewritten in place (timeline, keep records)")
    published: list[str] = described("backups whose manifest this run wrote in the copy")
    skipped: list[str] = described("backups the copy's own retention leaves out (not copied)")
    error: str | None = described("why this copy failed")


class CopyDocument(Document):
    """`drkit copy ENV [--repo NAME] --json` (one failed copy fails the command)"""

    environment: str
    copies: list[CopyRun]


def copy_document(environment: str, results: list[CopyResult]) -> CopyDocument:
    """``drkit copy --json``: what the run did to each copy."""
    return CopyDocument(
        ok=all(r.error is None for r in results),
        environment=environment,
        copies=[r.document() for r in results],
    )


def copy_names(policy: Policy, only: str | None = None) -> list[str]:
    """The copies a run covers: ``only`` (checked against the policy), or all of them."""
    if only is not None:
        policy.for_copy(only)  # an unknown name is a usage error
        return [only]
    return sorted(policy.copies)


def copy_all(policy: Policy, only: str | None = None) -> list[CopyResult]:
    """Bring each copy (or ``only``) up to date.  One copy failing does not stop the
    others; each result carries its error, and the caller fails when any has one."""
    results = []
    for name in copy_names(policy, only):
        source = Repository.for_policy(policy)
        target = Repository.for_policy(policy.for_copy(name))
        result = CopyResult(name, target.location)
        try:
            copy_repository(source, target, policy.for_copy(name), result)
        except DrkitError as exc:
            # the caller reports it (the command's one error line, the job's status)
            log.info("copy %s to %s failed: %s", policy.name, name, exc)
            result.error = exc
        finally:
            source.close()
            target.close()
        results.append(result)
    return results


def refuse_same_repository(source: Repository, target: Repository, name: str) -> None:
    """Refuse (exit 4) a copy that is the primary repository under another name (a
    symlink, ``/./``, another endpoint spelling of one bucket): copying into it would
    report every object present and prove nothing, and pruning it would prune the
    primary.  Told by identity, not by url: a marker written in the primary is looked
    for in the copy.  A primary that cannot be written (lost) is not this copy."""
    marker = f"check/copy-identity-{secrets.token_hex(8)}"
    try:
        source.backend.put_bytes(source.key(marker), b"drkit copy identity marker\n")
    except DrkitError:
        return
    try:
        seen = target.backend.head(target.key(marker)) is not None
    finally:
        source.backend.delete(source.key(marker))
    if seen:
        raise SafetyRefused(
            f"copy {name} ({target.location}) is the primary repository itself "
            f"({source.location}) under another name: refused; point copies.{name}.url "
            "at another repository"
        )


def copy_repository(
    source: Repository,
    target: Repository,
    copy_policy: Policy,
    result: CopyResult,
    *,
    now: datetime | None = None,
) -> CopyResult:
    """Copy into ``target`` what it lacks of ``source`` and what ``copy_policy``'s
    retention keeps (see the module's docstring for the order)."""
    now = now or datetime.now(UTC)
    # a missing primary would list as empty: "nothing to copy" must not be its answer
    source.backend.check_reachable()
    target.backend.check_reachable()
    objects = {info.key: info for info in source.list("")}
    present = {info.key: info for info in target.list("")}
    if objects:  # a lost primary cannot be its copy (and cannot take a marker)
        refuse_same_repository(source, target, result.name)
    if not objects and present:
        raise NotFoundError(
            f"{source.location} holds nothing while copy {result.name} holds "
            f"{len(present)} objects: the primary repository looks lost; nothing copied "
            f"(restore from the copy: drkit restore {source.env} --repo {result.name})"
        )
    identity = source.key(IDENTITY_NAME)
    if identity in objects:
        _copy_identity(source, target, objects[identity], present.get(identity), result)
    plan = plan_prune(source, copy_policy, now=now, dry_run=True)
    wal_prefix = source.key("wal/")
    wal = [key for key in objects if key.startswith(wal_prefix)]
    left_out = set(plan.wal_plan.select(wal)) if plan.wal_plan.cutoff else set()
    for key in wal:
        if key not in left_out:
            _copy_object(source, target, objects[key], present.get(key), result)
    kept = {b.id for b in plan.plan.kept}
    for backup_id, problem in sorted(plan.unreadable.items()):
        log.warning(
            "copy %s to %s: backup %s not copied: %s", source.env, result.name, backup_id, problem
        )
    for manifest in chronological(plan.manifests.values()):  # oldest first
        if manifest.id not in kept:
            result.skipped.append(manifest.id)
            continue
        _copy_backup(source, target, manifest, objects, present, result)
    for key in sorted(set(objects) - set(wal) - {identity}):
        if not key.startswith(source.key("backups/")):
            _copy_object(source, target, objects[key], present.get(key), result)
    log.info(
        "copy %s to %s: %d objects copied (%d bytes), %d present, %d backups published",
        source.env,
        result.name,
        result.copied_objects,
        result.copied_bytes,
        result.present_objects,
        len(result.published),
    )
    return result


def _copy_identity(
    source: Repository,
    target: Repository,
    info: ObjectInfo,
    there: ObjectInfo | None,
    result: CopyResult,
) -> None:
    """The archive's identity first: a copy holding another cluster's archive (same
    environment name, another system identifier) is refused before anything is written."""
    if there is None:
        _copy_object(source, target, info, None, result)
        return
    if source.backend.get_bytes(info.key) != target.backend.get_bytes(info.key):
        raise SafetyRefused(
            f"{target.location} holds the archive of another cluster ({info.key} differs "
            f"from the primary's): copy {result.name} refused; point copies.{result.name}.url "
            "at a repository of this environment's own archive"
        )
    result.present_objects += 1


def _copy_backup(
    source: Repository,
    target: Repository,
    manifest: Manifest,
    objects: dict[str, ObjectInfo],
    present: dict[str, ObjectInfo],
    result: CopyResult,
) -> None:
    """A backup's objects, then its manifest last (published in the copy only whole)."""
    backup_id = manifest.id
    prefix = source.key(backup_prefix(backup_id))
    manifest_key = prefix + MANIFEST
    expected = {obj.key: obj for obj in manifest.objects}
    for key in sorted(k for k in objects if k.startswith(prefix) and k != manifest_key):
        obj = expected.get(key)
        _copy_object(
            source,
            target,
            objects[key],
            present.get(key),
            result,
            sha256=obj.sha256 if obj is not None else None,
        )
    missing = sorted(set(expected) - set(objects))
    if missing:
        raise CheckFailed(
            f"backup {backup_id}: {missing[0]} is in its manifest but not in "
            f"{source.location}: not copied (run drkit verify {source.env} {backup_id})"
        )
    if manifest_key in present:
        _copy_object(source, target, objects[manifest_key], present[manifest_key], result)
        return
    _copy_object(source, target, objects[manifest_key], None, result)
    result.published.append(backup_id)


def _copy_object(
    source: Repository,
    target: Repository,
    info: ObjectInfo,
    there: ObjectInfo | None,
    result: CopyResult,
    *,
    sha256: str | None = None,
) -> None:
    """One object, as stored, unless the copy has it; verified on arrival.

    ``sha256``: what the manifest says of the stored bytes (checked on the way too)."""
    key = info.key
    mutable = key.rsplit("/", 1)[-1] in MUTABLE_NAMES
    if there is not None and not mutable:
        if there.size != info.size:
            raise CheckFailed(
                f"{target.location}: {key} holds {there.size} bytes, the primary's "
                f"{info.size}: the copy has another object under that name; remove it "
                "from the copy (or check which one is damaged with drkit verify)"
            )
        result.present_objects += 1
        return
    if there is not None and _digest(target, key) == _digest(source, key):
        result.present_objects += 1
        return
    with source.backend.open_read(key) as raw:
        reading = HashingReader(raw)
        if mutable:
            stored = target.backend.put_stream(key, cast(BinaryIO, reading), info.size)
        else:
            try:
                stored = target.backend.put_stream_new(key, cast(BinaryIO, reading), info.size)
            except ObjectExists:  # another copy run stored it meanwhile: judged as present
                _copy_object(source, target, info, target.backend.head(key), result)
                return
    sent = reading.hexdigest()
    if sha256 is not None and sent != sha256:
        target.backend.delete(key)
        raise CheckFailed(
            f"{source.location}: {key} does not match its manifest's sha256 (the primary's "
            "object is damaged): not copied; run drkit verify"
        )
    try:
        same = _digest(target, key) == sent and stored == reading.count
        problem = "" if same else "its sha256 read back differs from the bytes sent"
    except DrkitError as exc:  # the store's own checksum, or no answer: not verified
        problem = f"reading it back failed: {exc}"
    if problem:
        target.backend.delete(key)
        raise CheckFailed(
            f"copy {result.name}: {key} arrived damaged ({problem}): removed from the copy; "
            "run drkit copy again"
        )
    if there is not None:
        result.updated_records += 1
    else:
        result.copied_objects += 1
        result.copied_bytes += stored


def _digest(repo: Repository, key: str) -> str:
    """The sha256 of the bytes stored under ``key``, read back in full."""
    digest = hashlib.sha256()
    try:
        with repo.backend.open_read(key) as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
    except ObjectNotFound:
        return ""
    return digest.hexdigest()
