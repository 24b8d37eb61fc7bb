"""Data directories that root fills for the cluster's OS user: who may own them, and an
extraction that never writes through a link it did not make.

drkit restores (``restore --point-in-time --pgdata DIR``, physical drills) as root into a
directory PostgreSQL then runs as its own OS user.  Anyone else able to write on the way
could turn root's writes elsewhere: plant a symlink where a member of the base backup
lands, or swap the directory, or one above it, for a link while it is filled.  So:

* :func:`guard_data_directory` refuses (exit 4) a directory that exists and is not owned
  by root, the cluster's OS user or drkit's own user, and one below a directory owned
  by anyone else or writable by others (unless sticky, as ``/tmp``: then nobody else
  can rename or remove what is not theirs).  Symbolic links on the way are judged by
  their owner, and the directories they lead to as well.
* :func:`claim_data_directory` makes the directory (``mkdir``: one that appears
  meanwhile is refused, not reused) or takes the existing empty one, and keeps it
  root's own, mode 0700, while drkit fills it: nobody else can enter it then.  It is
  checked empty after that, through the descriptor drkit holds.
* :func:`extract_tar` writes a tar stream relative to directory descriptors it opened
  itself: each directory is opened ``O_NOFOLLOW``, each file created ``O_EXCL |
  O_NOFOLLOW``, so a name that exists already (planted, or a duplicate member) is
  refused and a link is never followed.  Names that are absolute or hold ``..``,
  symbolic and hard links, devices and FIFOs are refused: a base backup holds none
  (drkit backs up the default tablespace only, and pg_basebackup writes ``pg_wal`` as a
  directory).  Every directory and file it creates is given to the cluster's OS user
  through its descriptor as it is made: drkit chowns only what it created.

The data directory itself stays root's until drkit has written everything in it
(recovery settings, markers); :func:`drkit.pg.server.chown_tree` then gives it away
last, after all it holds, never following a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from drkit.errors import SafetyRefused

_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Owner:
    """Who may own what drkit writes into: root, drkit's own user and the cluster's OS
    user; the last is who gets what drkit creates (None: drkit's own user)."""

    uid: int | None
    gid: int | None
    name: str | None

    @classmethod
    def cluster(cls, user: str | None) -> Owner:
        if user is None:
            return cls(None, None, None)
        entry = pwd.getpwnam(user)
        return cls(entry.pw_uid, entry.pw_gid, user)

    def trusts(self, uid: int) -> bool:
        return uid in (0, os.geteuid(), self.uid)

    def describe(self) -> str:
        return f"root or {self.name}" if self.name else "root or yourself"


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse(
    pgdata: Path, problem: str, owner: Owner, what: str = "data directory"
) -> SafetyRefused:
    return SafetyRefused(
        f"refusing {what} {pgdata}: {problem}, so another user could redirect what drkit "
        f"writes there as root; choose a directory owned by {owner.describe()}, below "
        "directories only they can write"
    )


def guard_data_directory(pgdata: Path, owner: Owner, *, what: str = "data directory") -> None:
    """Refuse ``pgdata`` unless it and every directory above it are safe from other users
    (see the module docstring); it need not exist.  ``what`` names it in the message."""
    path = Path(os.path.abspath(pgdata))
    for chain in _chains(path):
        for entry in chain:
            try:
                st = entry.lstat()
            except FileNotFoundError:
                break  # what follows does not exist yet: drkit makes it
            except OSError as exc:
                problem = f"{entry} cannot be examined ({exc.strerror})"
                raise _refuse(pgdata, problem, owner, what) from None
            if not owner.trusts(st.st_uid):
                raise _refuse(pgdata, f"{entry} is owned by {_who(st.st_uid)}", owner, what)
            if stat.S_ISLNK(st.st_mode) or entry == path:
                continue
            sticky = bool(st.st_mode & stat.S_ISVTX)
            others = st.st_mode & stat.S_IWOTH
            group = st.st_mode & stat.S_IWGRP and st.st_gid not in (0, owner.gid)
            if (others or group) and not sticky:
                raise _refuse(pgdata, f"{entry} is writable by others", owner, what)


def _chains(path: Path) -> Iterator[list[Path]]:
    """The path's components as given (links judged by their owner), then as resolved."""
    yield [*reversed(path.parents), path]
    real = Path(os.path.realpath(path))
    if real != path:
        yield [*reversed(real.parents), real]


def claim_data_directory(pgdata: Path, owner: Owner) -> tuple[int, bool]:
    """Make ``pgdata`` or take the existing empty one: (an open descriptor of it, whether
    drkit made it).  While drkit holds it, it is drkit's own, mode 0700; a directory
    that appeared since the guard looked, or is not empty once closed to others, is
    refused."""
    guard_data_directory(pgdata, owner)
    created = False
    try:
        os.mkdir(pgdata, 0o700)
        created = True
    except FileExistsError:
        pass
    try:
        fd = os.open(pgdata, _DIR_FLAGS)
    except OSError as exc:
        problem = f"it cannot be opened as a directory ({exc.strerror})"
        raise _refuse(pgdata, problem, owner) from None
    try:
        st = os.fstat(fd)
        if not owner.trusts(st.st_uid):  # swapped in since the guard looked
            raise _refuse(pgdata, f"it is owned by {_who(st.st_uid)}", owner)
        if st.st_uid != os.geteuid():
            if os.geteuid() != 0:  # root's: drkit, not root, could not fill it anyway
                me = _who(os.geteuid())
                raise SafetyRefused(
                    f"refusing data directory {pgdata}: it belongs to {_who(st.st_uid)} and "
                    f"drkit runs as {me}; run drkit as root, or give the directory to {me}"
                )
            os.fchown(fd, 0, 0)  # ours while we fill it
        os.fchmod(fd, 0o700)
        if os.listdir(fd):
            raise SafetyRefused(
                f"{pgdata} is not empty: point-in-time recovery only writes into an empty "
                "directory (choose a new one; drkit never overwrites a data directory)"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, created


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
        from drkit.errors import CheckFailed

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
        fd = os.open(path.name, _DIR_FLAGS, dir_fd=parent)
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
