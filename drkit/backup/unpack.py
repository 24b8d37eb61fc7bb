"""A base backup unpacked into a data directory: its ``base.tar``, or an incremental
backup's whole chain combined.

* :func:`unpack_base` streams the backup's ``base.tar`` from the repository (decoded
  beside the writing, its sha256 checked to the end) into a data directory drkit holds
  (:func:`drkit.pg.datadir.claim_data_directory`: made, or taken empty, and root's own
  meanwhile);
* :func:`unpack_chain` restores an incremental backup (PostgreSQL 17+) with its chain:
  the full backup and every incremental down to it are unpacked aside, beside the
  target so that the combined files can be hard links, and combined into it by
  ``pg_combinebackup`` of the backup's major;
* :func:`extract_tar` writes a tar stream relative to directory descriptors it opened
  itself: each directory is opened ``O_NOFOLLOW``, each file created ``O_EXCL |
  O_NOFOLLOW``, so a name that exists already (planted, or a duplicate member) is
  refused and a link is never followed.  Names that are absolute or hold ``..``,
  symbolic and hard links, devices and FIFOs are refused: a base backup holds none
  (drkit backs up the default tablespace only, and pg_basebackup writes ``pg_wal`` as a
  directory).  Every directory and file it creates is given to the cluster's OS user
  through its descriptor as it is made: drkit chowns only what it created.

Point-in-time recovery and physical drills restore through here; ``drkit verify``
combines an incremental chain aside the same way to check it with pg_verifybackup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from drkit.catalog import Manifest
from drkit.errors import CheckFailed, OperationError, SafetyRefused
from drkit.pg import DIRECTORY_FLAGS, Owner, claim_data_directory, cluster_os_user
from drkit.progress import Meter, MeteredReader, OnProgress
from drkit.storage import Repository
from drkit.streams import ReadAhead

_CHUNK = 1024 * 1024
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

#: phase "unpack", item base.tar, in raw bytes
ProgressCallback = OnProgress


def unpack_chain(
    repo: Repository,
    chain: list[Manifest],
    pgdata: Path,
    on_progress: ProgressCallback | None,
) -> None:
    """Unpack a base backup into ``pgdata``; an incremental one with its chain (full
    first), each unpacked aside and then combined by ``pg_combinebackup``."""
    if len(chain) == 1:
        unpack_base(repo, chain[0], pgdata, on_progress)
        return
    from drkit.pg import binary_major, find_binary

    last = chain[-1]
    major = last.major
    combine = find_binary("pg_combinebackup", major)
    if major is not None and binary_major(combine) != major:
        raise OperationError(
            f"backup {last.id} is incremental and needs pg_combinebackup {major}, found "
            f"{combine} (version {binary_major(combine)}): install postgresql-{major} or set "
            "DRKIT_PG_BIN to its bin directory"
        )
    link = major is not None and major >= 18
    try:  # beside pgdata, so that the combined files can be hard links (--link)
        work = Path(tempfile.mkdtemp(prefix=".drkit-combine-", dir=pgdata.parent))
    except OSError:
        work, link = Path(tempfile.mkdtemp(prefix="drkit-combine-")), False
    try:
        parts = []
        for number, manifest in enumerate(chain):
            part = work / f"{number:04d}"
            unpack_base(repo, manifest, part, on_progress)
            parts.append(str(part))
        os.close(claim_data_directory(pgdata, Owner.cluster(cluster_os_user()))[0])
        args = [combine, "--no-sync", *(["--link"] if link else []), "-o", str(pgdata), *parts]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise OperationError(
                f"pg_combinebackup failed for backup {last.id} ({len(chain)} backups in its "
                f"chain): {lines[-1] if lines else f'exit code {proc.returncode}'}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _make_wal_directories(pgdata)


def unpack_base(
    repo: Repository, manifest: Manifest, pgdata: Path, on_progress: ProgressCallback | None
) -> None:
    """Extract the backup's base.tar into ``pgdata`` (made, or taken empty, and kept
    root's own meanwhile) without ever writing through a link drkit did not make
    (see the module docstring)."""
    base = next((o for o in manifest.objects if o.name.startswith("base.tar")), None)
    if base is None:
        raise CheckFailed(f"backup {manifest.id} has no base.tar object")
    owner = Owner.cluster(cluster_os_user())
    fd, _created = claim_data_directory(pgdata, owner)
    try:
        with (
            Meter(on_progress, "unpack", "base.tar", total=base.raw_size) as meter,
            repo.open_decoded(base) as stream,
            ReadAhead(stream) as decoded,  # decoding beside the writing: two cores
        ):
            counted = MeteredReader(decoded, meter)
            extract_tar(counted, fd, owner, name=manifest.id)  # type: ignore[arg-type]
            # read to EOF so the sha256 of the stored object is checked
            while counted.read(_CHUNK):
                pass
    finally:
        os.close(fd)
    _make_wal_directories(pgdata)


def _make_wal_directories(pgdata: Path) -> None:
    """``pg_wal`` (private) and its ``archive_status``: a base backup taken with ``-X
    none`` carries them empty or not at all, and recovery needs them."""
    for sub in ("pg_wal", "pg_wal/archive_status"):
        (pgdata / sub).mkdir(exist_ok=True)
    (pgdata / "pg_wal").chmod(0o700)


def extract_tar(stream: BinaryIO, root_fd: int, owner: Owner, *, name: str) -> int:
    """Extract the tar ``stream`` into the directory open as ``root_fd`` (see the module
    docstring); returns the number of members.  ``name`` says which backup, for errors."""
    dirs: dict[PurePosixPath, int] = {PurePosixPath("."): os.dup(root_fd)}
    count = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK) as tar:
            for member in tar:
                relative = _member_path(member.name, name)
                if relative is None:
                    continue
                count += 1
                if member.isdir():
                    _directory(dirs, relative, member.mode, owner, name)
                elif member.isreg():
                    parent = _directory(dirs, relative.parent, 0o700, owner, name)
                    source = tar.extractfile(member)
                    assert source is not None
                    _file(parent, relative, source, member, owner, name)
                else:
                    kind = "a symbolic link" if member.issym() else "a hard link"
                    if not (member.issym() or member.islnk()):
                        kind = "a device or FIFO"
                    raise SafetyRefused(
                        f"backup {name}: its base.tar holds {kind}, {member.name}: drkit "
                        "writes no links or devices into a data directory (a base backup "
                        "of the default tablespace has none)"
                    )
    except tarfile.TarError as exc:
        raise CheckFailed(f"backup {name}: its base.tar is not a readable tar: {exc}") from None
    finally:
        for fd in dirs.values():
            os.close(fd)
    return count


def _member_path(raw: str, name: str) -> PurePosixPath | None:
    path = PurePosixPath(raw)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts:
        raise SafetyRefused(
            f"backup {name}: its base.tar names {raw!r}, outside the data directory"
        )
    return PurePosixPath(*parts) if parts else None


def _directory(
    dirs: dict[PurePosixPath, int], path: PurePosixPath, mode: int, owner: Owner, name: str
) -> int:
    """The descriptor of directory ``path``, made by this extraction (with its parents)."""
    if path in dirs:
        return dirs[path]
    parent = _directory(dirs, path.parent, 0o700, owner, name)
    try:
        os.mkdir(path.name, 0o700, dir_fd=parent)
    except FileExistsError:
        raise _planted(path, name) from None
    try:
        fd = os.open(path.name, DIRECTORY_FLAGS, dir_fd=parent)
    except OSError:  # swapped for something else since the mkdir
        raise _planted(path, name) from None
    dirs[path] = fd
    if owner.uid is not None and owner.gid is not None:
        os.fchown(fd, owner.uid, owner.gid)
    os.fchmod(fd, (mode & 0o750) | 0o700)
    return fd


def _file(
    parent: int,
    path: PurePosixPath,
    source: IO[bytes],
    member: tarfile.TarInfo,
    owner: Owner,
    name: str,
) -> None:
    try:
        fd = os.open(path.name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
    except FileExistsError:
        raise _planted(path, name) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link where the file goes
            raise _planted(path, name) from None
        raise
    with contextlib.closing(_FdWriter(fd)) as out:
        while chunk := source.read(_CHUNK):
            out.write(chunk)
        if owner.uid is not None and owner.gid is not None:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, member.mode & 0o750)
        os.utime(fd, (member.mtime, member.mtime))


def _planted(path: PurePosixPath, name: str) -> SafetyRefused:
    return SafetyRefused(
        f"restoring backup {name}: {path} already exists in the data directory and drkit did "
        "not make it (planted, or a member twice in the tar): refusing to write through it"
    )


class _FdWriter:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        os.close(self.fd)
