"""Physical point-in-time recovery: ``drkit restore ENV --point-in-time TS --pgdata DIR``.

1. Plan before writing anything (:func:`plan_recovery`): the timeline to follow
   (``--timeline current``: production's, as recorded in ``<env>/timeline.json``; see
   :mod:`drkit.timelines`), the newest physical backup on that timeline consistent at or
   before TS (``latest``: the newest one), and the WAL chain from it along the timeline.
   A target beyond the unbroken chain, before the oldest backup, or (``latest``) a gap
   below newer segments without ``--allow-gap`` is exit 3 with the reachable window.
   drkit never recovers to some other point than the one asked for.
2. Unpack its ``base.tar`` into an empty DIR (a non-empty one is refused, exit 4, as is
   one another user than root or the cluster's could change: :mod:`drkit.restore.datadir`,
   whose extraction never writes through a link it did not make).  An
   incremental backup (PostgreSQL 17+) is restored with its whole chain: the full
   backup and every incremental down to it are unpacked aside and combined into DIR
   with ``pg_combinebackup`` of the backup's major; a backup whose chain is broken is
   never chosen (exit 3 when asked for by id).
3. Write ``recovery.signal`` and the recovery settings into ``postgresql.auto.conf``:
   ``restore_command`` = ``drkit wal-fetch``, the target (a time; for ``latest`` with
   pause/shutdown the last whole WAL record of the chain), the target action, the
   followed timeline by number, ``archive_mode = off`` unless ``--archive-mode
   preserve`` (then the server is the new primary); the server gets its own port and
   socket directory.  A server that does not archive is marked as a restore test
   (``drkit-restored.json``), so its WAL can never be recorded as production's.
4. Start PostgreSQL (as the cluster's OS user when drkit runs as root), wait until
   recovery reached its target, and report the point actually reached
   (``pg_last_xact_replay_timestamp()``), the timeline followed and the others found.
   PostgreSQL's own "recovery ended before configured recovery target was reached" is
   turned into exit 3 too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drkit.backup.catalog import Manifest, iso, list_backups
from drkit.backup.chain import by_id, chain_ok, resolve_chain
from drkit.backup.order import chronological
from drkit.backup.walchain import (
    Reach,
    WalIndex,
    archived_timelines,
    backup_on_timeline,
    reach_on_timeline,
    timeline_history,
)
from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, OperationError, SafetyRefused, UsageError
from drkit.pg.cluster import chown_tree, cluster_os_user, free_port, run_as
from drkit.progress import Meter, MeteredReader, OnProgress
from drkit.restore.datadir import (
    Owner,
    claim_data_directory,
    extract_tar,
    guard_data_directory,
)
from drkit.storage.repository import Repository
from drkit.streams import ReadAhead
from drkit.timelines import clear_restore_marker, write_restore_marker
from drkit.wal import SPOOL_DIR, find_wal_key, open_wal_object
from drkit.wal_names import history_name

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT_ENV = "DRKIT_RECOVERY_TIMEOUT"
DEFAULT_RECOVERY_TIMEOUT = 3600.0
ACTIONS = ("promote", "pause", "shutdown")
LOG_NAME = "drkit-recovery.log"
_TAR_BUFSIZE = 1024 * 1024

ProgressCallback = OnProgress  # phases "unpack" (bytes of base.tar), "WAL replay"

_STOPPING_RE = re.compile(r"recovery stopping (?:before|after) .*?time ([0-9-]+ [0-9:.]+[+-]\d\d)")
_STOPPED_AT_LSN_RE = re.compile(r"recovery stopping (?:before|after) WAL location")
_LAST_XACT_RE = re.compile(r"last completed transaction was at log time ([0-9-]+ [0-9:.]+[+-]\d\d)")
_NEW_TLI_RE = re.compile(r"selected new timeline ID: (\d+)")
_NOT_REACHED = "recovery ended before configured recovery target was reached"
#: how long a recovering server may show no live postmaster before it counts as dead
_DOWN_GRACE = 5.0
_CONF_MARK = "# drkit point-in-time recovery"
_RECOVERY_SETTING_RE = re.compile(
    r"^\s*(restore_command|recovery_target\w*|recovery_end_command|"
    r"archive_cleanup_command|primary_conninfo|primary_slot_name)\s*=",
)


@dataclass
class Window:
    """What point-in-time recovery can reach from this repository.

    ``end`` is where the archive stops being unbroken on the followed timeline: when a
    segment is missing below newer ones, the window ends before the gap."""

    start: datetime | None  # the oldest usable physical backup's consistent point
    end: datetime | None  # when the last reachable WAL segment was archived
    last_wal: str | None
    timeline: int | None = None
    missing: str | None = None  # the first missing segment, when newer ones exist

    def describe(self) -> str:
        if self.start is None:
            return "no physical backups, nothing is reachable (run drkit backup ENV --physical)"
        end = iso(self.end) if self.end else "the end of the archived WAL (none archived yet)"
        where = f" on timeline {self.timeline}" if self.timeline is not None else ""
        text = f"reachable window{where}: {iso(self.start)} .. {end}"
        if self.missing:
            text += f" (WAL segment {self.missing} is missing; newer segments exist past the gap)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "last_wal": self.last_wal,
            "timeline": self.timeline,
            "missing": self.missing,
        }


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
    followed: TimelineChoice | None = None
    archive_mode: str = "off"
    gap: Reach | None = None  # set when --allow-gap recovered up to a gap
    chain: list[str] = field(default_factory=list)  # full first; one unless incremental

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain or [self.backup_id],
            "followed_timeline": self.followed.timeline if self.followed else None,
            "timeline_source": self.followed.source if self.followed else None,
            "production_timeline": self.followed.recorded if self.followed else None,
            "other_timelines": self.followed.others if self.followed else [],
            "archive_mode": self.archive_mode,
            "stopped_at_gap": self.gap.to_dict() if self.gap else None,
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
            "phases_seconds": {k: round(v, 3) for k, v in self.phases.items()},
        }


def consistent_point(manifest: Manifest) -> datetime:
    return manifest.consistent_at or manifest.finished_at


@dataclass
class TimelineChoice:
    """The timeline recovery follows, why, and the others the archive holds."""

    timeline: int
    source: str  # recorded | newest-backup | archive-latest | requested
    recorded: int | None  # production's timeline as recorded in the repository
    others: list[int]


TIMELINE_CHOICES = ("current", "latest")


def parse_timeline(value: str) -> str | int:
    """``--timeline current|latest|N`` (N a decimal timeline ID, 1 or more)."""
    if value in TIMELINE_CHOICES:
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(
            f"--timeline must be current, latest or a timeline ID (1, 2, ...), not {value!r}"
        )
    return number


def choose_timeline(
    repo: Repository, index: WalIndex, backups: list[Manifest], wanted: str | int
) -> TimelineChoice:
    """``current``: production's timeline as recorded in ``<env>/timeline.json`` (by
    ``drkit promote-timeline`` or wal-push from a server that is not a restore test);
    with nothing recorded yet, the timeline of the newest physical backup (backups are
    taken from the policy's own database).  ``latest``: the highest timeline in the
    archive, as PostgreSQL's ``recovery_target_timeline = 'latest'``.  A number: that one.
    """
    from drkit.timelines import recorded_timeline

    recorded = recorded_timeline(repo)
    archived = archived_timelines(index)
    if wanted == "latest":
        timeline, source = max(archived), "archive-latest"
    elif isinstance(wanted, int):
        timeline, source = wanted, "requested"
    elif recorded is not None:
        timeline, source = recorded, "recorded"
    elif backups:
        newest = chronological(backups)[-1]
        timeline, source = int(newest.timeline or 1), "newest-backup"
    else:
        timeline, source = 1, "newest-backup"
    return TimelineChoice(timeline, source, recorded, [t for t in archived if t != timeline])


@dataclass
class RecoveryPlan:
    manifest: Manifest
    window: Window
    followed: TimelineChoice
    reach: Reach
    #: the base backups to restore, full first (one, unless ``manifest`` is incremental)
    chain: list[Manifest] = field(default_factory=list)


def plan_recovery(
    repo: Repository,
    target: datetime | None,
    *,
    timeline: str | int = "current",
    backup: Manifest | None = None,
    allow_gap: bool = False,
) -> RecoveryPlan:
    """Choose the timeline, the base backup and check the WAL chain before anything is
    written: a target the unbroken archive does not reach is exit 3, never a recovery
    to some other point.  ``latest`` with a gap below newer segments is exit 3 too,
    unless ``allow_gap`` says to stop at the gap on purpose."""
    if target is not None and (target.tzinfo is None or target.utcoffset() is None):
        raise UsageError("the recovery target must carry a time zone")
    index = WalIndex.load(repo)
    backups = list_backups(repo, "physical")
    followed = choose_timeline(repo, index, backups, timeline)
    tli = followed.timeline
    if (
        tli > 1
        and not index.has(history_name(tli))
        and not any(int(b.timeline or 1) == tli for b in backups)
    ):
        raise CheckFailed(
            f"timeline {tli} is not in the archive of {repo.location} (no {history_name(tli)}); "
            f"timelines found: {', '.join(map(str, archived_timelines(index)))}"
        )
    history = timeline_history(repo, tli, index)
    known = by_id(backups)
    usable = [b for b in backups if backup_on_timeline(b, tli, history) and chain_ok(b, known)]
    start = min((consistent_point(b) for b in usable), default=None)
    empty = Window(start, None, None, tli)
    if backup is not None:
        if not backup_on_timeline(backup, tli, history):
            raise CheckFailed(
                f"backup {backup.id} (timeline {backup.timeline}) is not on timeline {tli}, "
                f"which recovery follows ({followed.source}); choose another --timeline"
            )
        if target is not None and target < consistent_point(backup):
            raise CheckFailed(
                f"recovery target {iso(target)} is before backup {backup.id} is consistent "
                f"({iso(consistent_point(backup))}); {empty.describe()}"
            )
        resolve_chain(backup, known)  # a broken chain: exit 3 naming the missing link
        manifest = backup
    elif not usable:
        others = (
            f" (other physical backups are on timelines {sorted({int(b.timeline or 1) for b in backups})})"
            if backups
            else ""
        )
        raise CheckFailed(
            f"no physical backup to recover from on timeline {tli}{others}: {empty.describe()}"
        )
    elif target is None:
        manifest = chronological(usable)[-1]
    else:
        candidates = [b for b in usable if consistent_point(b) <= target]
        if not candidates:
            oldest = min(consistent_point(b) for b in usable)
            newest = chronological(usable)[-1]
            reach = reach_on_timeline(repo, newest, tli, index, history)
            window = _window(start, reach)
            raise CheckFailed(
                f"recovery target {iso(target)} is before the oldest physical backup "
                f"(consistent at {iso(oldest)}); {window.describe()}"
            )
        manifest = chronological(candidates)[-1]
    reach = reach_on_timeline(repo, manifest, tli, index, history)
    window = _window(start, reach)
    if reach.required_missing:
        raise CheckFailed(
            f"backup {manifest.id} cannot be restored: WAL segment {reach.missing}, which it "
            f"needs to become consistent, is missing from the archive (drkit verify names "
            f"every gap); {window.describe()}"
        )
    if target is None:
        if reach.gap and not allow_gap:
            raise CheckFailed(
                f"the archive has a gap on timeline {tli}: WAL segment {reach.missing} is "
                f"missing and {reach.newer_segments} newer segment(s) exist up to "
                f"{reach.newest_segment}; the last reachable point is {reach.last_segment} "
                f"(archived {iso(reach.end)}). Restore the missing segment, or pass "
                "--allow-gap to recover up to the gap on purpose"
            )
    elif reach.end is None or target > reach.end:
        raise CheckFailed(
            f"recovery target {iso(target)} is after the last WAL reachable without a gap "
            f"({reach.last_segment or 'none'}); {window.describe()}"
        )
    return RecoveryPlan(manifest, window, followed, reach, resolve_chain(manifest, known))


_RECORD_LSN_RE = re.compile(r"\blsn: ([0-9A-F]+/[0-9A-F]+),")


def last_record_lsn(repo: Repository, manifest: Manifest, segment: str) -> str:
    """The LSN of the last whole WAL record in archived ``segment`` (pg_waldump)."""
    from drkit.pg.binaries import find_binary

    key = find_wal_key(repo, segment)
    if key is None:
        raise CheckFailed(f"WAL segment {segment} vanished from {repo.location} meanwhile")
    major = int(manifest.server_version.split(".")[0]) if manifest.server_version else None
    waldump = find_binary("pg_waldump", major)
    with tempfile.TemporaryDirectory(prefix="drkit-waldump-") as tmp:
        path = Path(tmp) / segment
        with open_wal_object(repo, key) as stream, open(path, "wb") as out:
            shutil.copyfileobj(stream, out, _TAR_BUFSIZE)
        proc = subprocess.run(
            [waldump, "--path", tmp, segment],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    found = _RECORD_LSN_RE.findall(proc.stdout)
    if not found:
        raise CheckFailed(
            f"no whole WAL record found in {segment} to stop at "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pg_waldump printed none'}); "
            "recover latest with --target-action promote, or give a time target"
        )
    return str(found[-1])


def _window(start: datetime | None, reach: Reach) -> Window:
    return Window(
        start, reach.end, reach.last_segment, reach.timeline, reach.missing if reach.gap else None
    )


def _check_empty(pgdata: Path) -> None:
    if pgdata.exists():
        if not pgdata.is_dir():
            raise SafetyRefused(f"{pgdata} exists and is not a directory")
        if any(pgdata.iterdir()):
            raise SafetyRefused(
                f"{pgdata} is not empty: point-in-time recovery only writes into an empty "
                "directory (choose a new one; drkit never overwrites a data directory)"
            )


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
    from drkit.pg.binaries import binary_major, find_binary

    last = chain[-1]
    major = int(last.server_version.split(".")[0]) if last.server_version else None
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
    for sub in ("pg_wal", "pg_wal/archive_status"):
        (pgdata / sub).mkdir(exist_ok=True)
    (pgdata / "pg_wal").chmod(0o700)


def unpack_base(
    repo: Repository, manifest: Manifest, pgdata: Path, on_progress: ProgressCallback | None
) -> None:
    """Extract the backup's base.tar into ``pgdata`` (made, or taken empty, and kept
    root's own meanwhile) without ever writing through a link drkit did not make
    (:mod:`drkit.restore.datadir`)."""
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
            while counted.read(_TAR_BUFSIZE):
                pass
    finally:
        os.close(fd)
    for sub in ("pg_wal", "pg_wal/archive_status"):
        (pgdata / sub).mkdir(exist_ok=True)
    (pgdata / "pg_wal").chmod(0o700)


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


def restore_point_in_time(
    policy: Policy,
    target: datetime | None,
    pgdata: Path,
    *,
    port: int | None = None,
    target_action: str = "promote",
    start: bool = True,
    archive: bool = False,
    timeline: str | int = "current",
    allow_gap: bool = False,
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
    and recovery goes on to the target (a drill compares row counts this way).

    ``archive`` (``--archive-mode preserve``) keeps the server's archive_command: it is
    production's new primary.  Otherwise archiving is off and the data directory is
    marked as a restore test, whose pushes never record a timeline as production's.
    ``timeline``: ``current`` (production's), ``latest`` or a number; ``allow_gap``
    recovers ``latest`` up to a gap in the archive instead of refusing."""
    from drkit.walcmd import restore_command

    if target_action not in ACTIONS:
        raise UsageError(f"--target-action must be one of {', '.join(ACTIONS)}")
    if target is not None and (target.tzinfo is None or target.utcoffset() is None):
        raise UsageError("--point-in-time needs a time zone (Z or +01:00)")
    if isinstance(timeline, str):
        timeline = parse_timeline(timeline)
    pgdata = Path(pgdata).absolute()
    _check_empty(pgdata)
    # root fills it for the cluster's OS user: nobody else may own it or what is above it
    guard_data_directory(pgdata, Owner.cluster(cluster_os_user()))
    repo = repo or Repository.for_policy(policy)
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    plan = plan_recovery(repo, target, timeline=timeline, backup=backup, allow_gap=allow_gap)
    manifest, window = plan.manifest, plan.window
    follow = plan.followed.timeline
    log.info(
        "recovering %s from %s to %s on timeline %d (%s)",
        policy.name,
        manifest.id,
        iso(target) or "latest",
        follow,
        plan.followed.source,
    )
    user = cluster_os_user()
    if start:  # no server of the backup's exact major: refuse before fetching anything
        from drkit.pg.binaries import find_server

        find_server(
            int(manifest.server_version.split(".")[0]) if manifest.server_version else None,
            for_user=user,
        )
    # `latest` has no recovery target of its own: to pause or shut down there, stop
    # after the last WAL record the unbroken archive holds
    target_lsn = None
    if target is None and target_action != "promote":
        target_lsn = last_record_lsn(repo, manifest, str(plan.reach.last_segment))
    port = port or free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="drkit-pitr-"))
    run_dir.chmod(0o755)
    socket_dir = run_dir
    policy_dir = Path(policy.source).parent
    command = restore_command(policy.name, policy_dir, user)
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
            timeline=follow,
            pause_at=pause,
            target_lsn=target_lsn,
        )

    try:
        unpack_chain(repo, plan.chain or [manifest], pgdata, on_progress)
        phases["fetch_unpack"] = time.monotonic() - t0
        configure(pause_at)
        (pgdata / "log").mkdir(exist_ok=True)
        from drkit.wal import write_repo_hint

        write_repo_hint(policy, pgdata / "pg_wal")
        if archive:
            clear_restore_marker(pgdata)
        else:
            write_restore_marker(
                pgdata,
                {
                    "environment": policy.name,
                    "backup_id": manifest.id,
                    "target": iso(target) or "latest",
                    "timeline_followed": follow,
                    "restored_at": iso(datetime.now(UTC)),
                },
            )
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
        action=target_action,
        started=False,
        window=window,
        log_file=str(pgdata / "log" / LOG_NAME),
        phases=phases,
        followed=plan.followed,
        archive_mode="preserve" if archive else "off",
        gap=plan.reach if plan.reach.gap else None,
        chain=[m.id for m in plan.chain],
    )
    if not start:
        return result
    limit = timeout or float(os.environ.get(RECOVERY_TIMEOUT_ENV, DEFAULT_RECOVERY_TIMEOUT))
    t1 = time.monotonic()
    server = _RecoveringServer(pgdata, port, socket_dir, user, policy, manifest)
    replay = Meter(on_progress, "WAL replay")
    server.start(limit)
    result.started = True
    if pause_at is not None:
        server.wait_until_done("pause", limit, window, target, pause_at)
        server.report(result)
        replay.finish()
        paused = time.monotonic()
        if at_pause is not None:
            at_pause(result)
        phases["paused"] = time.monotonic() - paused
        server.stop(limit)
        configure(None)
        for name in ("postgresql.auto.conf", "recovery.signal"):
            chown_tree(pgdata / name, user)
        replay = Meter(on_progress, "WAL replay")
        server.start(limit)
    server.wait_until_done(result.action, limit, window, target)
    server.report(result)
    replay.finish()
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
        down_since: float | None = None
        while True:
            if not self.running():
                text = self.log_text()
                if action == "shutdown" and "database system is shut down" in text:
                    stopped = _STOPPING_RE.search(text) or _STOPPED_AT_LSN_RE.search(text)
                    if _NOT_REACHED in text or not stopped:
                        self._died(window, target, point)
                    return
                # pg_ctl -W may return before the pid file is written, and a short
                # recovery may already be over: look again (the log included) for a moment
                now = time.monotonic()
                down_since = down_since if down_since is not None else now
                if _NOT_REACHED in text or now - down_since > _DOWN_GRACE:
                    self._died(window, target, point)
            else:
                down_since = None
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
            match = _STOPPING_RE.findall(text) or _LAST_XACT_RE.findall(text)
            if match:
                with contextlib.suppress(ValueError):
                    result.reached_at = datetime.fromisoformat(match[-1]).astimezone(UTC)
            result.timeline = int(tli[-1]) if tli else self.manifest.timeline
        if result.reached_at is None:
            result.reached_at = consistent_point(self.manifest)
