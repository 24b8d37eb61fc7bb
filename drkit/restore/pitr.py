"""Physical point-in-time recovery: ``drkit restore ENV --point-in-time TS --pgdata DIR``.

The stages, in order (see ARCHITECTURE.md, PITR):

1. Plan before writing anything (:mod:`drkit.restore.plan`): the timeline to follow,
   the base backup, the WAL chain along the timeline and the explicit end; a target the
   unbroken archive does not reach is exit 3 with the reachable window.
2. Unpack the base backup into an empty DIR (:mod:`drkit.backup.unpack`; a non-empty
   one is refused, exit 4, as is one another user than root or the cluster's could
   change: :mod:`drkit.pg.datadir`).  An incremental backup (PostgreSQL 17+) is
   restored with its whole chain, combined by ``pg_combinebackup`` of its major.
3. Write the recovery settings (:mod:`drkit.restore.recovery_conf`): ``restore_command``
   = ``drkit wal-fetch``, the explicit end, the followed timeline by number,
   ``archive_mode = off`` unless ``--archive-mode preserve`` (then the server is the new
   primary); the server gets its own port and socket directory.  A server that does not
   archive is marked as a restore test (``drkit-restored.json``), so its WAL can never
   be recorded as production's.
4. Start PostgreSQL (:class:`drkit.pg.PostgresServer`, as the cluster's OS user) with
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

A caller watching from outside (a physical drill) passes a :class:`RecoveryObserver`:
it is handed the server before it starts, and may name a restore point on the way
where recovery pauses until the observer has looked (the drill compares row counts
there); the server then restarts and goes on to the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from drkit.backup import Reach, unpack_chain
from drkit.catalog import Manifest, iso, list_backups
from drkit.config import Policy
from drkit.errors import (
    CheckFailed,
    DatabaseError,
    DrkitError,
    OperationError,
    SafetyRefused,
    UsageError,
)
from drkit.lsn import parse_lsn
from drkit.pg import (
    Owner,
    PostgresServer,
    chown_tree,
    cluster_os_user,
    free_port,
    guard_data_directory,
    parse,
)
from drkit.progress import Meter, OnProgress
from drkit.restore import documents
from drkit.restore.plan import (
    RecoveryPlan,
    TimelineChoice,
    Window,
    consistent_point,
    last_record_lsn,
    parse_timeline,
    plan_recovery,
)
from drkit.restore.recovery_conf import write_recovery_config
from drkit.restore.target import RecoveryTarget, stop_settings
from drkit.storage import Repository
from drkit.wal import (
    RESTORE_MARKER,
    SPOOL_DIR,
    FetchOutcome,
    clear_restore_marker,
    find_wal_key,
    is_segment,
    parse_segment,
    read_fetch_journal,
    start_fetch_journal,
    timeline_at,
    write_restore_marker,
)

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT_ENV = "DRKIT_RECOVERY_TIMEOUT"
DEFAULT_RECOVERY_TIMEOUT = 3600.0
ACTIONS = ("promote", "pause", "shutdown")
LOG_NAME = "drkit-recovery.log"
#: what a data directory drkit recovers into says of that recovery (for --continue)
RECOVERY_STATE = "drkit-recovery.json"

ProgressCallback = OnProgress  # phases "unpack" (bytes of base.tar), "WAL replay"

_NOT_REACHED = "recovery ended before configured recovery target was reached"
#: how long a recovering server may show no live postmaster before it counts as dead
_DOWN_GRACE = 5.0
#: how long a fast shutdown may take (pg_ctl's own default)
_STOP_WAIT = 60.0


@dataclass
class PitrResult:
    backup_id: str
    target: str  # ISO timestamp, "latest", "immediate", or kind:value (xid:745, lsn:0/3000028)
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
    target_kind: str = "time"  # time | latest | xid | lsn | name | immediate
    continued: bool = False  # --continue: a paused server moved on, nothing unpacked

    def document(self) -> documents.PitrDocument:
        window, gap = self.window, self.gap
        phases = {k: round(v, 3) for k, v in self.phases.items()}
        return documents.PitrDocument(
            ok=True,
            chain=self.chain or [self.backup_id],
            followed_timeline=self.followed.timeline if self.followed else None,
            timeline_source=self.followed.source if self.followed else None,
            production_timeline=self.followed.recorded if self.followed else None,
            other_timelines=self.followed.others if self.followed else [],
            archive_mode=self.archive_mode,
            stopped_at_gap=(
                documents.Gap(
                    timeline=gap.timeline,
                    last_segment=gap.last_segment,
                    end=iso(gap.end),
                    first_missing=gap.missing,
                    gap=gap.gap,
                    segments_beyond_gap=gap.newer_segments,
                    newest_segment=gap.newest_segment,
                    newest_archived_at=iso(gap.newest_end),
                )
                if gap
                else None
            ),
            backup_id=self.backup_id,
            target=self.target,
            target_kind=self.target_kind,
            continued=self.continued,
            pgdata=self.pgdata,
            port=self.port,
            action=self.action,
            started=self.started,
            state=self.state,
            reached_at=iso(self.reached_at),
            timeline=self.timeline,
            lsn=self.lsn,
            end_lsn=self.end_lsn,
            window=documents.Window(
                start=iso(window.start),
                end=iso(window.end),
                last_wal=window.last_wal,
                timeline=window.timeline,
                missing=window.missing,
            ),
            log_file=self.log_file,
            phases=phases,
            phases_seconds=phases,
        )


class RecoveryObserver(Protocol):
    """Who watches a recovery from outside (a physical drill).

    ``pause_at`` names a restore point on the way (None: no pause): recovery pauses
    there, :meth:`on_paused` looks at the paused, read-only server, then the server
    restarts and recovery goes on to its end; ``result.phases["paused"]`` is the time
    the observer took.  :meth:`on_server` is told of the server before it first starts,
    so that the observer can reach it, time it and tear it down."""

    @property
    def pause_at(self) -> str | None: ...

    def on_server(self, server: PostgresServer) -> None: ...

    def on_paused(self, result: PitrResult) -> None: ...


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
    observer: RecoveryObserver | None = None,
    point: RecoveryTarget | None = None,
) -> PitrResult:
    """Recover the cluster of ``policy`` to ``target`` (None: everything archived) in pgdata.

    ``point``: a target of any kind instead (:mod:`drkit.restore.target`; ``target`` is
    then ignored).  ``backup`` recovers from that base backup instead of the newest one before the
    target; ``observer`` watches (see :class:`RecoveryObserver`).

    ``archive`` (``--archive-mode preserve``) keeps the server's archive_command: it is
    production's new primary.  Otherwise archiving is off and the data directory is
    marked as a restore test, whose pushes never record a timeline as production's.
    ``timeline``: ``current`` (production's), ``latest`` or a number; ``allow_gap``
    recovers ``latest`` up to a gap in the archive instead of refusing; ``start``: False
    prepares the data directory without starting it (``--no-start``)."""
    if target_action not in ACTIONS:
        raise UsageError(f"--target-action must be one of {', '.join(ACTIONS)}")
    point = point or RecoveryTarget.at_time(target)
    target = point.time
    if target is not None and (target.tzinfo is None or target.utcoffset() is None):
        raise UsageError("--point-in-time needs a time zone (Z or +01:00)")
    if isinstance(timeline, str):
        timeline = parse_timeline(timeline)
    pgdata = Path(pgdata).absolute()
    _check_empty(pgdata)
    # root fills it for the cluster's OS user: nobody else may own it or what is above it
    guard_data_directory(pgdata, Owner.cluster(cluster_os_user()))
    repo = repo or Repository.for_policy(policy)
    started = time.monotonic()
    plan = plan_recovery(
        repo, target, timeline=timeline, backup=backup, allow_gap=allow_gap, point=point
    )
    recovery = _Recovery(policy, repo, plan, target, pgdata, port=port, archive=archive)
    pause_at = observer.pause_at if observer is not None else None
    recovery.prepare(target_action, start=start, pause_at=pause_at, on_progress=on_progress)
    result = recovery.prepared(target_action, recovery.unpacked - started)
    if start:
        limit = timeout or float(os.environ.get(RECOVERY_TIMEOUT_ENV, DEFAULT_RECOVERY_TIMEOUT))
        recovery.replay(result, limit, observer, on_progress)
    return result


def continue_recovery(
    policy: Policy,
    point: RecoveryTarget,
    pgdata: Path,
    *,
    target_action: str = "promote",
    timeline: str | int = "current",
    repo: Repository | None = None,
    on_progress: ProgressCallback | None = None,
    timeout: float | None = None,
) -> PitrResult:
    """Move the server paused in ``pgdata`` (an earlier ``--target-action pause``) on to
    a later target of any kind, in the same data directory: nothing is unpacked again.

    Refused (exit 4) unless ``pgdata`` holds a recovery drkit started for this
    environment, its server runs, is still in recovery, paused, and is of the cluster the
    base backup was taken from (system identifier).  A target behind the point replayed,
    or on another timeline than the one the server follows, is exit 3: replay never goes
    backwards.  The new target is planned from the same base backup and checked on the
    paused server as a first recovery's is, before the action."""
    if target_action not in ACTIONS:
        raise UsageError(f"--target-action must be one of {', '.join(ACTIONS)}")
    pgdata = Path(pgdata).absolute()
    guard_data_directory(pgdata, Owner.cluster(cluster_os_user()))
    state = _recovery_state(pgdata, policy.name)
    _refuse_other_repository(state, policy, pgdata)
    repo = repo or Repository.for_policy(policy)
    followed = int(state["timeline_followed"])
    if isinstance(timeline, str):
        timeline = parse_timeline(timeline)
    if timeline not in ("current", followed):
        raise CheckFailed(
            f"the server paused in {pgdata} follows timeline {followed}: --continue cannot "
            f"move it onto timeline {timeline}"
        )
    known = {m.id: m for m in list_backups(repo, "physical")}
    manifest = known.get(str(state["backup_id"]))
    if manifest is None:
        raise CheckFailed(
            f"backup {state['backup_id']}, which {pgdata} was restored from, is no longer in "
            f"{repo.location}: the recovery cannot be planned on"
        )
    port, socket_dir = _running_server(pgdata)
    plan = plan_recovery(repo, point.time, timeline=followed, backup=manifest, point=point)
    recovery = _Recovery(
        policy,
        repo,
        plan,
        point.time,
        pgdata,
        port=port,
        archive=state["archive_mode"] == "preserve",
    )
    recovery.run_dir = socket_dir
    server = recovery.server()
    now = _paused_now(server, pgdata, manifest)
    _refuse_behind(point, plan, now, server, pgdata)
    from drkit.wal import restore_command

    recovery.command = restore_command(
        policy.name, Path(policy.source).parent, recovery.user, repo=policy.copy_name
    )
    if point.kind == "latest":
        recovery.end_lsn = last_record_lsn(repo, plan)
        if parse_lsn(recovery.end_lsn) < parse_lsn(now.lsn):
            raise CheckFailed(
                f"the archive ends at {recovery.end_lsn}, behind the point the server paused "
                f"in {pgdata} has replayed ({now.lsn}): nothing to move on to"
            )
    recovery.mark()  # the new target, in the files drkit keeps in the data directory
    for name in (RECOVERY_STATE, RESTORE_MARKER):
        if (pgdata / name).exists():
            chown_tree(pgdata / name, recovery.user)
    result = recovery.prepared(target_action, 0.0)
    result.phases = {}
    result.continued = True
    _stop(server)
    limit = timeout or float(os.environ.get(RECOVERY_TIMEOUT_ENV, DEFAULT_RECOVERY_TIMEOUT))
    recovery.replay(result, limit, None, on_progress)
    return result


def _recovery_state(pgdata: Path, env: str) -> dict[str, Any]:
    """What drkit wrote of the recovery in ``pgdata``; refused when there is none."""
    try:
        state = json.loads((pgdata / RECOVERY_STATE).read_text())
        if not isinstance(state, dict) or "backup_id" not in state:
            raise ValueError
        int(state["timeline_followed"])
    except (OSError, ValueError, TypeError, KeyError):
        raise SafetyRefused(
            f"{pgdata} holds no recovery drkit started (no readable {RECOVERY_STATE}): "
            "--continue only moves a server drkit restore paused (--target-action pause)"
        ) from None
    if state.get("environment") != env:
        raise SafetyRefused(
            f"{pgdata} was recovered for environment {state.get('environment')!r}, not {env!r}"
        )
    return state


def _refuse_other_repository(state: dict[str, Any], policy: Policy, pgdata: Path) -> None:
    """A recovery goes on from the repository it started from (the primary, or the copy
    ``--repo`` named): WAL from another could differ, or lack what the first held."""
    started = state.get("repository")  # absent in older state files: the primary
    if started == policy.copy_name:
        return

    def spelled(name: object) -> str:
        return "the primary repository" if name is None else f"the copy {name}"

    again = "without --repo" if started is None else f"with --repo {started}"
    raise SafetyRefused(
        f"{pgdata} is recovering from {spelled(started)}, not {spelled(policy.copy_name)}: "
        f"run --continue {again}"
    )


def _running_server(pgdata: Path) -> tuple[int, Path]:
    """The port and socket directory of the server running in ``pgdata``, from its own
    postmaster.pid; refused when none runs."""
    probe = PostgresServer(pgdata, port=0)
    lines = []
    with contextlib.suppress(OSError):
        lines = probe.pid_file.read_text().splitlines()
    if not probe.is_running() or len(lines) < 5:
        raise SafetyRefused(
            f"no server runs in {pgdata}: --continue moves a running server paused by "
            "drkit restore --target-action pause (a shut down one: start it first)"
        )
    return int(lines[3]), Path(lines[4])


def _paused_now(server: PostgresServer, pgdata: Path, manifest: Manifest) -> _Replayed:
    """Where the paused server stands; refused unless it is in recovery, paused, and of
    the cluster the backup was taken from."""
    row = server.query(
        "SELECT pg_is_in_recovery(), "
        "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END, "
        "pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), "
        "(SELECT system_identifier::text FROM pg_control_system())"
    )
    in_recovery, pause_state, lsn, last_commit, system = row
    if not in_recovery:
        raise SafetyRefused(
            f"the server in {pgdata} has left recovery (promoted): it cannot be moved on"
        )
    if pause_state != "paused" or lsn is None:
        raise SafetyRefused(
            f"the server in {pgdata} is recovering but not paused ({pause_state}): "
            "--continue moves a server paused at its target"
        )
    if manifest.system_identifier and str(system) != manifest.system_identifier:
        raise SafetyRefused(
            f"the server in {pgdata} is of the cluster {system}, not {manifest.system_identifier} "
            f"that backup {manifest.id} was taken from"
        )
    return _Replayed(str(lsn), last_commit.astimezone(UTC) if last_commit else None)


def _refuse_behind(
    point: RecoveryTarget, plan: RecoveryPlan, now: _Replayed, server: PostgresServer, pgdata: Path
) -> None:
    """Replay only goes forward: a target at or behind what the paused server replayed
    is exit 3, naming both."""
    behind = False
    if point.kind == "immediate":
        behind = True
    elif point.kind in ("lsn", "name"):
        stop = parse_lsn(str(plan.stop_lsn))
        behind = stop <= parse_lsn(now.lsn) if point.kind == "name" else stop < parse_lsn(now.lsn)
    elif point.kind == "time":
        behind = (
            now.last_commit is not None and point.time is not None and point.time <= now.last_commit
        )
    elif point.kind == "xid":
        behind = xact_status(server, int(str(point.xid))) in ("committed", "aborted")
    if behind:
        where = f"{now.lsn}" + (f", last commit {iso(now.last_commit)}" if now.last_commit else "")
        raise CheckFailed(
            f"{point.describe()} is not after the point the server paused in {pgdata} has "
            f"replayed ({where}): replay never goes backwards; restore anew to go back"
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


class _Recovery:
    """One recovery into one data directory, stage by stage: :meth:`prepare` (unpack,
    settings, markers), :meth:`prepared` (the result so far), :meth:`replay` (start,
    pause at the end, check the point reached, then promote, stay paused or shut down)."""

    def __init__(
        self,
        policy: Policy,
        repo: Repository,
        plan: RecoveryPlan,
        target: datetime | None,
        pgdata: Path,
        *,
        port: int | None,
        archive: bool,
    ) -> None:
        self.policy = policy
        self.repo = repo
        self.plan = plan
        self.target = target
        self.pgdata = pgdata
        self.archive = archive
        self.user = cluster_os_user()
        self.point = plan.point
        log.info(
            "recovering %s from %s to %s on timeline %d (%s)",
            policy.name,
            plan.manifest.id,
            plan.point.describe(),
            plan.followed.timeline,
            plan.followed.source,
        )
        self.end_lsn: str | None = None
        self.port = port or 0
        self.run_dir = Path()
        self.command = ""
        self.unpacked = 0.0

    def prepare(
        self,
        target_action: str,
        *,
        start: bool,
        pause_at: str | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        """Unpack the backup, write the recovery settings and the markers, and give the
        data directory to the cluster's OS user; on any failure, leave it as it was."""
        from drkit.wal import restore_command

        if start:  # no server of the backup's exact major: refuse before fetching anything
            from drkit.pg import find_server

            find_server(self.plan.manifest.major, for_user=self.user)
        # every recovery has an explicit end, so that PostgreSQL itself refuses to end it
        # early ("recovery ended before configured recovery target was reached"): a time
        # target, or for `latest` the last whole WAL record of the last planned segment
        if self.point.kind == "latest":
            self.end_lsn = last_record_lsn(self.repo, self.plan)
        self.port = self.port or free_port()
        self.run_dir = Path(tempfile.mkdtemp(prefix="drkit-pitr-"))
        self.run_dir.chmod(0o755)
        policy_dir = Path(self.policy.source).parent
        # WAL from the repository the base backup comes from: a copy's own, never the
        # primary's (which may be the one lost)
        self.command = restore_command(
            self.policy.name, policy_dir, self.user, repo=self.policy.copy_name
        )
        created = not self.pgdata.exists()
        try:
            unpack_chain(
                self.repo, self.plan.chain or [self.plan.manifest], self.pgdata, on_progress
            )
            self.unpacked = time.monotonic()
            if self.plan.partial is not None:
                # streamed past the archive: PostgreSQL reads pg_wal for the segment
                # restore_command does not serve, up to its last record, the planned end
                from drkit.wal import write_partial

                partial = self.plan.partial
                write_partial(
                    self.repo,
                    partial,
                    self.pgdata / "pg_wal" / partial.segment,
                    self.plan.segment_size,
                )
            # a server drkit drives always pauses at the end: drkit checks the point
            # reached against the plan before it promotes or shuts down
            self.configure(pause_at, "pause" if start else target_action)
            (self.pgdata / "log").mkdir(exist_ok=True)
            self.mark()
            chown_tree(self.pgdata, self.user)
            chown_tree(self.run_dir, self.user)
        except BaseException:
            if created:
                shutil.rmtree(self.pgdata, ignore_errors=True)
            else:
                for child in self.pgdata.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def configure(self, pause: str | None, action: str) -> None:
        """(Re)write the recovery settings: pause at ``pause`` or at the planned end."""
        write_recovery_config(
            self.pgdata,
            restore_command=self.command,
            target=self.target if self.end_lsn is None else None,
            action=action,
            port=self.port,
            socket_dir=self.run_dir,
            archive=self.archive,
            timeline=self.plan.followed.timeline,
            pause_at=pause,
            target_lsn=self.end_lsn,
            stop=stop_settings(self.point),
            inclusive=self.point.inclusive,
        )

    def mark(self) -> None:
        """Where wal-fetch finds the repository, and what the data directory is: a restore
        test (its pushes never record a timeline), unless it is the new primary."""
        from drkit.wal import write_repo_hint

        write_repo_hint(self.policy, self.pgdata / "pg_wal")
        state = {
            "environment": self.policy.name,
            "backup_id": self.plan.manifest.id,
            "timeline_followed": self.plan.followed.timeline,
            "archive_mode": "preserve" if self.archive else "off",
            "target": self.point.label(),
            "repository": self.policy.copy_name,  # None: the primary
        }
        tmp = self.pgdata / (RECOVERY_STATE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.pgdata / RECOVERY_STATE)
        if self.archive:
            clear_restore_marker(self.pgdata)
            return
        write_restore_marker(
            self.pgdata,
            {
                "environment": self.policy.name,
                "backup_id": self.plan.manifest.id,
                "target": self.point.label(),
                "timeline_followed": self.plan.followed.timeline,
                "restored_at": iso(datetime.now(UTC)),
            },
        )

    def prepared(self, target_action: str, unpack_seconds: float) -> PitrResult:
        """The result of a prepared data directory, before any server starts."""
        plan = self.plan
        return PitrResult(
            backup_id=plan.manifest.id,
            target=self.point.label(),
            target_kind=self.point.kind,
            pgdata=str(self.pgdata),
            port=self.port,
            action=target_action,
            started=False,
            window=plan.window,
            log_file=str(self.pgdata / "log" / LOG_NAME),
            phases={"fetch_unpack": unpack_seconds},
            followed=plan.followed,
            archive_mode="preserve" if self.archive else "off",
            gap=plan.reach if plan.reach.gap else None,
            chain=[m.id for m in plan.chain],
            end_lsn=self.end_lsn,
        )

    def server(self) -> PostgresServer:
        return PostgresServer(
            self.pgdata,
            port=self.port,
            socket_dir=self.run_dir,
            log_file=self.pgdata / "log" / LOG_NAME,
            login=self.policy.database.url.get_secret_value(),
            superuser=parse(self.policy.database.url.get_secret_value()).get("user") or "postgres",
            os_user=self.user,
            # a data directory runs only on its own major's server
            major=self.plan.manifest.major,
            temp_dirs=[self.run_dir],
            name="recovering server",
        )

    def replay(
        self,
        result: PitrResult,
        limit: float,
        observer: RecoveryObserver | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        """Start the server, pause it at the observer's restore point (if any) and at the
        planned end, check the point reached, then finish with the result's action."""
        started = time.monotonic()
        server = self.server()
        if observer is not None:
            observer.on_server(server)
        goal = _Goal(self.plan, self.repo, self.target, self.end_lsn)

        def run_to_pause(pause: str | None) -> tuple[_Replayed | None, _ReplayProgress]:
            """(Re)configure, start with an empty fetch journal, wait for the pause.  The
            replay's progress line ends aborted unless the server paused (the caller
            finishes it once the point reached is checked)."""
            self.configure(pause, "pause")
            start_fetch_journal(self.pgdata / "pg_wal")
            for name in ("postgresql.auto.conf", "recovery.signal", f"pg_wal/{SPOOL_DIR}"):
                chown_tree(self.pgdata / name, self.user)
            progress = _ReplayProgress(on_progress, self.plan, self.end_lsn, pause)
            try:
                server.start(
                    wait=False, what=f"starting PostgreSQL for recovery (log: {server.log_file})"
                )
                result.started = True
                replayed = _wait_paused(server, limit, progress.reached)
            except BaseException:
                progress.meter.abort()
                raise
            if replayed is None:
                progress.meter.abort()
            return replayed, progress

        if observer is not None and observer.pause_at is not None:
            replayed, progress = run_to_pause(observer.pause_at)
            if replayed is None:
                raise goal.stopped_short(server, f"restore point {observer.pause_at!r}")
            progress.meter.finish()
            goal.record(result, replayed)
            paused = time.monotonic()
            observer.on_paused(result)
            result.phases["paused"] = time.monotonic() - paused
            _stop(server)
        replayed, progress = run_to_pause(None)
        if replayed is None and goal.ended_at_plan_end(server):
            # a time after the last commit the archive holds: PostgreSQL found no commit
            # past it in the whole planned WAL, so the state at that time is the archive's end
            self.end_lsn = goal.end_lsn = result.end_lsn = last_record_lsn(self.repo, self.plan)
            _stop(server)
            replayed, progress = run_to_pause(None)
        if replayed is None:
            raise goal.stopped_short(server, goal.describe())
        try:
            goal.check(replayed, server)
        except CheckFailed:
            progress.meter.abort()  # no ✓ for a replay short of its end
            _stop(server)  # never left running short of its end
            raise
        except BaseException:
            progress.meter.abort()
            raise
        progress.finish(replayed.lsn)
        goal.record(result, replayed)
        self.finish(server, result, limit)
        result.phases["replay"] = time.monotonic() - started
        shutil.rmtree(self.pgdata / "pg_wal" / SPOOL_DIR, ignore_errors=True)

    def finish(self, server: PostgresServer, result: PitrResult, limit: float) -> None:
        """The result's action on a server paused at its checked end."""
        if result.action == "promote":
            _promote(server, limit)
            result.timeline = server.current_timeline()
            result.state = "promoted"
        elif result.action == "shutdown":
            _stop(server)
            self.configure(None, "shutdown")  # a restart stops at the same end, as PostgreSQL's own
            chown_tree(self.pgdata / "postgresql.auto.conf", self.user)
            result.state = "shut down"
        else:
            result.state = "paused"


class _ReplayProgress:
    """WAL replay as progress: the bytes of WAL replayed since the base backup's start
    (``pg_last_wal_replay_lsn()`` as the server reports it), out of the span to the
    planned end, so the line shows a percent and an ETA.  The end is exact where the plan
    names an LSN (``latest``'s last record, a name, an LSN, ``immediate``); for a time or
    a transaction it is the end of the last planned segment, an upper bound shown as an
    estimate (``≈``), since replay stops at the target, before it; so is any end for a
    replay that pauses on the way (``pause``: an observer's restore point)."""

    def __init__(
        self,
        sink: ProgressCallback | None,
        plan: RecoveryPlan,
        end_lsn: str | None,
        pause: str | None,
    ) -> None:
        wal_start = plan.manifest.wal_start
        self.start = parse_lsn(wal_start) if wal_start else None
        exact = end_lsn or plan.stop_lsn
        if exact is not None:
            end = parse_lsn(exact)
        else:
            end = (parse_segment(str(plan.reach.last_segment), plan.segment_size).segno + 1) * (
                plan.segment_size
            )
        total = end - self.start if self.start is not None and end > self.start else None
        self.done = 0
        self.meter = Meter(
            sink,
            "WAL replay",
            f"to restore point {pause}" if pause is not None else "",
            total=total,
            estimate=total is not None and (exact is None or pause is not None),
        )

    def reached(self, lsn: str) -> None:
        """The server has replayed up to ``lsn``: advance by what is new."""
        if self.start is None:
            return
        now = parse_lsn(lsn) - self.start
        if now > self.done:
            self.meter(now - self.done)
            self.done = now

    def finish(self, lsn: str) -> None:
        """The end is reached and checked: count the last stretch, then done."""
        self.reached(lsn)
        self.meter.finish()


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
        if self.plan.partial is not None:
            last = f"the streamed partial {self.plan.partial.segment}"
        if self.end_lsn is not None:
            return f"the planned end {self.end_lsn} (the last WAL record of {last})"
        point = self.plan.point
        if point.kind == "time":
            return f"recovery target {iso(self.target)}"
        at = f" at {self.plan.stop_lsn}" if self.plan.stop_lsn and point.kind != "lsn" else ""
        return f"recovery target {point.describe()}{at}"

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

    def _ran_out(self, journal: list[FetchOutcome]) -> bool:
        """Whether replay consumed every planned segment and stopped only because the
        first one after them is not in the archive."""
        after = self.plan.planned_segment(self._planned_last() + 1)
        return any(e.outcome == "missing" and e.name == after for e in journal)

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
        if _NOT_REACHED in fatal and self.plan.point.kind == "xid" and self._ran_out(journal):
            return RecoveryStoppedShort(
                f"recovery replayed the whole archive ({self.plan.reach.last_segment} and every "
                f"segment before it) and transaction {self.plan.point.xid} did not end in it, "
                f"short of {wanted}; the server was not promoted {where}",
                None,
            )
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
            and (
                replayed.last_commit > self.target
                or (not self.plan.point.inclusive and replayed.last_commit == self.target)
            )
        ):
            raise CheckFailed(
                f"recovery to {iso(self.target)} replayed a commit of "
                f"{iso(replayed.last_commit)}; the server was stopped, not promoted {where}"
            )
        self._check_point(replayed, server, where)
        for entry in read_fetch_journal(server.data_dir / "pg_wal"):
            if entry.outcome == "failed":  # served on a later try: the end was reached
                log.warning("fetching %s failed once during recovery: %s", entry.name, entry.detail)

    def _check_point(self, replayed: _Replayed, server: PostgresServer, where: str) -> None:
        """A target of another kind than a time, checked on the paused server itself:
        a name or ``immediate`` paused exactly at or past its LSN, an LSN at or past it
        (inclusive), a transaction ended (inclusive) or not (exclusive)."""
        point, stop = self.plan.point, self.plan.stop_lsn
        reached = parse_lsn(replayed.lsn)
        short = False
        if point.kind == "name":
            short = reached != parse_lsn(str(stop))  # the end of the restore point's record
        elif point.kind == "immediate" or (point.kind == "lsn" and point.inclusive):
            short = reached < parse_lsn(str(stop))
        elif point.kind == "xid":
            status = xact_status(server, int(str(point.xid)))
            ended = status in ("committed", "aborted")
            short = not ended if point.inclusive else False
            if ended and not point.inclusive:
                raise CheckFailed(
                    f"recovery to {point.describe()} replayed the end of that transaction "
                    f"({status}); the server was stopped, not promoted {where}"
                )
        if short:
            raise RecoveryStoppedShort(
                f"recovery paused at {replayed.lsn}, not at {self.describe()}; the server "
                f"was stopped, not promoted {where}",
                None,
            )

    def record(self, result: PitrResult, replayed: _Replayed) -> None:
        result.lsn = replayed.lsn
        result.reached_at = replayed.last_commit or consistent_point(self.plan.manifest)
        position = max(parse_lsn(replayed.lsn) - 1, 0)
        result.timeline = timeline_at(position, self.plan.followed.timeline, self.plan.history)


def xact_status(server: PostgresServer, xid: int) -> str:
    """``pg_xact_status`` of a transaction on a (paused) server: committed, aborted, in
    progress; a transaction the server has not seen yet is ``future``."""
    try:
        row = server.query(f"SELECT pg_xact_status('{int(xid)}'::xid8)")
    except DatabaseError as exc:
        if "in the future" in str(exc):
            return "future"
        raise
    return str(row[0]) if row and row[0] is not None else "unknown"


def _wait_paused(
    server: PostgresServer, timeout: float, on_lsn: Callable[[str], None] | None = None
) -> _Replayed | None:
    """Wait until recovery pauses at its end and return what it replayed (SQL), or None
    when the server stopped first (PostgreSQL ends recovery with a FATAL when the WAL
    ends before an explicit target).  ``on_lsn`` is told ``pg_last_wal_replay_lsn()`` at
    every look (from the consistent point on, when the server first accepts a login)."""
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
                if lsn is not None and on_lsn is not None:
                    on_lsn(str(lsn))
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
