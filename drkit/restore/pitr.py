"""Physical point-in-time recovery: ``drkit restore ENV --point-in-time TS --pgdata DIR``.

1. Pick the newest physical backup that was consistent at or before TS (``latest``: the
   newest backup) — or stop with exit 3 and the reachable window when TS lies before
   the oldest backup or after the newest archived WAL.  drkit never recovers to some
   other point than the one asked for.
2. Unpack its ``base.tar`` into an empty DIR (a non-empty one is refused, exit 4).
3. Write ``recovery.signal`` and the recovery settings into ``postgresql.auto.conf``:
   ``restore_command`` = ``drkit wal-fetch``, ``recovery_target_time``,
   ``recovery_target_timeline = 'latest'`` and the target action; the server gets its own
   port and socket directory.
4. Start PostgreSQL (as the cluster's OS user when drkit runs as root), wait until
   recovery reached its target, and report the point actually reached
   (``pg_last_xact_replay_timestamp()``) and the timeline.  PostgreSQL's own "recovery
   ended before configured recovery target was reached" is turned into exit 3 too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drkit.backup.catalog import Manifest, iso, list_backups
from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, OperationError, SafetyRefused, UsageError
from drkit.pg.cluster import chown_tree, cluster_os_user, free_port, run_as
from drkit.storage.repository import Repository
from drkit.wal import SPOOL_DIR, WAL_DIR
from drkit.wal_names import is_archivable

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT_ENV = "DRKIT_RECOVERY_TIMEOUT"
DEFAULT_RECOVERY_TIMEOUT = 3600.0
ACTIONS = ("promote", "pause", "shutdown")
LOG_NAME = "drkit-recovery.log"
_TAR_BUFSIZE = 1024 * 1024

ProgressCallback = Callable[[str, int], None]

_STOPPING_RE = re.compile(r"recovery stopping (?:before|after) .*?time ([0-9-]+ [0-9:.]+[+-]\d\d)")
_NEW_TLI_RE = re.compile(r"selected new timeline ID: (\d+)")
_NOT_REACHED = "recovery ended before configured recovery target was reached"
_CONF_MARK = "# drkit point-in-time recovery"
_RECOVERY_SETTING_RE = re.compile(
    r"^\s*(restore_command|recovery_target\w*|recovery_end_command|"
    r"archive_cleanup_command|primary_conninfo|primary_slot_name)\s*=",
)


@dataclass
class Window:
    """What point-in-time recovery can reach from this repository."""

    start: datetime | None  # the oldest physical backup's consistent point
    end: datetime | None  # when the newest WAL file was archived
    last_wal: str | None

    def describe(self) -> str:
        if self.start is None:
            return "no physical backups, nothing is reachable (run drkit backup ENV --physical)"
        end = iso(self.end) if self.end else "the end of the archived WAL (none archived yet)"
        return f"reachable window: {iso(self.start)} .. {end}"

    def to_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "last_wal": self.last_wal}


@dataclass
class PitrResult:
    backup_id: str
    target: str  # ISO timestamp or "latest"
    pgdata: str
    port: int
    action: str
    started: bool
    window: Window
    reached_at: datetime | None = None
    timeline: int | None = None
    lsn: str | None = None
    state: str = "prepared"  # prepared | promoted | paused | shut down
    log_file: str | None = None
    phases: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "target": self.target,
            "pgdata": self.pgdata,
            "port": self.port,
            "action": self.action,
            "started": self.started,
            "state": self.state,
            "reached_at": iso(self.reached_at),
            "timeline": self.timeline,
            "lsn": self.lsn,
            "window": self.window.to_dict(),
            "log_file": self.log_file,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
        }


def consistent_point(manifest: Manifest) -> datetime:
    return manifest.consistent_at or manifest.finished_at


def recoverable_window(repo: Repository, backups: list[Manifest] | None = None) -> Window:
    backups = backups if backups is not None else list_backups(repo, "physical")
    start = min((consistent_point(b) for b in backups), default=None)
    wal = [i for i in repo.list(WAL_DIR) if is_archivable(_wal_name(i.key))]
    newest = max(wal, key=lambda i: i.modified, default=None)
    return Window(
        start,
        newest.modified.astimezone(UTC) if newest else None,
        _wal_name(newest.key) if newest else None,
    )


def _wal_name(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    for suffix in (".age", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name


def choose_backup(backups: list[Manifest], target: datetime | None, window: Window) -> Manifest:
    """The newest physical backup consistent at or before ``target`` (None: latest)."""
    if not backups:
        raise CheckFailed(f"no physical backup to recover from: {window.describe()}")
    if target is None:
        return max(backups, key=lambda b: (consistent_point(b), b.id))
    if target.tzinfo is None:
        raise UsageError("the recovery target must carry a time zone")
    candidates = [b for b in backups if consistent_point(b) <= target]
    if not candidates:
        raise CheckFailed(
            f"recovery target {iso(target)} is before the oldest physical backup "
            f"(consistent at {iso(window.start)}); {window.describe()}"
        )
    if window.end is None or target > window.end:
        raise CheckFailed(
            f"recovery target {iso(target)} is after the newest archived WAL "
            f"({window.last_wal or 'none'}); {window.describe()}"
        )
    return max(candidates, key=lambda b: (consistent_point(b), b.id))


def _check_empty(pgdata: Path) -> None:
    if pgdata.exists():
        if not pgdata.is_dir():
            raise SafetyRefused(f"{pgdata} exists and is not a directory")
        if any(pgdata.iterdir()):
            raise SafetyRefused(
                f"{pgdata} is not empty: point-in-time recovery only writes into an empty "
                "directory (choose a new one; drkit never overwrites a data directory)"
            )


def unpack_base(
    repo: Repository, manifest: Manifest, pgdata: Path, on_progress: ProgressCallback | None
) -> None:
    base = next((o for o in manifest.objects if o.name.startswith("base.tar")), None)
    if base is None:
        raise CheckFailed(f"backup {manifest.id} has no base.tar object")
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    tar_bin = shutil.which("tar")
    with repo.open_decoded(base) as stream:
        counted = _Counted(stream, on_progress)
        if tar_bin:
            _extract_with_tar(tar_bin, counted, pgdata)
        else:  # pragma: no cover - every Debian/Alpine image has tar
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=counted, mode="r|", bufsize=_TAR_BUFSIZE, copybufsize=_TAR_BUFSIZE
            ) as tar:
                tar.extractall(pgdata, filter="data")
        # read to EOF so the sha256 of the stored object is checked
        while counted.read(_TAR_BUFSIZE):
            pass
    for sub in ("pg_wal", "pg_wal/archive_status"):
        (pgdata / sub).mkdir(exist_ok=True)
    (pgdata / "pg_wal").chmod(0o700)


def _extract_with_tar(tar_bin: str, stream: _Counted, pgdata: Path) -> None:
    """Extract through GNU tar: decoding here and writing files there use two cores.

    GNU tar refuses member names with ``..``, strips leading ``/`` and delays symlinks,
    so an archive cannot write outside ``pgdata``.
    """
    from drkit.pg.process import PipeProcess

    args = [tar_bin, "-x", "-f", "-", "-C", str(pgdata), "--no-same-owner"]
    with PipeProcess(args, stdin=subprocess.PIPE, what="tar -x") as proc:
        try:
            while chunk := stream.read(_TAR_BUFSIZE):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # tar stopped early: wait() reports why
        proc.wait()


class _Counted:
    def __init__(self, source: Any, on_progress: ProgressCallback | None) -> None:
        self._source = source
        self._on_progress = on_progress

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._source.read(size)
        if data and self._on_progress is not None:
            self._on_progress("base.tar", len(data))
        return data


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
) -> None:
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


def restore_point_in_time(
    policy: Policy,
    target: datetime | None,
    pgdata: Path,
    *,
    port: int | None = None,
    target_action: str = "promote",
    start: bool = True,
    archive: bool = True,
    repo: Repository | None = None,
    on_progress: ProgressCallback | None = None,
    timeout: float | None = None,
    backup: Manifest | None = None,
    pause_at: str | None = None,
    at_pause: Callable[[PitrResult], None] | None = None,
) -> PitrResult:
    """Recover the cluster of ``policy`` to ``target`` (None: everything archived) in pgdata.

    ``backup`` recovers from that base backup instead of the newest one before the
    target.  ``pause_at`` names a restore point on the way: recovery pauses there,
    ``at_pause`` runs against the paused (read-only) server, then the server restarts
    and recovery goes on to the target (a drill compares row counts this way)."""
    from drkit.walcmd import restore_command

    if target_action not in ACTIONS:
        raise UsageError(f"--target-action must be one of {', '.join(ACTIONS)}")
    if target is not None and (target.tzinfo is None or target.utcoffset() is None):
        raise UsageError("--point-in-time needs a time zone (Z or +01:00)")
    pgdata = Path(pgdata).absolute()
    _check_empty(pgdata)
    repo = repo or Repository.for_policy(policy)
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    backups = list_backups(repo, "physical")
    window = recoverable_window(repo, backups)
    manifest = choose_backup(backups, target, window) if backup is None else backup
    if backup is not None and target is not None and target < consistent_point(backup):
        raise CheckFailed(
            f"recovery target {iso(target)} is before backup {backup.id} is consistent "
            f"({iso(consistent_point(backup))}); {window.describe()}"
        )
    log.info("recovering %s from %s to %s", policy.name, manifest.id, iso(target) or "latest")
    user = cluster_os_user()
    if start:  # no server of the backup's exact major: refuse before fetching anything
        from drkit.pg.binaries import find_server

        find_server(
            int(manifest.server_version.split(".")[0]) if manifest.server_version else None,
            for_user=user,
        )
    port = port or free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="drkit-pitr-"))
    run_dir.chmod(0o755)
    socket_dir = run_dir
    policy_dir = Path(policy.source).parent
    command = restore_command(policy.name, policy_dir, user)
    from drkit.backup.walchain import recovery_timeline

    follow, newest = recovery_timeline(repo, manifest)
    if not newest:
        log.info(
            "following timeline %d: newer timelines branched off before %s", follow, manifest.id
        )
    created = not pgdata.exists()

    def configure(pause: str | None) -> None:
        write_recovery_config(
            pgdata,
            restore_command=command,
            target=target,
            action=target_action,
            port=port,
            socket_dir=socket_dir,
            archive=archive,
            timeline=None if newest else follow,
            pause_at=pause,
        )

    try:
        unpack_base(repo, manifest, pgdata, on_progress)
        phases["fetch_unpack"] = time.monotonic() - t0
        configure(pause_at)
        (pgdata / "log").mkdir(exist_ok=True)
        from drkit.wal import write_repo_hint

        write_repo_hint(policy, pgdata / "pg_wal")
        chown_tree(pgdata, user)
        chown_tree(run_dir, user)
    except BaseException:
        if created:
            shutil.rmtree(pgdata, ignore_errors=True)
        else:
            for child in pgdata.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    result = PitrResult(
        backup_id=manifest.id,
        target=iso(target) or "latest",
        pgdata=str(pgdata),
        port=port,
        action=target_action if target is not None else "promote",
        started=False,
        window=window,
        log_file=str(pgdata / "log" / LOG_NAME),
        phases=phases,
    )
    if not start:
        return result
    limit = timeout or float(os.environ.get(RECOVERY_TIMEOUT_ENV, DEFAULT_RECOVERY_TIMEOUT))
    t1 = time.monotonic()
    server = _RecoveringServer(pgdata, port, socket_dir, user, policy, manifest)
    server.start(limit)
    result.started = True
    if pause_at is not None:
        server.wait_until_done("pause", limit, window, target, pause_at)
        server.report(result)
        paused = time.monotonic()
        if at_pause is not None:
            at_pause(result)
        phases["paused"] = time.monotonic() - paused
        server.stop(limit)
        configure(None)
        for name in ("postgresql.auto.conf", "recovery.signal"):
            chown_tree(pgdata / name, user)
        server.start(limit)
    server.wait_until_done(result.action, limit, window, target)
    server.report(result)
    phases["replay"] = time.monotonic() - t1
    shutil.rmtree(pgdata / "pg_wal" / SPOOL_DIR, ignore_errors=True)
    return result


class _RecoveringServer:
    def __init__(
        self,
        pgdata: Path,
        port: int,
        socket_dir: Path,
        user: str | None,
        policy: Policy,
        manifest: Manifest,
    ) -> None:
        from drkit.pg.binaries import find_server

        self.pgdata = pgdata
        self.port = port
        self.socket_dir = socket_dir
        self.user = user
        self.policy = policy
        self.manifest = manifest
        self.log_file = pgdata / "log" / LOG_NAME
        major = int(manifest.server_version.split(".")[0]) if manifest.server_version else None
        # a data directory runs only on its own major's server
        self.pg_ctl = str(find_server(major, for_user=user).bin_dir / "pg_ctl")

    def start(self, timeout: float) -> None:
        # -W: recovery to a target with action "shutdown" never accepts connections
        run_as(
            [self.pg_ctl, "-D", str(self.pgdata), "-l", str(self.log_file), "-W", "start"],
            self.user,
            what=f"starting PostgreSQL for recovery (log: {self.log_file})",
            timeout=120,
        )

    def stop(self, timeout: float) -> None:
        run_as(
            [self.pg_ctl, "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
            self.user,
            what=f"stopping the recovering PostgreSQL (log: {self.log_file})",
            timeout=timeout,
        )

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return True

    def dsn(self, host: str) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            self.policy.database.url.get_secret_value(),
            host=host,
            port=str(self.port),
            connect_timeout="5",
        )

    def query(self, sql: str) -> Any:
        import psycopg

        last: Exception | None = None
        for host in (str(self.socket_dir), "127.0.0.1"):
            try:
                with psycopg.connect(self.dsn(host), autocommit=True) as conn:
                    row = conn.execute(sql).fetchone()
                    return row
            except psycopg.Error as exc:
                last = exc
        raise DatabaseError(f"cannot query the recovering server on port {self.port}: {last}")

    def _died(self, window: Window, target: datetime | None, point: str | None = None) -> None:
        text = self.log_text()
        if _NOT_REACHED in text:
            wanted = f"restore point {point!r}" if point else iso(target) if target else "latest"
            raise CheckFailed(
                f"recovery target {wanted} was not reached: the "
                f"archived WAL ends before it; {window.describe()} (log: {self.log_file})"
            )
        fatal = [ln for ln in text.splitlines() if "FATAL" in ln or "PANIC" in ln]
        raise OperationError(
            "PostgreSQL stopped during recovery: "
            f"{fatal[-1] if fatal else 'see the log'} (log: {self.log_file})"
        )

    def wait_until_done(
        self,
        action: str,
        timeout: float,
        window: Window,
        target: datetime | None,
        point: str | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                if action == "shutdown" and "database system is shut down" in self.log_text():
                    text = self.log_text()
                    if _NOT_REACHED in text or not _STOPPING_RE.search(text):
                        self._died(window, target, point)
                    return
                time.sleep(0.5)  # pg_ctl -W may return before the pid file is written
                if not self.running():
                    self._died(window, target, point)
            else:
                with contextlib.suppress(DatabaseError):
                    row = self.query(
                        "SELECT pg_is_in_recovery(), "
                        "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() "
                        "ELSE '' END"
                    )
                    in_recovery, pause_state = row
                    if not in_recovery:
                        return
                    if action == "pause" and pause_state == "paused":
                        return
            if time.monotonic() > deadline:
                raise OperationError(
                    f"recovery did not finish within {timeout:.0f}s (log: {self.log_file}); "
                    f"the server is still running on port {self.port}"
                )
            time.sleep(0.3)

    def report(self, result: PitrResult) -> None:
        text = self.log_text()
        tli = _NEW_TLI_RE.findall(text)
        if self.running():
            row = self.query(
                "SELECT pg_last_xact_replay_timestamp(), pg_is_in_recovery(), "
                "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text "
                "ELSE pg_current_wal_lsn()::text END, "
                "CASE WHEN pg_is_in_recovery() THEN NULL "
                "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int "
                "END, (SELECT timeline_id FROM pg_control_checkpoint())"
            )
            reached, in_recovery, lsn, current_tli, checkpoint_tli = row
            result.reached_at = reached.astimezone(UTC) if reached else None
            result.lsn = lsn
            result.timeline = current_tli or (int(tli[-1]) if tli else checkpoint_tli)
            result.state = "paused" if in_recovery else "promoted"
        else:
            result.state = "shut down"
            match = _STOPPING_RE.findall(text)
            if match:
                with contextlib.suppress(ValueError):
                    result.reached_at = datetime.fromisoformat(match[-1]).astimezone(UTC)
            result.timeline = int(tli[-1]) if tli else self.manifest.timeline
        if result.reached_at is None:
            result.reached_at = consistent_point(self.manifest)
