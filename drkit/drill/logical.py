"""A logical drill: dumps restored into a scratch cluster of the drill's own, then checked.

The scratch cluster (temporary directory, free port on 127.0.0.1, ``archive_mode =
off``, the ``postgres`` OS user when run as root; :data:`SCRATCH_SETTINGS`) is initdb'd
and started in a thread while the dumps are fetched, as an operator would provision a
server while downloading; then each dump is restored and the validation ladder climbed.
The phases of the RTO: ``startup`` (until the scratch server accepts connections),
``fetch`` (download, decrypt, decompress, sha256 checked), ``restore`` (pg_restore) and
``validation``.  Fetch and restore run one after the other (the real ``drkit restore``
overlaps them), so the measured RTO errs on the long side.

Each database comes from its own backup (``sources``: see
:func:`drkit.drill.runner.backups_per_database`) and is checked against that backup's
row counts; a database no backup holds FAILs.  A dump that cannot be read or restored
is a FAIL check, never a crash.  Each dump is restored the way ``drkit restore`` restores
it, owners and privileges included, as the role the policy's url names: the roles it
depends on are mirrored into the scratch cluster first (:mod:`.roles`), so a restore the
operator's role could not make fails the drill too.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from drkit.catalog import Manifest, dump_entries
from drkit.drill.checks import (
    AmcheckRun,
    check_connect,
    check_row_counts,
    check_sql,
    not_run_after_failed_restore,
)
from drkit.drill.context import DrillCannotRun, DrillRun
from drkit.drill.report import FAIL, PASS, Check
from drkit.drill.roles import (
    RestoreRole,
    create_database,
    mirror_roles,
    read_restore_role,
    toc_owners,
)
from drkit.errors import CheckFailed, DrkitError, StorageError
from drkit.pg import LocalCluster, connect, find_client, first_line, read_toc, server_version
from drkit.progress import MeteredReader, human_size
from drkit.restore import fetch_directory, restore_archive
from drkit.storage import StoredObject
from drkit.streams import copy_stream

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


def drill_logical(
    run: DrillRun, sources: dict[str, Manifest | None], scratch_major: int | None
) -> None:
    """Start the scratch cluster (of ``scratch_major``) while the dumps of ``sources``
    are fetched, then restore and validate them."""
    starter = _ScratchStarter(run, scratch_major)
    starter.start()
    dumps = [
        o
        for database, source in sources.items()
        if source is not None
        for o in dump_entries(source)  # one per database, whatever its dump format
        if o.database == database
    ]
    _no_backup_holds(run, sources)
    try:
        fetched = [
            (obj, local, _local_size(local))
            for obj in dumps
            if (local := _fetch(run, obj, sources.get(obj.database or ""))) is not None
        ]
    finally:
        starter.wait_through_interrupts()  # the teardown must see the cluster it starts
    cluster = starter.cluster()
    with connect(cluster.dsn()) as conn:
        run.report.scratch_server_version = server_version(conn)
    role, login = _restore_role(run, cluster, [local for _, local, _ in fetched], list(sources))
    restored = [
        obj.database or ""
        for obj, local, size in fetched
        if _restore(run, obj, local, size, cluster, role, login)
    ]
    run.report.reached_point = run.report.backup_consistent_at  # the oldest database's backup
    counts = {
        database: source.row_counts.get(database)
        for database, source in sources.items()
        if source is not None
    }
    _validate(run, cluster, dumps, counts, restored)
    run.report.rto_wall = time.monotonic() - run.timer.origin
    run.report.notes.append(
        "the scratch cluster starts while the backup is fetched: the RTO total is the wall "
        "time from the drill's start to the end of validation, less than the phases' sum"
    )


def start_scratch_cluster(run: DrillRun, major: int | None) -> LocalCluster:
    """initdb and start the drill's scratch cluster in ``work/pg``, registered for the
    teardown; DrillCannotRun when it cannot be made."""
    try:
        cluster = LocalCluster.create(
            run.work / "pg", settings=SCRATCH_SETTINGS, major=major, fast=True
        )
    except (DrkitError, OSError) as exc:
        raise DrillCannotRun(f"cannot create the scratch cluster: {exc}") from None
    run.scratch.append(cluster)
    return cluster


class _ScratchStarter(threading.Thread):
    """Starts the scratch cluster beside the fetch; its failure is handed to the drill's
    own thread by :meth:`cluster`."""

    def __init__(self, run: DrillRun, major: int | None) -> None:
        super().__init__(name="drkit-drill-startup", daemon=True)
        self._drill = run
        self._major = major
        self._done = threading.Event()
        self._cluster: LocalCluster | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            with self._drill.timer.phase("startup"):
                cluster = start_scratch_cluster(self._drill, self._major)
                cluster.wait_ready()
            self._cluster = cluster
        except BaseException as exc:  # handed to the drill's own thread
            self._error = exc
        finally:
            self._done.set()

    def wait_through_interrupts(self) -> None:
        """Wait for the start even through Ctrl-C (re-raised afterwards): a scratch
        cluster half-way through initdb must be finished, then torn down, never left
        behind.

        An Event, not Thread.join(): in CPython 3.11 a join interrupted by Ctrl-C marks
        the still running thread as stopped."""
        interrupted: KeyboardInterrupt | None = None
        while not self._done.is_set():
            try:
                self._done.wait()
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted

    def cluster(self) -> LocalCluster:
        """The started cluster, or the drill cannot run."""
        if isinstance(self._error, DrillCannotRun):
            raise self._error
        if self._error is not None:
            raise DrillCannotRun(f"the scratch cluster does not accept connections: {self._error}")
        assert self._cluster is not None
        return self._cluster


def _no_backup_holds(run: DrillRun, sources: dict[str, Manifest | None]) -> None:
    for database, source in sources.items():
        if source is None:
            run.report.add(
                Check(
                    f"restore {database}",
                    "restore",
                    FAIL,
                    expected="a logical backup holding the database",
                    observed="no logical backup holds it",
                    detail=f"run drkit backup {run.policy.name}",
                    database=database,
                )
            )


def _fetch(run: DrillRun, obj: StoredObject, source: Manifest | None) -> Path | None:
    """Download, decrypt and decompress one dump (sha256 checked); None when it fails.
    A directory-format dump is fetched into a directory."""
    members = source.directory_members(obj.database or "") if source else None
    local = run.fetch_dir / f"{secrets.token_hex(4)}.dump"
    with run.timer.phase("fetch", obj.database or "", obj.raw_size) as meter:
        try:
            if members is not None:
                local.mkdir()
                fetch_directory(run.repo, members, local, jobs=run.jobs, progress=meter)
            else:
                with run.repo.open_decoded(obj) as stream, open(local, "wb") as out:
                    copy_stream(MeteredReader(stream, meter), out)  # type: ignore[arg-type]
        except (CheckFailed, StorageError) as exc:
            _remove_local(local)
            run.report.add(
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


def _restore_role(
    run: DrillRun, cluster: LocalCluster, dumps: list[Path], databases: list[str]
) -> tuple[RestoreRole, str]:
    """The restore role, mirrored into the scratch cluster, and a login as it."""
    role = read_restore_role(run.policy.database.url.get_secret_value(), databases)
    owners: set[str] = set()
    try:
        if role.guessed:
            run.report.notes.append(
                f"the live server did not answer ({role.guessed}): restored as role "
                f"{role.name} taken to be no superuser, owning its databases, a member of "
                "no other role"
            )
            pg_restore = find_client("pg_restore", cluster.major or _server_major(cluster.dsn()))
            owners = {o for dump in dumps for o in toc_owners(read_toc(pg_restore, dump))}
        return role, mirror_roles(cluster, role, owners)
    except DrkitError as exc:
        raise DrillCannotRun(
            f"cannot create role {role.name} in the scratch cluster: {exc}"
        ) from None
    except psycopg.Error as exc:
        raise DrillCannotRun(
            f"cannot create role {role.name} in the scratch cluster: {first_line(exc)}"
        ) from None


def _restore(
    run: DrillRun,
    obj: StoredObject,
    local: Path,
    size: int,
    cluster: LocalCluster,
    role: RestoreRole,
    login: str,
) -> bool:
    database = obj.database or ""
    name = f"restore {database}"
    try:
        with run.timer.phase("restore", database):
            try:
                dsn = create_database(cluster, role, login, database)
                restore_archive(
                    find_client("pg_restore", cluster.major or _server_major(dsn)),
                    local,
                    dsn,
                    jobs=run.jobs,
                    superuser=role.superuser or role.name == cluster.superuser,
                    what=f"pg_restore of {database} into the scratch cluster as {role.name}",
                )
            except DrkitError as exc:
                run.report.add(
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
    run.report.add(
        Check(
            name,
            "restore",
            PASS,
            expected="pg_restore exits 0",
            observed=f"restored {human_size(size)} of dump as role {role.name}",
            database=database,
        )
    )
    return True


def _validate(
    run: DrillRun,
    cluster: LocalCluster,
    dumps: list[StoredObject],
    counts: dict[str, dict[str, int] | None],
    restored: list[str],
) -> None:
    """The validation ladder over every database the drill was to restore."""
    policy, report = run.policy, run.report
    with run.timer.phase("validation"):
        # pg_amcheck (a subprocess, the longest check) runs while the rows are counted
        amcheck = AmcheckRun(cluster, restored if policy.drill.checks.amcheck else [])
        amcheck.start()
        for obj in dumps:
            database = obj.database or ""
            dsn = cluster.dsn(database)
            expected = counts.get(database)
            if database not in restored:
                not_run_after_failed_restore(policy, expected, report, database)
                continue
            if not check_connect(report, dsn, database):
                not_run_after_failed_restore(policy, expected, report, database, "no connection")
                continue
            if policy.drill.checks.row_counts:
                check_row_counts(report, dsn, database, expected)
        check_sql(policy, report, cluster, run.manifest, restored)
        amcheck.join()  # also on Ctrl-C (its pg_amcheck ends when the cluster stops)
    for check in amcheck.checks:
        report.add(check)


def _local_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def _remove_local(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _server_major(dsn: str) -> int:
    with connect(dsn) as conn:
        return int(conn.info.server_version // 10000)
