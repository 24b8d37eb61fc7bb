"""Every ``pg_restore`` command line drkit runs, and one way to leave secrets behind.

Three shapes, built here only:

* :func:`restore_args`: restore (a section of) an archive into a database, always
  ``--exit-on-error``; in one transaction, or ``--jobs N`` for a parallel restore of a
  file or directory; owners and privileges left behind unless it is a real restore of
  the same cluster's roles (``keep_owners``); ``--clean --if-exists`` over existing
  objects; an ``-L`` list of the entries to restore;
* :func:`script_args`: write (a section of) an archive as SQL on stdout (``-f -``),
  optionally of some tables only;
* :func:`toc_args`: list an archive's table of contents (``-l``).

Without an archive path, pg_restore reads the archive on stdin.

An archive's table of contents can carry credentials: a ``USER MAPPING`` holds the
remote user's password in its options.  :func:`restore_list` turns a TOC listing
(``pg_restore -l``) into a ``-L`` list without those entries, and :func:`restore_file`
restores through it, so no copy forgets the filter.

It can also carry grants only a superuser may make: pg_dump writes the privileges of
system objects that differ from initdb's, such as ``GRANT EXECUTE ON FUNCTION
pg_catalog.pg_create_restore_point`` to the backup role.  Replayed by that same role into
a database where it does not hold them yet, they fail the whole restore ("permission
denied for function pg_create_restore_point").  A role that is not a superuser restores
through a list without them (``system_acls=False``; :func:`system_acl_entries` names
them): they are grants to a cluster's roles on the cluster's own functions, for its
administrator to make (``check`` says which are missing), not data of the database.
:func:`stream_toc` reads the listing off the head of a streamed archive, so a streamed
restore can take a list too.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from drkit.errors import SubprocessError
from drkit.pg.conninfo import describe, for_subprocess
from drkit.pg.process import PipeProcess
from drkit.streams import CHUNK, spool_dir

# TOC entry kinds never restored into a copy: they hold other systems' credentials
SECRET_KINDS = ("USER MAPPING",)
# large objects: their bytes cannot be masked, so a sanitized copy leaves them out
LARGE_OBJECT_KINDS = ("BLOB", "BLOB METADATA", "BLOBS", "LARGE OBJECT")
_ENTRY_RE = re.compile(r"^\s*\d+;\s+\d+\s+\d+\s+(.*)$")
#: an ACL entry on an object of the system catalogs ("ACL pg_catalog FUNCTION f(text) owner")
_SYSTEM_ACL = "ACL pg_catalog "


def system_acl_entries(toc: str) -> list[str]:
    """The TOC's grants on system objects ("FUNCTION pg_switch_wal()"), owner left out."""
    found = []
    for line in toc.splitlines():
        m = _ENTRY_RE.match(line)
        if m and m.group(1).startswith(_SYSTEM_ACL):
            found.append(m.group(1)[len(_SYSTEM_ACL) :].rsplit(" ", 1)[0])
    return found


def restore_list(
    toc: str, drop: tuple[str, ...] = SECRET_KINDS, *, system_acls: bool = True
) -> str:
    """A ``pg_restore -L`` list: the TOC listing without entries of the ``drop`` kinds,
    and without grants on system objects unless ``system_acls``."""
    kept = []
    for line in toc.splitlines():
        m = _ENTRY_RE.match(line)
        if m and m.group(1).startswith(tuple(f"{kind} " for kind in drop)):
            continue
        if m and not system_acls and m.group(1).startswith(_SYSTEM_ACL):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


@contextlib.contextmanager
def list_file(
    toc: str, drop: tuple[str, ...] = SECRET_KINDS, *, system_acls: bool = True
) -> Iterator[Path]:
    """The filtered list in a temp file, removed on the way out."""
    fd, name = tempfile.mkstemp(prefix="drkit-toc-", suffix=".list", dir=spool_dir())
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(restore_list(toc, drop, system_acls=system_acls))
        yield path
    finally:
        path.unlink(missing_ok=True)


def stream_toc(pg_restore: str, stream: BinaryIO) -> tuple[str, bytes]:
    """The TOC listing of the archive ``stream`` carries, and the bytes read from it to
    get there (the restore that follows is fed those first, then the rest of ``stream``).

    ``pg_restore -l`` reads an archive's header and table of contents and exits: what
    was read is the TOC's size, plus at most a pipe's buffer and one chunk."""
    head = bytearray()
    with (
        tempfile.TemporaryFile(dir=spool_dir()) as out,
        PipeProcess(toc_args(pg_restore), what="pg_restore -l", stdin=-1, stdout=out) as proc,
    ):
        try:
            while chunk := stream.read(CHUNK):
                head += chunk
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # it has read the table of contents and gone
        proc.wait()
        out.seek(0)
        return out.read().decode("utf-8", "replace"), bytes(head)


def toc_args(pg_restore: str, archive: Path | None = None) -> list[str]:
    """``pg_restore -l``: the archive's table of contents (of stdin without ``archive``)."""
    return [pg_restore, "-l", *([str(archive)] if archive is not None else [])]


def script_args(
    pg_restore: str, *, section: str | None = None, tables: Sequence[str] = ()
) -> list[str]:
    """``pg_restore -f -``: (a section of) the archive on stdin as SQL on stdout;
    ``tables``: only the tables of these names (``-t``, in any schema)."""
    args = [pg_restore, *([f"--section={section}"] if section is not None else []), "-f", "-"]
    return [*args, *(a for table in tables for a in ("-t", table))]


def restore_args(
    pg_restore: str,
    dsn: str,
    *,
    section: str | None = None,
    listing: Path | None = None,
    jobs: int = 1,
    keep_owners: bool = False,
    clean: bool = False,
    archive: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command (password in the environment) restoring an archive into ``dsn``.

    ``keep_owners``: set owners and privileges as the archive says (a restore of the
    cluster's own roles), else leave them out (a copy elsewhere); ``clean``: drop the
    objects of the same name first; ``listing``: restore only the entries of this ``-L``
    list; ``jobs`` > 1: a parallel restore of ``archive``, else one transaction."""
    conninfo, env = for_subprocess(dsn)
    args = [pg_restore, "--exit-on-error"]
    if not keep_owners:
        args += ["--no-owner", "--no-privileges"]
    if clean:
        args += ["--clean", "--if-exists"]
    if listing is not None:
        args.append(f"-L{listing}")
    if section is not None:
        args.append(f"--section={section}")
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    args += ["-d", conninfo]
    return [*args, *([str(archive)] if archive is not None else [])], env


def read_toc(pg_restore: str, archive: Path) -> str:
    """``pg_restore -l`` of an archive file."""
    proc = subprocess.run(
        toc_args(pg_restore, archive), capture_output=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise SubprocessError(f"pg_restore -l of {archive.name} failed: {tail[0]}")
    return proc.stdout.decode("utf-8", "replace")


def restore_file(
    pg_restore: str,
    archive: Path,
    dsn: str,
    *,
    section: str | None,
    jobs: int = 1,
    drop: tuple[str, ...] = SECRET_KINDS,
) -> None:
    """Restore (a section of) an archive file into ``dsn``, leaving secrets behind."""
    toc = read_toc(pg_restore, archive)
    with list_file(toc, drop) as listing:
        args, env = restore_args(
            pg_restore, dsn, section=section, listing=listing, jobs=jobs, archive=archive
        )
        what = f"pg_restore{f' --section={section}' if section else ''} into {describe(dsn)}"
        with PipeProcess(args, env=env, what=what) as proc:
            proc.wait()
