"""The recovery settings drkit writes into a data directory: ``recovery.signal`` and one
block of ``postgresql.auto.conf``.

:func:`write_recovery_config` sets ``restore_command`` (``drkit wal-fetch``), the
followed timeline by number (never ``latest`` by accident), the server's own port and
socket directory, hot standby (so the paused server can be read), and an explicit end:
a named restore point (a drill's pause on the way), a time, or an LSN (the last record
of the planned WAL), each with its ``recovery_target_action``.  ``archive_mode = off``
unless the recovered server is production's new primary.

drkit's block (always last, under a marker line) is written anew each time, not
appended to: a drill restarting its recovery, or a base backup of a recovered cluster,
would otherwise carry two.  Recovery settings outside it are dropped too: a base backup
of a recovered cluster carries the ones it was recovered with, which would stop this
recovery at that earlier target.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

_CONF_MARK = "# drkit point-in-time recovery"
_RECOVERY_SETTING_RE = re.compile(
    r"^\s*(restore_command|recovery_target\w*|recovery_end_command|"
    r"archive_cleanup_command|primary_conninfo|primary_slot_name)\s*=",
)


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def write_recovery_config(
    pgdata: Path,
    *,
    restore_command: str,
    target: datetime | None,
    action: str,
    port: int,
    socket_dir: Path,
    archive: bool,
    timeline: int | None = None,
    pause_at: str | None = None,
    target_lsn: str | None = None,
) -> None:
    """Write ``recovery.signal`` and drkit's recovery block (see the module docstring);
    the pid and signal files of the server the base backup was taken from go."""
    settings: dict[str, str] = {
        "restore_command": _conf_value(restore_command),
        "recovery_target_timeline": f"'{timeline}'" if timeline else "'latest'",
        "port": str(port),
        "unix_socket_directories": _conf_value(str(socket_dir)),
        "hot_standby": "on",
        "logging_collector": "off",
    }
    if pause_at is not None:  # a named restore point: stop there, readable, until restarted
        settings["recovery_target_name"] = _conf_value(pause_at)
        settings["recovery_target_action"] = "'pause'"
    elif target is not None:
        settings["recovery_target_time"] = _conf_value(target.astimezone(UTC).isoformat())
        settings["recovery_target_action"] = _conf_value(action)
    elif target_lsn is not None:  # `latest` with pause/shutdown: the last archived record
        settings["recovery_target_lsn"] = _conf_value(target_lsn)
        settings["recovery_target_inclusive"] = "on"
        settings["recovery_target_action"] = _conf_value(action)
    if not archive:
        settings["archive_mode"] = "off"
    lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
    auto = pgdata / "postgresql.auto.conf"
    try:
        text = auto.read_text()
    except FileNotFoundError:
        text = ""
    # drkit's block (always last) is written anew, not appended to: a drill restarting
    # its recovery, or a base backup of a recovered cluster, would otherwise carry two.
    # Recovery settings outside it are dropped too: a base backup of a recovered cluster
    # carries the ones it was recovered with, which would stop this recovery at that
    # earlier target.
    existing = text.splitlines(keepends=True)
    ours = next((i for i, line in enumerate(existing) if line.strip() == _CONF_MARK), None)
    kept = [line for line in existing[:ours] if not _RECOVERY_SETTING_RE.match(line)]
    auto.write_text("".join(kept).rstrip("\n") + f"\n\n{_CONF_MARK}\n{lines}")
    (pgdata / "recovery.signal").write_text("")
    for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        with contextlib.suppress(FileNotFoundError):
            (pgdata / stale).unlink()
