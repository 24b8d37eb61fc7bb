"""``pg_restore`` into a database: one argument list, one way to leave secrets behind.

An archive's table of contents can carry credentials: a ``USER MAPPING`` holds the
remote user's password in its options.  :func:`restore_list` turns a TOC listing
(``pg_restore -l``) into a ``-L`` list without those entries, and :func:`restore_args`
builds the command every caller runs, so no restore path forgets the filter.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from drkit.errors import SubprocessError
from drkit.pg.conninfo import describe, for_subprocess
from drkit.pg.process import PipeProcess

# TOC entry kinds never restored into a copy: they hold other systems' credentials
SECRET_KINDS = ("USER MAPPING",)
# large objects: their bytes cannot be masked, so a sanitized copy leaves them out
LARGE_OBJECT_KINDS = ("BLOB", "BLOB METADATA", "BLOBS", "LARGE OBJECT")
_ENTRY_RE = re.compile(r"^\s*\d+;\s+\d+\s+\d+\s+(.*)$")


def restore_list(toc: str, drop: tuple[str, ...] = SECRET_KINDS) -> str:
    """A ``pg_restore -L`` list: the TOC listing without entries of the ``drop`` kinds."""
    kept = []
    for line in toc.splitlines():
        m = _ENTRY_RE.match(line)
        if m and m.group(1).startswith(tuple(f"{kind} " for kind in drop)):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


@contextlib.contextmanager
def list_file(toc: str, drop: tuple[str, ...] = SECRET_KINDS) -> Iterator[Path]:
    """The filtered list in a temp file, removed on the way out."""
    fd, name = tempfile.mkstemp(
        prefix="drkit-toc-", suffix=".list", dir=os.environ.get("DRKIT_TMPDIR") or None
    )
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(restore_list(toc, drop))
        yield path
    finally:
        path.unlink(missing_ok=True)


def read_toc(pg_restore: str, archive: Path) -> str:
    """``pg_restore -l`` of an archive file."""
    proc = subprocess.run(
        [pg_restore, "-l", str(archive)], capture_output=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise SubprocessError(f"pg_restore -l of {archive.name} failed: {tail[0]}")
    return proc.stdout.decode("utf-8", "replace")


def restore_args(
    pg_restore: str,
    dsn: str,
    *,
    section: str | None,
    listing: Path,
    jobs: int = 1,
) -> tuple[list[str], dict[str, str]]:
    """The pg_restore command (password in the environment) for ``dsn``, no owners or ACLs."""
    conninfo, env = for_subprocess(dsn)
    args = [pg_restore, "--no-owner", "--no-acl", "--exit-on-error", f"-L{listing}"]
    if section is not None:
        args.append(f"--section={section}")
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    return [*args, "-d", conninfo], env


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
        args, env = restore_args(pg_restore, dsn, section=section, listing=listing, jobs=jobs)
        what = f"pg_restore{f' --section={section}' if section else ''} into {describe(dsn)}"
        with PipeProcess([*args, str(archive)], env=env, what=what) as proc:
            proc.wait()
