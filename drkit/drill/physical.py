"""A physical drill: the whole cluster recovered with point-in-time recovery's own code,
then checked.

The base backup and its WAL are restored into the drill's work directory by
:func:`drkit.restore.restore_point_in_time` (``archive_mode = off``, to
``report.target_point`` or to the end of the archive), which the drill watches through a
:class:`~drkit.restore.RecoveryObserver` (:class:`_RecoveryWatch`): it is handed the
recovering server (a scratch server the drill tears down, and connects to with the
policy's credentials: the recovered cluster has the source's roles), and times until it
first accepts a connection.  The phases of the RTO: ``unpack`` (fetch and unpack of the
base backup, streamed together), ``connections`` (server start and replay until it
first accepts a connection), ``wal_replay`` (the rest of the replay, until promotion)
and ``validation``.

A base backup records row counts at a named restore point written just after it:
recovery pauses there, the counts are compared on the paused hot standby, and the
server restarts to replay the rest.  A drill to ``--point-in-time`` never stops at that
point, so its row-count check is NOT_RUN (a FAIL verdict) unless the policy sets
``drill.checks.row_counts: false``.  A drill to the end of the archive checks that
replay reached the last WAL record the archive held when it started (the point the
recovered server reports): replay stopped short by a WAL file that cannot be fetched
FAILs it, however small the loss next to the RPO objective.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from drkit.catalog import iso
from drkit.drill.checks import (
    check_amcheck,
    check_collation,
    check_connect,
    check_row_counts,
    check_sql,
    row_counts_not_run,
)
from drkit.drill.context import DrillCannotRun, DrillRun, backup_major
from drkit.drill.report import FAIL, PASS, Check
from drkit.errors import CheckFailed, OperationError
from drkit.pg import PostgresServer, cluster_os_user, connect, server_version
from drkit.progress import Meter

if TYPE_CHECKING:
    from drkit.restore import PitrResult

#: a physical drill of the whole archive: replay reached the archive's last WAL record
END_CHECK = "WAL replayed to the end of the archive"


def drill_physical(run: DrillRun) -> None:
    """Base backup + WAL replay (to ``run.report.target_point``, or to the end of the
    archive) with PITR's own machinery into the drill's work directory, then validate."""
    base = run.work / "pg"
    base.mkdir(mode=0o755)
    try:  # a data directory runs only on its own major: none installed, the drill cannot run
        from drkit.pg import find_server

        find_server(backup_major(run.manifest), for_user=cluster_os_user())
    except OperationError as exc:
        raise DrillCannotRun(str(exc)) from None
    databases = list(run.manifest.databases) or run.policy.database.database_names()
    watch = _RecoveryWatch(run, databases)
    started = time.monotonic()
    result = _recover(run, watch, base / "data", started)
    if result is None:
        return
    paused = _time_phases(run, watch, result, started)
    _judge_recovery(run, result)
    run.report.phases["validation"] = run.report.phases.get("validation", 0.0) + paused
    _validate(run, watch.recovered(), databases, watch.counted)
    run.report.rto_wall = time.monotonic() - run.timer.origin


def _recover(
    run: DrillRun, watch: _RecoveryWatch, pgdata: Path, started: float
) -> PitrResult | None:
    """Point-in-time recovery into ``pgdata``; None (and FAIL checks) when it failed."""
    from drkit.restore import RecoveryStoppedShort, restore_point_in_time

    report = run.report
    try:
        result = restore_point_in_time(
            run.policy,
            report.target_point,
            pgdata,
            archive=False,
            repo=run.repo,
            backup=run.manifest if _to_the_end(run) else None,
            on_progress=run.timer.on_phase,
            observer=watch,
            point=run.point,
        )
    except (CheckFailed, OperationError) as exc:
        watch.stop()
        report.phases["unpack"] = time.monotonic() - started
        report.add(
            Check(
                "restore base backup + WAL",
                "restore",
                FAIL,
                expected=_expected(run),
                observed="recovery failed",
                detail=str(exc),
            )
        )
        if isinstance(exc, RecoveryStoppedShort) and _to_the_end(run):
            report.add(
                Check(
                    END_CHECK,
                    "restore",
                    FAIL,
                    expected="replay to the last WAL record the archive holds",
                    observed=f"stopped at {exc.segment}" if exc.segment else "stopped short",
                    detail=str(exc),
                )
            )
        return None
    except BaseException:
        watch.stop()
        raise
    watch.stop()
    return result


def _to_the_end(run: DrillRun) -> bool:
    """Whether the drill recovers to the end of the archive (no target was given)."""
    return run.report.target_point is None and run.point is None


def _expected(run: DrillRun) -> str:
    report = run.report
    return "recovery to " + (
        report.target_label or iso(report.target_point) or "the end of the archive"
    )


def _time_phases(run: DrillRun, watch: _RecoveryWatch, result: PitrResult, started: float) -> float:
    """Split the recovery's time into the RTO's phases; returns the seconds spent
    paused at the restore point (counting rows: validation, not replay)."""
    report = run.report
    report.backup_chain = list(result.chain)
    paused = result.phases.get("paused", 0.0)
    total = time.monotonic() - started - paused
    unpack = result.phases.get("fetch_unpack", 0.0)
    report.phases["unpack"] = unpack
    accepting_at = watch.accepting_at()
    if accepting_at is not None:  # hot standby: connections before replay ends
        until_accepting = min(total, max(unpack, accepting_at - started))
        report.phases["connections"] = until_accepting - unpack
        report.phases["wal_replay"] = max(0.0, total - until_accepting)
    else:
        report.phases["wal_replay"] = max(0.0, total - unpack)
    return paused


def _judge_recovery(run: DrillRun, result: PitrResult) -> None:
    """The recovery's own checks: it ended where asked, and (to the end of the archive)
    replayed the last WAL record the archive held, as the recovered server reports."""
    from drkit.lsn import parse_lsn

    report, manifest = run.report, run.manifest
    if result.backup_id != manifest.id:
        report.notes.append(
            f"point-in-time recovery chose base backup {result.backup_id} (the newest before "
            f"the target) rather than {manifest.id}"
        )
        report.backup_id = result.backup_id
    report.reached_point = result.reached_at or manifest.consistent_at or manifest.finished_at
    report.add(
        Check(
            "restore base backup + WAL",
            "restore",
            PASS,
            expected=_expected(run),
            observed=f"{result.state} at {iso(result.reached_at) or 'the backup end'}, "
            f"timeline {result.timeline}",
        )
    )
    if _to_the_end(run):  # the point the recovered server reports, not a log line
        reached = result.lsn is not None and result.end_lsn is not None
        done = reached and parse_lsn(str(result.lsn)) >= parse_lsn(str(result.end_lsn))
        report.add(
            Check(
                END_CHECK,
                "restore",
                PASS if done else FAIL,
                expected=f">= {result.end_lsn} (the last WAL record of {result.window.last_wal})",
                observed=f"replayed to {result.lsn}",
                detail="" if done else "replay stopped short of what the archive holds",
            )
        )


def _validate(
    run: DrillRun, server: PostgresServer, databases: list[str], counted: list[str]
) -> None:
    """The validation ladder on the recovered server (row counts were compared at the
    pause, for the databases in ``counted``)."""
    policy, report = run.policy, run.report
    with run.timer.phase("validation"):
        reachable: list[str] = []
        for database in databases:
            dsn = server.dsn(database)
            if not check_connect(report, dsn, database):
                continue
            reachable.append(database)
            check_collation(report, dsn, database)
            if report.scratch_server_version is None:
                with connect(dsn) as conn:
                    report.scratch_server_version = server_version(conn)
            if policy.drill.checks.row_counts and database not in counted:
                row_counts_not_run(
                    report,
                    database,
                    "counts are taken at the restore point written after the base backup; "
                    + (
                        "a drill to a point in time does not stop there"
                        if report.target_point is not None
                        else "this backup recorded none (did its user lack the right to "
                        "pg_create_restore_point?)"
                    ),
                )
        check_sql(policy, report, server, run.manifest, reachable)
        if policy.drill.checks.amcheck:
            for database in reachable:
                check_amcheck(report, server, database)


class _AcceptWatch(threading.Thread):
    """Notes when the recovering server first accepts a connection (the ``connections``
    phase of a physical drill: with hot standby that is before WAL replay ends)."""

    def __init__(self, cluster: PostgresServer, database: str) -> None:
        super().__init__(name="drkit-drill-accept-watch", daemon=True)
        self._cluster = cluster
        self._database = database
        self._stopped = threading.Event()
        self.accepting_at: float | None = None

    def run(self) -> None:
        pid_file = self._cluster.pid_file
        dsn = self._cluster.dsn(self._database)
        while not self._stopped.is_set():
            if pid_file.exists():
                try:
                    with psycopg.connect(dsn, connect_timeout=2):
                        self.accepting_at = time.monotonic()
                        return
                except psycopg.Error:
                    pass
            self._stopped.wait(0.1)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)


class _RecoveryWatch:
    """What a physical drill watches of point-in-time recovery (a
    :class:`~drkit.restore.RecoveryObserver`): the recovered server, handed over before
    it starts (a scratch server to tear down, timed until it first accepts a
    connection), and the pause at the restore point written just after the base backup,
    where the row counts the backup recorded are compared on the paused server."""

    def __init__(self, run: DrillRun, databases: list[str]) -> None:
        self._drill = run
        self._databases = databases
        self._server: PostgresServer | None = None
        self._accept: _AcceptWatch | None = None
        #: the databases whose rows were counted at the pause
        self.counted: list[str] = []
        # row counts were taken at a named restore point right after the backup:
        # recovery pauses there, they are compared on the paused server, then replay
        # goes on; a drill to a point in time does not stop there (they hold there only)
        manifest = run.manifest
        point = manifest.extra.get("row_counts_restore_point")
        wanted = run.policy.drill.checks.row_counts and manifest.row_counts
        self.pause_at = point if wanted and isinstance(point, str) else None
        if not _to_the_end(run):  # the counted point may lie past the target
            self.pause_at = None

    def on_server(self, server: PostgresServer) -> None:
        self._server = server
        self._drill.scratch.append(server)
        self._accept = _AcceptWatch(server, self._databases[0] if self._databases else "postgres")
        self._accept.start()

    def on_paused(self, result: PitrResult) -> None:
        with Meter(self._drill.timer.on_phase, "validation", "row counts at the restore point"):
            for database in self._databases:
                counts = self._drill.manifest.row_counts.get(database)
                if counts is not None:  # {}: an empty database, counted (and PASS) too
                    dsn = self.recovered().dsn(database)
                    check_row_counts(self._drill.report, dsn, database, counts)
                    self.counted.append(database)

    def recovered(self) -> PostgresServer:
        """The recovered server (recovery handed it over before starting it)."""
        assert self._server is not None, "recovery started no server"
        return self._server

    def accepting_at(self) -> float | None:
        """When the server first accepted a connection (monotonic), if it was seen to."""
        return self._accept.accepting_at if self._accept is not None else None

    def stop(self) -> None:
        if self._accept is not None:
            self._accept.stop()
