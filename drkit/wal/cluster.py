"""The cluster a WAL command runs for: its data directory and what its pg_control says.

PostgreSQL runs archive_command and restore_command in the data directory and hands them
``pg_wal/<file>``, so the data directory of a WAL file is the one above its ``pg_wal``,
else the working directory.  Its ``global/pg_control`` names the cluster (the system
identifier initdb chose) and fixes its WAL segment size.  The ``DRKIT_WAL_*`` tuning
variables are read here too.

Standard library only: the lean entries (an acknowledged async push, a prefetched
segment) read these before anything else is loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from drkit.errors import OperationError
from drkit.wal.names import segment_size_from_control


class ControlFileError(Exception):
    """pg_control exists but cannot be read."""


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """The integer setting ``$name`` (at least ``minimum``); ``default`` when unset or not
    a number."""
    try:
        return max(minimum, int(os.environ.get(name, "")))
    except ValueError:
        return default


def _candidates(wal_path: Path) -> Iterator[Path]:
    """The directories that may be the data directory of ``wal_path``: the one above its
    ``pg_wal``, then the working directory."""
    if wal_path.parent.name == "pg_wal":
        yield wal_path.parent.parent
    yield Path.cwd()


def data_directory(wal_path: Path) -> Path | None:
    """The data directory of ``wal_path`` (``<pgdata>/pg_wal/<file>``), else the current
    directory (archive_command runs in the data directory) when it is one; None when
    neither holds ``global/pg_control``."""
    for directory in _candidates(wal_path):
        if (directory / "global" / "pg_control").exists():
            return directory
    return None


def system_identifier(data_dir: Path) -> int | None:
    """The cluster's system identifier (the first 8 bytes of pg_control), or None when
    ``data_dir`` is not a data directory."""
    try:
        with open(data_dir / "global" / "pg_control", "rb") as f:
            head = f.read(8)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ControlFileError(
            f"cannot read {data_dir}/global/pg_control for the cluster's identity: {exc.strerror}"
        ) from None
    if len(head) != 8:
        raise ControlFileError(f"{data_dir}/global/pg_control is truncated")
    return int.from_bytes(head, sys.byteorder)


def cluster_segment_size(wal_path: Path) -> int | None:
    """The WAL segment size of the cluster ``wal_path`` belongs to, from its pg_control.

    ``wal_path`` is ``<pgdata>/pg_wal/<file>``; else the current directory is tried
    (archive_command and restore_command run in the data directory).  None when neither
    is a data directory.  An unreadable or unparsable pg_control fails: nothing is
    checked against a guess.
    """
    for data_dir in dict.fromkeys(_candidates(wal_path)):
        control = data_dir / "global" / "pg_control"
        try:
            data = control.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise OperationError(
                f"cannot read {control} for the cluster's WAL segment size: {exc.strerror}"
            ) from None
        try:
            return segment_size_from_control(data)
        except ValueError as exc:
            raise OperationError(f"{control}: {exc}") from None
    return None
