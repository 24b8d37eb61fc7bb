"""``drkit drill ENV``: restore a backup into a scratch cluster, measure, validate, report.

The drill (DESIGN.md §6) is drkit's proof that a backup is restorable within the
objectives.  It

1. picks a backup (``latest``, an id, or ``random``);
2. creates a scratch PostgreSQL cluster of its own (temporary directory, free port on
   127.0.0.1, ``archive_mode = off``, the ``postgres`` OS user when run as root);
3. restores into it, timing each phase of the RTO: ``startup`` (until the scratch
   server accepts connections), ``fetch`` (download, decrypt, decompress, sha256
   checked), ``restore`` (pg_restore) — or for physical drills ``unpack`` (fetch and
   unpack of the base backup, streamed together), ``connections`` (server start and
   replay until it first accepts a connection) and ``wal_replay`` (the rest of the
   replay, until promotion) — and ``validation``;
4. climbs the validation ladder: the server accepts connections, the row count of every
   table equals the manifest's, the policy's SQL checks return true, pg_amcheck finds
   no corruption;
5. compares the RTO and the achieved RPO with the policy's objectives;
6. tears the scratch cluster down — on failure and on Ctrl-C too — unless ``keep``;
7. stores ``drills/<id>/report.json`` in the repository (and with ``report_dir`` the
   report.json / report.md / junit.xml trio).

A damaged backup is a *finding*, not a crash: a corrupt object or a failing pg_restore
is a FAIL check and the verdict FAIL.  Only when the drill itself cannot run (no scratch
cluster) is the verdict ERROR.

Physical drills restore the whole cluster with point-in-time recovery's own code
(:func:`drkit.restore.pitr.restore_point_in_time`, ``archive_mode = off``) and connect with
the policy's credentials (the recovered cluster has the source's roles).  A base backup
records row counts at a named restore point written just after it: recovery pauses there,
the counts are compared on the paused hot standby, and the server restarts to replay the
rest.  A drill to ``--point-in-time`` never stops at that point, so its row-count check
is NOT_RUN (a FAIL verdict) unless the policy sets ``drill.checks.row_counts: false``.
A drill to the end of the archive checks that replay reached the last WAL record the
archive held when it started (the point the recovered server reports): replay stopped
short by a WAL file that cannot be fetched FAILs it, however small the loss next to the
RPO objective.

Logical restores run with ``--no-owner --no-privileges``: roles are cluster globals a logical
backup does not hold, and the scratch cluster only has ``postgres``.  Fetch and restore
run one after the other (the real ``drkit restore`` overlaps them), so the measured RTO
errs on the long side.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from drkit import __version__
from drkit.backup.catalog import (
    ID_FORMAT,
    KINDS,
    Manifest,
    dump_entries,
    iso,
    list_backups,
    newest_holding,
    resolve_backup,
)
from drkit.config import Policy
from drkit.drill.report import (
    ERROR,
    FAIL,
    NOT_RUN,
    PASS,
    Check,
    DrillReport,
    past_reports,
    store_report,
    write_report_dir,
)
from drkit.errors import CheckFailed, DrkitError, OperationError, StorageError, UsageError
from drkit.pg import (
    LocalCluster,
    Owner,
    PostgresServer,
    cluster_os_user,
    guard_data_directory,
    run_as,
)
from drkit.pg.binaries import find_binary, find_client, logical_target_major
from drkit.pg.connect import connect, first_line, server_version
from drkit.pg.conninfo import for_subprocess
from drkit.pg.pgrestore import restore_args
from drkit.pg.process import PipeProcess
from drkit.pg.tables import count_rows_concurrently, list_tables, split_key, table_key
from drkit.progress import Meter, MeteredReader, OnProgress, human_size
from drkit.restore.dirrestore import fetch_directory
from drkit.status import newest_recoverable_point
from drkit.storage.repository import Repository, StoredObject
from drkit.streams import copy_stream

if TYPE_CHECKING:
    from drkit.restore import PitrResult

log = logging.getLogger(__name__)

#: Settings of every scratch cluster (on top of LocalCluster's own).  The cluster is
#: initdb'd without syncing its template files (nothing of value is lost if the host
#: crashes mid-drill), but the server runs durable like a real restore target, so the
#: measured restore time is the one an incident would see.
SCRATCH_SETTINGS: dict[str, Any] = {
    "fsync": True,
    "synchronous_commit": "on",
    "full_page_writes": True,
    "archive_mode": "off",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "30min",
}
TMPDIR_ENV = "DRKIT_TMPDIR"
#: connections that count rows at once (the scratch cluster is on this host)
COUNT_JOBS = max(2, min(4, os.cpu_count() or 1))
SQL_CHECK_TIMEOUT = "10min"
#: a physical drill of the whole archive: replay reached the archive's last WAL record
END_CHECK = "WAL replayed to the end of the archive"

#: each phase as it starts and ends (a ProgressEvent with state "done" and its seconds)
PhaseCallback = OnProgress


class DrillCannotRun(OperationError):
    """The drill itself could not run (no scratch cluster): verdict ERROR, exit 1."""


@dataclass
class DrillResult:
    """What :func:`run_drill` hands back: the report and where it went."""

    report: DrillReport
    repository_key: str | None
    files: list[Path]
    kept: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        return self.report.verdict


def new_drill_id(started: datetime, kind: str) -> str:
    return f"{started.astimezone(UTC).strftime(ID_FORMAT)}-{kind}-{secrets.token_hex(2)}"


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


class _Timer:
    """Accumulates wall time per phase in the report, and tells the caller what runs."""

    def __init__(self, report: DrillReport, on_phase: PhaseCallback | None) -> None:
        self.report = report
        self.on_phase = on_phase
        self.origin = time.monotonic()
        self._lock = threading.Lock()

    @contextmanager
    def phase(self, name: str, item: str = "", total: int | None = None) -> Iterator[Meter]:
        meter = Meter(self.on_phase, name, item, total=total)
        started = time.monotonic()
        try:
            yield meter
        finally:
            meter.finish()
            took = time.monotonic() - started
            with self._lock:
                self.report.phases[name] = self.report.phases.get(name, 0.0) + took
            log.info("drill %s: %s took %.2fs", self.report.id, name, took)


# ---------------------------------------------------------------------------
# The drill
# ---------------------------------------------------------------------------


def run_drill(
    policy: Policy,
    *,
    backup_ref: str | None = "latest",
    point_in_time: datetime | None = None,
    keep: bool = False,
    report_dir: Path | None = None,
    jobs: int = 1,
    repo: Repository | None = None,
    on_phase: PhaseCallback | None = None,
    rng: random.Random | None = None,
    target_major: int | None = None,
) -> DrillResult:
    """Run one drill of ``policy``'s environment; see the module docstring.

    Raises (before any scratch cluster exists) when no backup can be selected; returns
    a result whose ``verdict`` is PASS, FAIL or ERROR otherwise.  KeyboardInterrupt
    propagates after the scratch cluster is torn down.
    """
    started_at = datetime.now(UTC)
    own_repo = repo is None
    repo = repo or Repository.for_policy(policy)
    try:
        return _run(
            policy,
            repo,
            started_at,
            backup_ref=backup_ref or "latest",
            point_in_time=point_in_time,
            keep=keep,
            report_dir=report_dir,
            jobs=jobs,
            on_phase=on_phase,
            rng=rng,
            target_major=target_major,
        )
    finally:
        if own_repo:
            repo.close()


def _run(
    policy: Policy,
    repo: Repository,
    started_at: datetime,
    *,
    backup_ref: str,
    point_in_time: datetime | None,
    keep: bool,
    report_dir: Path | None,
    jobs: int,
    on_phase: PhaseCallback | None,
    rng: random.Random | None,
    target_major: int | None = None,
) -> DrillResult:
    # the drill handles both kinds; a point in time needs a base backup and its WAL
    kinds = ("physical",) if point_in_time is not None else KINDS
    manifest = resolve_backup(repo, backup_ref, kinds=kinds, rng=rng)
    scratch_major = _scratch_major(manifest, target_major)
    sources = backups_per_database(policy, repo, manifest, backup_ref)
    report = DrillReport(
        id=new_drill_id(started_at, manifest.kind),
        environment=policy.name,
        started_at=started_at,
        backup_id=manifest.id,
        backup_kind=manifest.kind,
        backup_selection=backup_ref,
        backup_databases={db: m.id if m else "" for db, m in sources.items()},
        backup_consistent_at=min(
            (m.consistent_at or m.finished_at for m in sources.values() if m),
            default=manifest.consistent_at or manifest.finished_at,
        ),
        target_point=point_in_time,
        drkit_version=__version__,
        backup_server_version=manifest.server_version or None,
    )
    objectives = policy.objectives
    report.rto_objective = objectives.rto_seconds
    report.rpo_objective = objectives.rpo_seconds
    timer = _Timer(report, on_phase)
    log.info("drill %s of %s: backup %s", report.id, policy.name, manifest.id)

    # the scratch cluster's data directory is filled by root below it: nobody else may
    # own it or be able to swap what is in it
    scratch_root = Path(os.environ.get(TMPDIR_ENV) or tempfile.gettempdir())
    guard_data_directory(scratch_root, Owner.cluster(cluster_os_user()), what="scratch directory")
    work = Path(tempfile.mkdtemp(prefix="drkit-drill-", dir=scratch_root))
    work.chmod(0o711)  # the cluster's OS user must reach work/pg; work/fetch stays private
    fetch_dir = work / "fetch"
    fetch_dir.mkdir(mode=0o700)
    scratch: list[PostgresServer] = []
    kept: dict[str, Any] | None = None
    try:
        try:
            if manifest.kind == "logical":
                _drill_logical(
                    policy,
                    repo,
                    manifest,
                    sources,
                    report,
                    timer,
                    work,
                    fetch_dir,
                    scratch,
                    jobs,
                    scratch_major=scratch_major,
                )
            else:
                _drill_physical(policy, repo, manifest, report, timer, work, scratch)
        except DrkitError as exc:  # the drill could not run (the backup got no verdict)
            log.error("drill %s could not run: %s", report.id, exc)
            report.error = str(exc)
        _judge_objectives(policy, repo, manifest, report, backup_ref, point_in_time)
    finally:
        shutil.rmtree(fetch_dir, ignore_errors=True)
        if keep and scratch and scratch[0].is_running() and report.error is None:
            kept = _keep_info(scratch[0], work, manifest)
            report.cleanup = {"scratch_cluster": "kept", **kept}
        else:
            report.cleanup = _tear_down(scratch, work)
    report.finished_at = datetime.now(UTC)
    files: list[Path] = []
    if report_dir is not None:
        history = past_reports(repo, exclude=report.id)
        files = write_report_dir(report_dir, report, history)
    key = store_report(repo, report)
    log.info("drill %s: verdict %s, report %s", report.id, report.verdict, key)
    return DrillResult(report, key, files, kept)


def backups_per_database(
    policy: Policy, repo: Repository, manifest: Manifest, backup_ref: str
) -> dict[str, Manifest | None]:
    """Database -> the backup a drill restores it from.

    A physical backup holds the whole cluster.  A logical one selected by id (or at
    random) is drilled for what it holds.  ``latest`` means, for each database of the
    policy, the newest logical backup holding it: after ``drkit backup prod --database
    shop`` the newest backup holds only ``shop``, and the main database comes from the
    newest backup that holds it (None when no backup does: the drill fails for it)."""
    own: dict[str, Manifest | None] = {db: manifest for db in manifest.databases}
    if manifest.kind != "logical" or backup_ref != "latest":
        return own
    logical = list_backups(repo, "logical")
    chosen: dict[str, Manifest | None] = {}
    for database in [*policy.database.database_names(), *manifest.databases]:
        if database not in chosen:
            chosen[database] = own.get(database) or newest_holding(logical, database, "logical")
    return chosen


def _tear_down(scratch: list[PostgresServer], work: Path) -> dict[str, Any]:
    """Stop and remove the scratch cluster and the work directory; say whether it worked."""
    started = time.monotonic()
    for cluster in scratch:
        cluster.destroy()
    shutil.rmtree(work, ignore_errors=True)
    running = [c for c in scratch if c.is_running()]
    if running or work.exists():
        problem = (
            f"scratch server on port {running[0].port} still running"
            if running
            else f"{work} could not be removed"
        )
        log.error("drill clean-up incomplete: %s", problem)
        return {"scratch_cluster": "cleanup failed", "detail": problem}
    took = round(time.monotonic() - started, 3)
    return {"scratch_cluster": "removed", "seconds": took, "duration_seconds": took}


def _keep_info(cluster: PostgresServer, work: Path, manifest: Manifest) -> dict[str, Any]:
    database = next((o.database for o in manifest.objects if o.database), None)
    database = database or next(iter(manifest.databases), "postgres")
    q = shlex.quote
    pg_ctl = cluster.bin("pg_ctl")
    as_user = f"runuser -u {q(cluster.os_user)} -- " if cluster.os_user else ""
    return {
        "port": cluster.port,
        "data_dir": str(cluster.data_dir),
        "socket_dir": str(cluster.socket_dir),
        "connect": (
            f"psql -h {q(str(cluster.socket_dir))} -p {cluster.port} -U {q(cluster.superuser)} "
            f"{q(database)}"
        ),
        "stop": (
            f"{as_user}{q(pg_ctl)} -D {q(str(cluster.data_dir))} -m fast stop "
            f"&& rm -rf {q(str(work))}"
        ),
    }


def _scratch_major(manifest: Manifest, target_major: int | None) -> int | None:
    """The scratch cluster's major: a physical backup's own; for a logical backup
    ``target_major`` (an upgrade rehearsal), else its own major or the closest newer one."""
    backup_major = _major(manifest.server_version)
    if target_major is None:
        return backup_major if manifest.kind != "logical" else logical_target_major(backup_major)
    if manifest.kind != "logical":
        raise UsageError(
            f"--target-major: backup {manifest.id} is physical, and a physical backup runs "
            f"only on its own major ({backup_major}); drill a logical backup to rehearse an upgrade"
        )
    if backup_major is not None and target_major < backup_major:
        raise UsageError(
            f"--target-major {target_major} is older than backup {manifest.id}'s PostgreSQL "
            f"{backup_major}: a dump restores only into the same or a newer major"
        )
    return target_major


def _start_scratch(
    work: Path, major: int | None, scratch: list[PostgresServer], *, start: bool = True
) -> LocalCluster:
    try:
        cluster = LocalCluster.create(
            work / "pg", settings=SCRATCH_SETTINGS, major=major, start=start, fast=True
        )
    except (DrkitError, OSError) as exc:
        raise DrillCannotRun(f"cannot create the scratch cluster: {exc}") from None
    scratch.append(cluster)
    return cluster


# ---------------------------------------------------------------------------
# Logical drills
# ---------------------------------------------------------------------------


def _drill_logical(
    policy: Policy,
    repo: Repository,
    manifest: Manifest,
    sources: dict[str, Manifest | None],
    report: DrillReport,
    timer: _Timer,
    work: Path,
    fetch_dir: Path,
    scratch: list[PostgresServer],
    jobs: int,
    *,
    scratch_major: int | None = None,
) -> None:
    """Start the scratch cluster while the dumps are fetched (as an operator would
    provision a server while downloading), then restore and validate.  Each database
    comes from its own backup in ``sources``, and is checked against that backup's
    row counts."""
    started: dict[str, Any] = {}
    done = threading.Event()

    def start_scratch() -> None:
        try:
            with timer.phase("startup"):
                cluster = _start_scratch(work, scratch_major, scratch)
                cluster.wait_ready()
            started["cluster"] = cluster
        except BaseException as exc:  # handed to the drill's own thread below
            started["error"] = exc
        finally:
            done.set()

    starter = threading.Thread(target=start_scratch, name="drkit-drill-startup", daemon=True)
    starter.start()
    dumps = [
        o
        for database, source in sources.items()
        if source is not None
        for o in dump_entries(source)  # one per database, whatever its dump format
        if o.database == database
    ]
    counts = {
        database: source.row_counts.get(database)
        for database, source in sources.items()
        if source is not None
    }
    for database, source in sources.items():
        if source is None:
            report.add(
                Check(
                    f"restore {database}",
                    "restore",
                    FAIL,
                    expected="a logical backup holding the database",
                    observed="no logical backup holds it",
                    detail=f"run drkit backup {policy.name}",
                    database=database,
                )
            )
    fetched: list[tuple[StoredObject, Path, int]] = []
    try:
        for obj in dumps:
            source = sources.get(obj.database or "")
            members = source.directory_members(obj.database or "") if source else None
            local = _fetch(repo, obj, report, timer, fetch_dir, members, jobs)
            if local is not None:
                fetched.append((obj, local, _local_size(local)))
    finally:
        _wait_through_interrupts(done)  # the teardown must see the cluster it starts
    error = started.get("error")
    if isinstance(error, DrillCannotRun):
        raise error
    if error is not None:
        raise DrillCannotRun(f"the scratch cluster does not accept connections: {error}")
    cluster: LocalCluster = started["cluster"]
    with connect(cluster.dsn()) as conn:
        report.scratch_server_version = server_version(conn)

    restored: list[str] = []
    for obj, local, size in fetched:
        if _restore(obj, local, size, cluster, report, timer, jobs):
            restored.append(obj.database or "")
    report.reached_point = report.backup_consistent_at  # the oldest database's backup

    with timer.phase("validation"):
        # pg_amcheck (a subprocess, the longest check) runs while the rows are counted
        amcheck = _AmcheckRun(cluster, restored if policy.drill.checks.amcheck else [])
        amcheck.start()
        for obj in dumps:
            database = obj.database or ""
            dsn = cluster.dsn(database)
            expected = counts.get(database)
            if database not in restored:
                _not_run_after_failed_restore(policy, expected, report, database)
                continue
            if not _check_connect(report, dsn, database):
                _not_run_after_failed_restore(policy, expected, report, database, "no connection")
                continue
            if policy.drill.checks.row_counts:
                _check_row_counts(report, dsn, database, expected)
        _check_sql(policy, report, cluster, manifest, restored)
        amcheck.join()  # also on Ctrl-C (its pg_amcheck ends when the cluster stops)
    for check in amcheck.checks:
        report.add(check)
    report.rto_wall = time.monotonic() - timer.origin
    report.notes.append(
        "the scratch cluster starts while the backup is fetched: the RTO total is the wall "
        "time from the drill's start to the end of validation, less than the phases' sum"
    )


def _wait_through_interrupts(done: threading.Event) -> None:
    """Wait for ``done`` even through Ctrl-C (re-raised afterwards): a scratch cluster
    half-way through initdb must be finished, then torn down, never left behind.

    An Event, not Thread.join(): in CPython 3.11 a join interrupted by Ctrl-C marks the
    still running thread as stopped."""
    interrupted: KeyboardInterrupt | None = None
    while not done.is_set():
        try:
            done.wait()
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _fetch(
    repo: Repository,
    obj: StoredObject,
    report: DrillReport,
    timer: _Timer,
    fetch_dir: Path,
    members: list[StoredObject] | None = None,
    jobs: int = 1,
) -> Path | None:
    """Download, decrypt and decompress one dump (sha256 checked); None when it fails.
    ``members``: the objects of a directory-format dump, fetched into a directory."""
    local = fetch_dir / f"{secrets.token_hex(4)}.dump"
    with timer.phase("fetch", obj.database or "", obj.raw_size) as meter:
        try:
            if members is not None:
                local.mkdir()
                fetch_directory(repo, members, local, jobs=jobs, progress=meter)
            else:
                with repo.open_decoded(obj) as stream, open(local, "wb") as out:
                    copy_stream(MeteredReader(stream, meter), out)  # type: ignore[arg-type]
        except (CheckFailed, StorageError) as exc:
            _remove_local(local)
            report.add(
                Check(
                    f"restore {obj.database}",
                    "restore",
                    FAIL,
                    expected=f"{obj.key} intact ({obj.stored_size} bytes, sha256 as stored)",
                    observed="unreadable",
                    detail=str(exc),
                    database=obj.database,
                )
            )
            return None
    return local


def _restore(
    obj: StoredObject,
    local: Path,
    size: int,
    cluster: LocalCluster,
    report: DrillReport,
    timer: _Timer,
    jobs: int,
) -> bool:
    database = obj.database or ""
    name = f"restore {database}"
    try:
        with timer.phase("restore", database):
            try:
                cluster.create_database(database)
                _pg_restore(local, cluster, database, jobs)
            except DrkitError as exc:
                report.add(
                    Check(
                        name,
                        "restore",
                        FAIL,
                        expected="pg_restore exits 0",
                        observed="pg_restore failed",
                        detail=str(exc),
                        database=database,
                    )
                )
                return False
    finally:
        _remove_local(local)
    report.add(
        Check(
            name,
            "restore",
            PASS,
            expected="pg_restore exits 0",
            observed=f"restored {human_size(size)} of dump",
            database=database,
        )
    )
    return True


def _local_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def _remove_local(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pg_restore(dump: Path, cluster: LocalCluster, database: str, jobs: int) -> None:
    dsn = cluster.dsn(database)
    pg_restore = find_client("pg_restore", cluster.major or _server_major(dsn))
    args, env = restore_args(pg_restore, dsn, jobs=jobs, archive=dump)
    what = f"pg_restore of {database} into the scratch cluster"
    with PipeProcess(args, env=env, what=what) as proc:
        proc.wait()


def _server_major(dsn: str) -> int:
    with connect(dsn) as conn:
        return int(conn.info.server_version // 10000)


# ---------------------------------------------------------------------------
# The validation ladder
# ---------------------------------------------------------------------------


def _not_run_after_failed_restore(
    policy: Policy,
    expected: dict[str, int] | None,
    report: DrillReport,
    database: str,
    why: str = "the restore failed",
) -> None:
    if policy.drill.checks.row_counts:
        report.add(
            Check(
                f"rows {database}",
                "row_count",
                NOT_RUN,
                expected=f"{len(expected or {})} tables as in the manifest",
                detail=why,
                database=database,
            )
        )


def _check_connect(report: DrillReport, dsn: str, database: str) -> bool:
    try:
        with connect(dsn) as conn:
            conn.execute("SELECT 1")
    except DrkitError as exc:
        report.add(
            Check(
                f"connect {database}",
                "connect",
                FAIL,
                expected="accepts connections",
                observed="refused",
                detail=str(exc),
                database=database,
            )
        )
        return False
    report.add(
        Check(
            f"connect {database}",
            "connect",
            PASS,
            expected="accepts connections",
            observed="accepts connections",
            database=database,
        )
    )
    return True


def _row_counts_not_run(report: DrillReport, database: str, why: str) -> None:
    report.add(
        Check(
            f"rows {database}",
            "row_count",
            NOT_RUN,
            expected="row counts recorded at backup time",
            detail=why,
            database=database,
        )
    )


def _check_row_counts(
    report: DrillReport, dsn: str, database: str, expected: dict[str, int] | None
) -> None:
    if expected is None:
        _row_counts_not_run(report, database, "the backup records no row counts for this database")
        return
    if not expected:  # an empty database: nothing to compare, and that is a pass
        report.add(
            Check(
                f"rows {database}",
                "row_count",
                PASS,
                expected="0 tables (the backup recorded an empty database)",
                observed="0 tables, 0 rows counted",
                database=database,
            )
        )
        return
    try:
        with connect(dsn) as conn:
            present = {table_key(s, t) for s, t in list_tables(conn)}
        wanted = [split_key(k) for k in expected if k in present]
        observed = count_rows_concurrently(dsn, wanted, COUNT_JOBS)
    except DrkitError as exc:
        report.add(
            Check(
                f"rows {database}",
                "row_count",
                ERROR,
                expected=f"{len(expected)} tables as in the manifest",
                detail=str(exc),
                database=database,
            )
        )
        return
    for key, want in sorted(expected.items()):
        got = observed.get(key)
        if got is None:
            check = Check(f"rows {database}:{key}", "row_count", FAIL, want, None, "table missing")
        else:
            check = Check(f"rows {database}:{key}", "row_count", PASS if got == want else FAIL)
            check.expected, check.observed = want, got
        check.database = database
        report.add(check)


def _check_sql(
    policy: Policy,
    report: DrillReport,
    cluster: PostgresServer,
    manifest: Manifest,
    restored: list[str],
) -> None:
    # the policy's own (first) database, where the backup holds it: not whichever of a
    # whole cluster's databases sorts first
    own = policy.database.database_names()[0]
    default_db = own if own in manifest.databases or own in restored else None
    default_db = default_db or next((o.database for o in manifest.objects if o.database), None)
    default_db = default_db or next(iter(manifest.databases), None)
    for sql_check in policy.drill.checks.sql:
        database = sql_check.database or default_db or "postgres"
        name = f"sql: {sql_check.name}"
        whole_cluster = manifest.kind == "physical" and database not in manifest.databases
        if database not in restored and not whole_cluster:
            report.add(
                Check(
                    name,
                    "sql",
                    NOT_RUN,
                    expected=True,
                    detail=f"database {database} was not restored",
                    database=database,
                )
            )
            continue
        try:
            with connect(cluster.dsn(database), autocommit=False) as conn:
                conn.execute(
                    sql.SQL("SET LOCAL statement_timeout = {}").format(
                        sql.Literal(SQL_CHECK_TIMEOUT)
                    )
                )
                conn.execute("SET TRANSACTION READ ONLY")
                row = conn.execute(sql_check.query).fetchone()
                conn.rollback()
        except (DrkitError, psycopg.Error) as exc:
            report.add(
                Check(
                    name,
                    "sql",
                    ERROR,
                    expected=True,
                    detail=first_line(exc),
                    database=database,
                )
            )
            continue
        value = row[0] if row else None
        report.add(
            Check(
                name,
                "sql",
                PASS if value is True else FAIL,
                expected=True,
                observed=value if isinstance(value, bool | int | float | None) else str(value),
                detail="" if value is True else "the query must return one row whose value is true",
                database=database,
            )
        )


class _Checks(list[Check]):
    """Checks collected apart from the report (by a thread), added to it afterwards."""

    def add(self, check: Check) -> Check:
        self.append(check)
        return check


class _AmcheckRun(threading.Thread):
    def __init__(self, cluster: PostgresServer, databases: list[str]) -> None:
        super().__init__(name="drkit-drill-amcheck", daemon=True)
        self._cluster = cluster
        self._databases = databases
        self.checks = _Checks()

    def run(self) -> None:
        for database in self._databases:
            try:
                _check_amcheck(self.checks, self._cluster, database)
            except (DrkitError, OSError) as exc:
                self.checks.add(
                    Check(
                        f"amcheck {database}",
                        "amcheck",
                        ERROR,
                        expected="no corruption",
                        detail=str(exc),
                        database=database,
                    )
                )


def _check_amcheck(report: DrillReport | _Checks, cluster: PostgresServer, database: str) -> None:
    name = f"amcheck {database}"

    def not_run(why: str) -> None:
        report.add(
            Check(
                name,
                "amcheck",
                NOT_RUN,
                expected="no corruption",
                detail=f"{why}, or set drill.checks.amcheck: false in the policy",
                database=database,
            )
        )

    try:
        binary = find_binary("pg_amcheck", cluster.major)
    except OperationError as exc:
        not_run(f"{exc} (postgresql-contrib / the server package ships it)")
        return
    with connect(cluster.dsn(database)) as conn:  # some builds (the pgserver wheel) lack contrib
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"
        ).fetchone()
    if available is None:
        not_run(
            f"the scratch server (PostgreSQL {cluster.major}, {cluster.bin_dir}) has no "
            f"amcheck extension: install postgresql-{cluster.major} (its contrib ships it)"
        )
        return
    conninfo, env = for_subprocess(cluster.dsn(database))
    params = dict(p.split("=", 1) for p in conninfo.split())
    jobs = max(1, min(4, os.cpu_count() or 1))
    args = [
        binary,
        "--install-missing",
        f"--jobs={jobs}",
        "-h",
        params.get("host", "127.0.0.1"),
        "-p",
        params.get("port", str(cluster.port)),
        "-U",
        params.get("user", "postgres"),
        "-d",
        database,
    ]
    proc = run_as(args, None, env=env, check=False, timeout=24 * 3600, what="pg_amcheck")
    output = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode == 0 and not proc.stdout.strip():
        report.add(Check(name, "amcheck", PASS, "no corruption", "no corruption", "", database))
    elif proc.stdout.strip():  # pg_amcheck reports corruption on stdout
        report.add(
            Check(
                name,
                "amcheck",
                FAIL,
                expected="no corruption",
                observed=f"{len(proc.stdout.strip().splitlines())} lines of findings",
                detail=output[0] if output else "",
                database=database,
            )
        )
    else:
        report.add(
            Check(
                name,
                "amcheck",
                ERROR,
                expected="no corruption",
                observed=f"pg_amcheck exit {proc.returncode}",
                detail=output[-1] if output else "",
                database=database,
            )
        )


# ---------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------


def _judge_objectives(
    policy: Policy,
    repo: Repository,
    manifest: Manifest,
    report: DrillReport,
    backup_ref: str,
    point_in_time: datetime | None,
) -> None:
    """RTO and RPO as checks of kind ``objective`` (a missing objective is NOT_RUN)."""
    if report.error is not None:
        return
    if backup_ref == "latest" and point_in_time is None and report.reached_point is not None:
        report.rpo_achieved = (report.started_at - report.reached_point).total_seconds()
        report.rpo_basis = "drill start minus the newest point this drill restored " + (
            "(last replayed commit)" if manifest.kind == "physical" else "(backup consistent point)"
        )
    else:
        newest = newest_recoverable_point(policy, repo)
        if newest is not None:
            report.rpo_achieved = (report.started_at - newest).total_seconds()
        report.rpo_basis = (
            "drill start minus the repository's newest recoverable point (this drill restored "
            "an older point on purpose; its age is the backup age)"
        )
    for label, measured, objective in (
        ("rto", report.rto_total, report.rto_objective),
        ("rpo", report.rpo_achieved, report.rpo_objective),
    ):
        name = f"objective {label.upper()}"
        if objective is None:
            report.add(
                Check(
                    name,
                    "objective",
                    NOT_RUN,
                    detail=f"the policy sets no objectives.{label}: add one so drills can judge it",
                )
            )
        elif measured is None:
            report.add(
                Check(name, "objective", NOT_RUN, f"<= {objective:g}s", None, "not measured")
            )
        else:
            met = measured <= objective
            report.add(
                Check(
                    name,
                    "objective",
                    PASS if met else FAIL,
                    expected=f"<= {objective:g}s",
                    observed=f"{measured:.1f}s",
                    detail="" if met else f"{label.upper()} objective breached",
                )
            )


# ---------------------------------------------------------------------------
# Physical drills
# ---------------------------------------------------------------------------


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

    def __init__(
        self,
        policy: Policy,
        manifest: Manifest,
        report: DrillReport,
        timer: _Timer,
        databases: list[str],
        scratch: list[PostgresServer],
    ) -> None:
        self._manifest = manifest
        self._report = report
        self._timer = timer
        self._databases = databases
        self._scratch = scratch
        self._server: PostgresServer | None = None
        self._accept: _AcceptWatch | None = None
        #: the databases whose rows were counted at the pause
        self.counted: list[str] = []
        # row counts were taken at a named restore point right after the backup:
        # recovery pauses there, they are compared on the paused server, then replay
        # goes on; a drill to a point in time does not stop there (they hold there only)
        point = manifest.extra.get("row_counts_restore_point")
        wanted = policy.drill.checks.row_counts and manifest.row_counts
        self.pause_at = point if wanted and isinstance(point, str) else None
        if report.target_point is not None:
            self.pause_at = None

    def on_server(self, server: PostgresServer) -> None:
        self._server = server
        self._scratch.append(server)
        self._accept = _AcceptWatch(server, self._databases[0] if self._databases else "postgres")
        self._accept.start()

    def on_paused(self, result: PitrResult) -> None:
        with Meter(self._timer.on_phase, "validation", "row counts at the restore point"):
            for database in self._databases:
                counts = self._manifest.row_counts.get(database)
                if counts is not None:  # {}: an empty database, counted (and PASS) too
                    _check_row_counts(
                        self._report, self.recovered().dsn(database), database, counts
                    )
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


def _drill_physical(
    policy: Policy,
    repo: Repository,
    manifest: Manifest,
    report: DrillReport,
    timer: _Timer,
    work: Path,
    scratch: list[PostgresServer],
) -> None:
    """Base backup + WAL replay (to ``report.target_point``, or to the end of the
    archive) with PITR's own machinery, into the drill's work directory."""
    from drkit.pg.binaries import find_server
    from drkit.restore import RecoveryStoppedShort, restore_point_in_time
    from drkit.wal_names import parse_lsn

    base = work / "pg"
    base.mkdir(mode=0o755)
    try:  # a data directory runs only on its own major: none installed, the drill cannot run
        find_server(_major(manifest.server_version), for_user=cluster_os_user())
    except OperationError as exc:
        raise DrillCannotRun(str(exc)) from None
    databases = list(manifest.databases) or policy.database.database_names()
    watch = _RecoveryWatch(policy, manifest, report, timer, databases, scratch)
    started = time.monotonic()
    try:
        result = restore_point_in_time(
            policy,
            report.target_point,
            base / "data",
            archive=False,
            repo=repo,
            backup=manifest if report.target_point is None else None,
            on_progress=timer.on_phase,
            observer=watch,
        )
    except (CheckFailed, OperationError) as exc:
        report.phases["unpack"] = time.monotonic() - started
        report.add(
            Check(
                "restore base backup + WAL",
                "restore",
                FAIL,
                expected="recovery to " + (iso(report.target_point) or "the end of the archive"),
                observed="recovery failed",
                detail=str(exc),
            )
        )
        if isinstance(exc, RecoveryStoppedShort) and report.target_point is None:
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
        return
    finally:
        watch.stop()
    cluster = watch.recovered()
    counted = watch.counted
    report.backup_chain = list(result.chain)
    paused = result.phases.get("paused", 0.0)  # counting rows: validation, not replay
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
            expected="recovery to " + (iso(report.target_point) or "the end of the archive"),
            observed=f"{result.state} at {iso(result.reached_at) or 'the backup end'}, "
            f"timeline {result.timeline}",
        )
    )
    if report.target_point is None:  # the point the recovered server reports, not a log line
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
    report.phases["validation"] = report.phases.get("validation", 0.0) + paused
    with timer.phase("validation"):
        reachable: list[str] = []
        for database in databases:
            dsn = cluster.dsn(database)
            if not _check_connect(report, dsn, database):
                continue
            reachable.append(database)
            if report.scratch_server_version is None:
                with connect(dsn) as conn:
                    report.scratch_server_version = server_version(conn)
            if policy.drill.checks.row_counts and database not in counted:
                _row_counts_not_run(
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
        _check_sql(policy, report, cluster, manifest, reachable)
        if policy.drill.checks.amcheck:
            for database in reachable:
                _check_amcheck(report, cluster, database)
    report.rto_wall = time.monotonic() - timer.origin
