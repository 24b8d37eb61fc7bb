"""Physical point-in-time recovery: ``drkit restore ENV --point-in-time TS --pgdata DIR``.

1. Plan before writing anything (:func:`plan_recovery`): the timeline to follow
   (``--timeline current``: production's, as recorded in ``<env>/timeline.json``; see
   :mod:`drkit.timelines`), the newest physical backup on that timeline consistent at or
   before TS (``latest``: the newest one), and the WAL chain from it along the timeline.
   A target beyond the unbroken chain, before the oldest backup, or (``latest``) a gap
   below newer segments without ``--allow-gap`` is exit 3 with the reachable window.
   drkit never recovers to some other point than the one asked for.
2. Unpack its ``base.tar`` into an empty DIR (a non-empty one is refused, exit 4, as is
   one another user than root or the cluster's could change: :mod:`drkit.pg.datadir`,
   whose extraction never writes through a link it did not make).  An
   incremental backup (PostgreSQL 17+) is restored with its whole chain: the full
   backup and every incremental down to it are unpacked aside and combined into DIR
   with ``pg_combinebackup`` of the backup's major; a backup whose chain is broken is
   never chosen (exit 3 when asked for by id).
3. Write ``recovery.signal`` and the recovery settings into ``postgresql.auto.conf``:
   ``restore_command`` = ``drkit wal-fetch``, an explicit end (a time target; for
   ``latest`` the LSN of the last whole WAL record of the last planned segment), the
   followed timeline by number, ``archive_mode = off`` unless ``--archive-mode
   preserve`` (then the server is the new primary); the server gets its own port and
   socket directory.  A server that does not archive is marked as a restore test
   (``drkit-restored.json``), so its WAL can never be recorded as production's.
4. Start PostgreSQL (as the cluster's OS user when drkit runs as root) with
   ``recovery_target_action = 'pause'``.  wal-fetch exits 1 for a file it cannot serve,
   which PostgreSQL reads as the end of the archive; with an explicit end, PostgreSQL then
   refuses to finish recovery ("recovery ended before configured recovery target was
   reached") instead of promoting on less.  drkit reads the paused server (SQL:
   ``pg_last_wal_replay_lsn()``, ``pg_last_xact_replay_timestamp()``), checks the point
   reached against the plan, and only then promotes (``pg_ctl promote``), stays paused
   or shuts down.  A server that stopped short is exit 3 naming the WAL file wal-fetch
   could not serve, from the fetch journal it keeps in ``pg_wal`` for this recovery
   (never from log text), and it is never promoted.  A time after the last commit the
   archive holds stops the same way; when the journal shows that replay consumed every
   planned segment, recovery restarts to the planned end, which is the state at that
   time.
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
from drkit.backup.unpack import unpack_chain
from drkit.backup.walchain import (
    Reach,
    WalIndex,
    archived_timelines,
    backup_on_timeline,
    reach_on_timeline,
    segment_on_path,
    timeline_history,
)
from drkit.config import Policy
from drkit.errors import (
    CheckFailed,
    DatabaseError,
    DrkitError,
    OperationError,
    SafetyRefused,
    UsageError,
)
from drkit.pg import (
    Owner,
    PostgresServer,
    chown_tree,
    cluster_os_user,
    free_port,
    guard_data_directory,
)
from drkit.progress import Meter, OnProgress
from drkit.storage.repository import Repository
from drkit.timelines import clear_restore_marker, write_restore_marker
from drkit.wal import (
    SPOOL_DIR,
    FetchOutcome,
    download,
    fetch_attempts,
    find_wal_key,
    read_fetch_journal,
    start_fetch_journal,
)
from drkit.wal_names import (
    DEFAULT_SEGMENT_SIZE,
    TimelineSwitch,
    format_lsn,
    history_name,
    is_segment,
    parse_lsn,
    parse_segment,
    timeline_at,
)

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT_ENV = "DRKIT_RECOVERY_TIMEOUT"
DEFAULT_RECOVERY_TIMEOUT = 3600.0
ACTIONS = ("promote", "pause", "shutdown")
LOG_NAME = "drkit-recovery.log"

ProgressCallback = OnProgress  # phases "unpack" (bytes of base.tar), "WAL replay"

_NOT_REACHED = "recovery ended before configured recovery target was reached"
#: how long a recovering server may show no live postmaster before it counts as dead
_DOWN_GRACE = 5.0
#: how long a fast shutdown may take (pg_ctl's own default)
_STOP_WAIT = 60.0
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
    reached_at: datetime | None = None  # the last commit replayed (the server's own clock)
    timeline: int | None = None
    lsn: str | None = None  # where replay ended (pg_last_wal_replay_lsn)
    end_lsn: str | None = None  # where it had to end: the last record of the planned WAL
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
            "end_lsn": self.end_lsn,
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
    #: the followed timeline's switches, and the cluster's WAL segment size
    history: list[TimelineSwitch] = field(default_factory=list)
    segment_size: int = DEFAULT_SEGMENT_SIZE

    def planned_segment(self, segno: int) -> str:
        """The name of the segment replay reads at position ``segno`` on this plan."""
        return segment_on_path(segno, self.followed.timeline, self.history, self.segment_size).name(
            self.segment_size
        )


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
    chain = resolve_chain(manifest, known)
    size = int(manifest.extra.get("wal_segment_size", DEFAULT_SEGMENT_SIZE))
    return RecoveryPlan(manifest, window, followed, reach, chain, history, size)


_RECORD_LSN_RE = re.compile(r"\blsn: ([0-9A-F]+/[0-9A-F]+),")


def last_record_lsn(repo: Repository, plan: RecoveryPlan) -> str:
    """The LSN of the last whole WAL record of the plan's last segment (pg_waldump).

    The segment is fetched the way replay fetches it (checked, retried), so a damaged
    last segment fails here, before anything is written.  A segment holding no record
    start (the middle of a record larger than a segment) is read with the segments
    before it, back to the first one that starts a record."""
    from drkit.pg.binaries import find_binary

    manifest = plan.manifest
    major = manifest.major
    waldump = find_binary("pg_waldump", major)
    last = str(plan.reach.last_segment)
    first_segno = parse_segment(str(manifest.wal_start_segment), plan.segment_size).segno
    segno = parse_segment(last, plan.segment_size).segno
    with tempfile.TemporaryDirectory(prefix="drkit-waldump-") as tmp:
        while True:
            name = plan.planned_segment(segno)
            if not download(repo, name, Path(tmp) / name, attempts=fetch_attempts()):
                raise CheckFailed(f"WAL segment {name} vanished from {repo.location} meanwhile")
            proc = subprocess.run(
                [waldump, "--path", tmp, name, last],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            found = _RECORD_LSN_RE.findall(proc.stdout)
            if found or segno <= first_segno:
                break
            segno -= 1
    if not found:
        raise CheckFailed(
            f"no whole WAL record found in {last} to stop at "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pg_waldump printed none'}); "
            "give a time target inside the window instead"
        )
    return format_lsn(parse_lsn(found[-1]))  # as PostgreSQL prints it: 0/40001D0


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
            manifest.major,
            for_user=user,
        )
    # every recovery has an explicit end, so that PostgreSQL itself refuses to end it
    # early ("recovery ended before configured recovery target was reached"): a time
    # target, or for `latest` the last whole WAL record of the last planned segment
    end_lsn = None
    if target is None:
        end_lsn = last_record_lsn(repo, plan)
    port = port or free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="drkit-pitr-"))
    run_dir.chmod(0o755)
    socket_dir = run_dir
    policy_dir = Path(policy.source).parent
    command = restore_command(policy.name, policy_dir, user)
    created = not pgdata.exists()

    def configure(pause: str | None, action: str) -> None:
        write_recovery_config(
            pgdata,
            restore_command=command,
            target=target if end_lsn is None else None,
            action=action,
            port=port,
            socket_dir=socket_dir,
            archive=archive,
            timeline=follow,
            pause_at=pause,
            target_lsn=end_lsn,
        )

    try:
        unpack_chain(repo, plan.chain or [manifest], pgdata, on_progress)
        phases["fetch_unpack"] = time.monotonic() - t0
        # a server drkit drives always pauses at the end: drkit checks the point reached
        # against the plan before it promotes or shuts down
        configure(pause_at, "pause" if start else target_action)
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
        end_lsn=end_lsn,
    )
    if not start:
        return result
    limit = timeout or float(os.environ.get(RECOVERY_TIMEOUT_ENV, DEFAULT_RECOVERY_TIMEOUT))
    t1 = time.monotonic()
    server = PostgresServer(
        pgdata,
        port=port,
        socket_dir=socket_dir,
        log_file=pgdata / "log" / LOG_NAME,
        login=policy.database.url.get_secret_value(),
        os_user=user,
        # a data directory runs only on its own major's server
        major=manifest.major,
        temp_dirs=[run_dir],
        name="recovering server",
    )
    goal = _Goal(plan, repo, target, end_lsn)

    def run_to_pause(pause: str | None, action: str) -> _Replayed | None:
        """(Re)configure, start with an empty fetch journal, wait for the pause."""
        configure(pause, action)
        start_fetch_journal(pgdata / "pg_wal")
        for name in ("postgresql.auto.conf", "recovery.signal", f"pg_wal/{SPOOL_DIR}"):
            chown_tree(pgdata / name, user)
        meter = Meter(on_progress, "WAL replay")
        server.start(wait=False, what=f"starting PostgreSQL for recovery (log: {server.log_file})")
        result.started = True
        replayed = _wait_paused(server, limit)
        meter.finish()
        return replayed

    if pause_at is not None:
        replayed = run_to_pause(pause_at, "pause")
        if replayed is None:
            raise goal.stopped_short(server, f"restore point {pause_at!r}")
        goal.record(result, replayed)
        paused = time.monotonic()
        if at_pause is not None:
            at_pause(result)
        phases["paused"] = time.monotonic() - paused
        _stop(server)
    replayed = run_to_pause(None, "pause")
    if replayed is None and goal.ended_at_plan_end(server):
        # a time after the last commit the archive holds: PostgreSQL found no commit past
        # it in the whole planned WAL, so the state at that time is the archive's end
        end_lsn = goal.end_lsn = last_record_lsn(repo, plan)
        result.end_lsn = end_lsn
        _stop(server)
        replayed = run_to_pause(None, "pause")
    if replayed is None:
        raise goal.stopped_short(server, goal.describe())
    try:
        goal.check(replayed, server)
    except CheckFailed:
        _stop(server)  # never left running short of its end
        raise
    goal.record(result, replayed)
    if target_action == "promote":
        _promote(server, limit)
        result.timeline = server.current_timeline()
        result.state = "promoted"
    elif target_action == "shutdown":
        _stop(server)
        configure(None, "shutdown")  # a restart stops at the same end, as PostgreSQL's own
        chown_tree(pgdata / "postgresql.auto.conf", user)
        result.state = "shut down"
    else:
        result.state = "paused"
    phases["replay"] = time.monotonic() - t1
    shutil.rmtree(pgdata / "pg_wal" / SPOOL_DIR, ignore_errors=True)
    return result


@dataclass
class _Replayed:
    """What a server paused at the end of its recovery says it replayed (SQL)."""

    lsn: str
    last_commit: datetime | None


class RecoveryStoppedShort(CheckFailed):
    """Replay ended before the planned end: a WAL file could not be fetched, vanished or
    would not replay.  The server was not promoted (exit 3)."""

    def __init__(self, message: str, segment: str | None) -> None:
        super().__init__(message)
        self.segment = segment


class _Goal:
    """Where one recovery must end, and the checks of what it reached against that."""

    def __init__(
        self, plan: RecoveryPlan, repo: Repository, target: datetime | None, end_lsn: str | None
    ) -> None:
        self.plan = plan
        self.repo = repo
        self.target = target
        self.end_lsn = end_lsn

    def describe(self) -> str:
        last = self.plan.reach.last_segment
        if self.end_lsn is not None:
            return f"the planned end {self.end_lsn} (the last WAL record of {last})"
        return f"recovery target {iso(self.target)}"

    def _planned_last(self) -> int:
        return parse_segment(str(self.plan.reach.last_segment), self.plan.segment_size).segno

    def _missing_planned(self, journal: list[FetchOutcome]) -> list[str]:
        """Planned segments wal-fetch found missing (removed since the plan)."""
        last = self._planned_last()
        found = []
        for entry in journal:
            if entry.outcome != "missing" or not is_segment(entry.name):
                continue
            segno = parse_segment(entry.name, self.plan.segment_size).segno
            if segno <= last and entry.name == self.plan.planned_segment(segno):
                found.append(entry.name)
        return found

    def ended_at_plan_end(self, server: PostgresServer) -> bool:
        """Whether a recovery to a time that stopped did so only because the planned WAL
        ended: every planned segment was served, the first one after them is what
        wal-fetch found missing, and the archive still lacks it."""
        if self.target is None or self.end_lsn is not None or server.is_running():
            return False
        journal = read_fetch_journal(server.data_dir / "pg_wal")
        if any(e.outcome == "failed" for e in journal) or self._missing_planned(journal):
            return False
        after = self.plan.planned_segment(self._planned_last() + 1)
        if not any(e.outcome == "missing" and e.name == after for e in journal):
            return False
        if find_wal_key(self.repo, after) is not None:
            raise CheckFailed(
                f"WAL segment {after} reached {self.repo.location} while recovering to "
                f"{iso(self.target)}: the archive grew past the plan, run the restore again"
            )
        return True

    def stopped_short(self, server: PostgresServer, wanted: str) -> DrkitError:
        """The error for a server that died before pausing at its end, from the fetch
        journal (what wal-fetch could not serve) rather than from log text."""
        journal = read_fetch_journal(server.data_dir / "pg_wal")
        where = f"(log: {server.log_file})"
        failed = [e for e in journal if e.outcome == "failed"]
        if failed:
            first = failed[0]
            return RecoveryStoppedShort(
                f"recovery stopped at WAL {first.name}, which could not be fetched from "
                f"{self.repo.location} ({first.detail}): everything before it was replayed, "
                f"short of {wanted}; the server was not promoted {where}",
                first.name,
            )
        vanished = self._missing_planned(journal)
        if vanished:
            return RecoveryStoppedShort(
                f"recovery stopped at WAL segment {vanished[0]}: it is no longer in "
                f"{self.repo.location} (removed since recovery was planned), short of "
                f"{wanted}; the server was not promoted {where}",
                vanished[0],
            )
        fatal = server.last_fatal()
        if _NOT_REACHED in fatal:
            return RecoveryStoppedShort(
                f"recovery ended before {wanted} though wal-fetch failed to serve no file: a "
                "segment it served holds invalid WAL (damaged before it was archived, or an "
                "uncompressed one without a checksum); run drkit verify, "
                f"{self.plan.window.describe()}; the server was not promoted {where}",
                None,
            )
        return OperationError(
            f"PostgreSQL stopped during recovery: {fatal or 'see the log'}; the server was "
            f"not promoted {where}"
        )

    def check(self, replayed: _Replayed, server: PostgresServer) -> None:
        """A paused server must have replayed up to its end: the planned LSN, or no
        commit later than the time target."""
        where = f"(log: {server.log_file})"
        if self.end_lsn is not None and parse_lsn(replayed.lsn) < parse_lsn(self.end_lsn):
            raise RecoveryStoppedShort(
                f"recovery paused at {replayed.lsn}, short of {self.describe()}: PostgreSQL "
                "paused on its own (a hot standby setting lower than the primary's, such as "
                f"max_connections, does that); the server was stopped, not promoted {where}",
                None,
            )
        if (
            self.target is not None
            and replayed.last_commit is not None
            and replayed.last_commit > self.target
        ):
            raise CheckFailed(
                f"recovery to {iso(self.target)} replayed a commit of "
                f"{iso(replayed.last_commit)}; the server was stopped, not promoted {where}"
            )
        for entry in read_fetch_journal(server.data_dir / "pg_wal"):
            if entry.outcome == "failed":  # served on a later try: the end was reached
                log.warning("fetching %s failed once during recovery: %s", entry.name, entry.detail)

    def record(self, result: PitrResult, replayed: _Replayed) -> None:
        result.lsn = replayed.lsn
        result.reached_at = replayed.last_commit or consistent_point(self.plan.manifest)
        position = max(parse_lsn(replayed.lsn) - 1, 0)
        result.timeline = timeline_at(position, self.plan.followed.timeline, self.plan.history)


def _wait_paused(server: PostgresServer, timeout: float) -> _Replayed | None:
    """Wait until recovery pauses at its end and return what it replayed (SQL), or None
    when the server stopped first (PostgreSQL ends recovery with a FATAL when the WAL
    ends before an explicit target)."""
    deadline = time.monotonic() + timeout
    seen = False
    down_since: float | None = None
    while True:
        if not server.is_running():
            # pg_ctl -W may return before the pid file is written: a server never
            # seen running gets a moment; one seen running and gone has stopped
            now = time.monotonic()
            down_since = down_since if down_since is not None else now
            if seen or now - down_since > _DOWN_GRACE:
                return None
        else:
            seen, down_since = True, None
            with contextlib.suppress(DatabaseError):
                row = server.query(
                    "SELECT pg_is_in_recovery(), "
                    "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() "
                    "ELSE '' END, pg_last_wal_replay_lsn()::text, "
                    "pg_last_xact_replay_timestamp()"
                )
                in_recovery, pause_state, lsn, last_commit = row
                if not in_recovery:  # never, with an explicit target and 'pause'
                    raise OperationError(
                        f"the recovering server on port {server.port} left recovery before "
                        f"drkit checked it (log: {server.log_file})"
                    )
                if pause_state == "paused" and lsn is not None:
                    return _Replayed(str(lsn), last_commit.astimezone(UTC) if last_commit else None)
        if time.monotonic() > deadline:
            raise OperationError(
                f"recovery did not finish within {timeout:.0f}s (log: {server.log_file}); "
                f"the server is still running on port {server.port}"
            )
        time.sleep(0.3)


def _stop(server: PostgresServer) -> None:
    """A fast shutdown, within pg_ctl's own default wait; a failure raises."""
    server.stop(
        "fast",
        _STOP_WAIT,
        check=True,
        what=f"stopping the recovering PostgreSQL (log: {server.log_file})",
    )


def _promote(server: PostgresServer, timeout: float) -> None:
    """``pg_ctl promote`` as the cluster's OS user (no SQL privilege needed), and wait
    until the server has left recovery."""
    server.ctl(
        "-w",
        "-t",
        str(int(timeout)),
        "promote",
        what=f"promoting the recovered server (log: {server.log_file})",
        timeout=timeout + 30,
    )
    deadline = time.monotonic() + timeout
    while server.query("SELECT pg_is_in_recovery()")[0]:
        if time.monotonic() > deadline:
            raise OperationError(
                f"the recovered server on port {server.port} did not leave recovery within "
                f"{timeout:.0f}s of its promotion (log: {server.log_file})"
            )
        time.sleep(0.2)
