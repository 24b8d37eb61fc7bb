"""Finding PostgreSQL's programs (pg_dump, pg_restore, initdb, ...) of the right major version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from drkit.errors import OperationError

BIN_DIR_ENV = "DRKIT_PG_BIN"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")


def _debian_bin_dirs() -> list[Path]:
    if not _DEBIAN_ROOT.is_dir():
        return []
    dirs = [p / "bin" for p in _DEBIAN_ROOT.iterdir() if p.name.isdigit() and (p / "bin").is_dir()]
    return sorted(dirs, key=lambda p: int(p.parent.name), reverse=True)


@lru_cache(maxsize=64)
def find_binary(name: str, major: int | None = None) -> str:
    """The path of PostgreSQL program ``name``, preferring the server's major version.

    Order: ``$DRKIT_PG_BIN``, ``/usr/lib/postgresql/<major>/bin``, the newest
    ``/usr/lib/postgresql/*/bin``, then ``PATH``.
    """
    candidates: list[Path] = []
    if env_dir := os.environ.get(BIN_DIR_ENV):
        candidates.append(Path(env_dir))
    debian = _debian_bin_dirs()
    if major is not None:
        candidates += [d for d in debian if d.parent.name == str(major)]
        candidates += [d for d in debian if int(d.parent.name) > major]
    else:
        candidates += debian
    for directory in candidates:
        path = directory / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    wanted = f"postgresql-client-{major}" if major else "postgresql-client"
    raise OperationError(
        f"{name} not found: install {wanted} (or set {BIN_DIR_ENV} to PostgreSQL's bin directory)"
    )


@lru_cache(maxsize=64)
def binary_major(path: str) -> int:
    """Major version of a PostgreSQL program (``pg_dump (PostgreSQL) 15.18`` -> 15)."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise OperationError(f"cannot tell the version of {path}: {out.strip()!r}")
    return int(match.group(1))


def find_client(name: str, server_major: int) -> str:
    """A client program able to talk to a server of ``server_major`` (same or newer)."""
    path = find_binary(name, server_major)
    have = binary_major(path)
    if have < server_major:
        raise OperationError(
            f"{path} is version {have} but the server is {server_major}: "
            f"install postgresql-client-{server_major}"
        )
    return path
