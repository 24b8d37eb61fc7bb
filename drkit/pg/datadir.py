"""Data directories that root fills for the cluster's OS user: who may own them.

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

What drkit writes into the directory it holds is written relative to descriptors,
never through a link it did not make (:mod:`drkit.backup.unpack`).  The data directory
itself stays root's until drkit has written everything in it (recovery settings,
markers); :func:`drkit.pg.server.chown_tree` then gives it away last, after all it
holds, never following a link.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from drkit.errors import SafetyRefused
from drkit.streams import spool_dir

#: how a directory drkit writes into is opened: never through a link
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        fd = os.open(pgdata, DIRECTORY_FLAGS)
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


def scratch_directory(prefix: str, owner: Owner) -> Path:
    """A new private directory below drkit's spool directory for a scratch cluster (a
    drill's, a table restore's), mode 0711 so that ``owner`` reaches the data directory
    drkit makes in it.  Root fills that data directory: the spool directory is refused
    unless only trusted users could swap what is in it."""
    root = spool_dir()
    guard_data_directory(root, owner, what="scratch directory")
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    work.chmod(0o711)
    return work
