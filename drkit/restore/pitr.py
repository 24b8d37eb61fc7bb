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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from drkit.backup import Reach, unpack_chain
from drkit.catalog import Manifest, iso, list_backups
from drkit.config import Policy
from drkit.errors import (
    CheckFailed,
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
from drkit.progress import OnProgress
from drkit.restore import documents
from drkit.restore.goal import Goal, xact_status
from drkit.restore.plan import (
    RecoveryPlan,
    TimelineChoice,
    Window,
    last_record_lsn,
    parse_timeline,
    plan_recovery,
)
from drkit.restore.recovery_conf import write_recovery_config
from drkit.restore.replay import Replayed, ReplayProgress, promote, stop, wait_paused
from drkit.restore.target import RecoveryTarget, stop_settings
from drkit.storage import Repository
from drkit.wal import (
    RESTORE_MARKER,
    SPOOL_DIR,
    clear_restore_marker,
    start_fetch_journal,
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
    stop(server)
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


def _paused_now(server: PostgresServer, pgdata: Path, manifest: Manifest) -> Replayed:
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
    return Replayed(str(lsn), last_commit.astimezone(UTC) if last_commit else None)


def _refuse_behind(
    point: RecoveryTarget, plan: RecoveryPlan, now: Replayed, server: PostgresServer, pgdata: Path
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
        goal = Goal(self.plan, self.repo, self.target, self.end_lsn)

        def run_to_pause(pause: str | None) -> tuple[Replayed | None, ReplayProgress]:
            """(Re)configure, start with an empty fetch journal, wait for the pause.  The
            replay's progress line ends aborted unless the server paused (the caller
            finishes it once the point reached is checked)."""
            self.configure(pause, "pause")
            start_fetch_journal(self.pgdata / "pg_wal")
            for name in ("postgresql.auto.conf", "recovery.signal", f"pg_wal/{SPOOL_DIR}"):
                chown_tree(self.pgdata / name, self.user)
            progress = ReplayProgress(on_progress, self.plan, self.end_lsn, pause)
            try:
                server.start(
                    wait=False, what=f"starting PostgreSQL for recovery (log: {server.log_file})"
                )
                result.started = True
                replayed = wait_paused(server, limit, progress.reached)
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
            stop(server)
        replayed, progress = run_to_pause(None)
        if replayed is None and goal.ended_at_plan_end(server):
            # a time after the last commit the archive holds: PostgreSQL found no commit
            # past it in the whole planned WAL, so the state at that time is the archive's end
            self.end_lsn = goal.end_lsn = result.end_lsn = last_record_lsn(self.repo, self.plan)
            stop(server)
            replayed, progress = run_to_pause(None)
        if replayed is None:
            raise goal.stopped_short(server, goal.describe())
        try:
            goal.check(replayed, server)
        except CheckFailed:
            progress.meter.abort()  # no ✓ for a replay short of its end
            stop(server)  # never left running short of its end
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
            promote(server, limit)
            result.timeline = server.current_timeline()
            result.state = "promoted"
        elif result.action == "shutdown":
            stop(server)
            self.configure(None, "shutdown")  # a restart stops at the same end, as PostgreSQL's own
            chown_tree(self.pgdata / "postgresql.auto.conf", self.user)
            result.state = "shut down"
        else:
            result.state = "paused"
