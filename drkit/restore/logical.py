"""Logical restore: stream a stored dump back into ``pg_restore``, then check row counts.

Without ``--jobs`` the decoded object streams straight into ``pg_restore
--single-transaction``: if the stored bytes turn out corrupt (their sha256 is checked
at the end of the stream) pg_restore is killed before it commits, so the target is
left as it was.  With ``--jobs N`` the object first lands, verified, in a temporary
file (a parallel pg_restore needs a seekable archive); the file is removed whatever
happens.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drkit.backup.catalog import Manifest, resolve_backup
from drkit.config import Policy
from drkit.errors import CheckFailed, DatabaseError, SafetyRefused, UsageError
from drkit.pg.binaries import find_client
from drkit.pg.connect import connect, first_line, server_major
from drkit.pg.conninfo import dbname_of, describe, for_subprocess, with_dbname
from drkit.pg.process import PipeProcess
from drkit.pg.tables import count_rows_concurrently, list_tables, split_key, table_key
from drkit.storage.repository import Repository, StoredObject
from drkit.streams import CHUNK, copy_stream

log = logging.getLogger(__name__)


@dataclass
class DatabaseRestore:
    database: str
    target: str  # host:port/db, no password
    tables: int = 0
    rows: int = 0
    mismatches: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    backup_id: str
    databases: list[DatabaseRestore]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "databases": [vars(d) for d in self.databases],
            "ok": not any(d.mismatches for d in self.databases),
        }


def ensure_database(dsn: str) -> None:
    """Create the target database if it does not exist (via the ``postgres`` database)."""
    name = dbname_of(dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=15):
            return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise DatabaseError(f"cannot connect to {describe(dsn)}: {first_line(exc)}") from None
    with connect(dsn, "postgres") as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot create database {name}: {first_line(exc)}") from None
    log.info("created database %s", describe(dsn))


def user_table_count(dsn: str) -> int:
    with connect(dsn) as conn:
        return len(list_tables(conn))


def restore_targets(
    policy: Policy, manifest: Manifest, target_db: str | None
) -> list[tuple[StoredObject, str]]:
    dumps = [o for o in manifest.objects if o.database is not None]
    if target_db is not None and len(dumps) > 1:
        raise UsageError(
            f"backup {manifest.id} holds {len(dumps)} databases; --target-db takes one "
            "(restore without it to put each back in its own database)"
        )
    base = policy.database.url.get_secret_value()
    return [(o, target_db or with_dbname(base, o.database or "")) for o in dumps]


def restore_logical(
    policy: Policy,
    ref: str | None,
    *,
    target_db: str | None = None,
    jobs: int = 1,
    force: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
    repo: Repository | None = None,
) -> RestoreResult:
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    repo = repo or Repository.for_policy(policy)
    manifest = resolve_backup(repo, ref)
    if manifest.kind != "logical":
        raise UsageError(
            f"backup {manifest.id} is physical: restore it with --point-in-time TS --pgdata DIR"
        )
    targets = restore_targets(policy, manifest, target_db)
    # Every guard first, before anything is touched.
    for obj, dsn in targets:
        ensure_database(dsn)
        if not force and user_table_count(dsn) > 0:
            raise SafetyRefused(
                f"database {describe(dsn)} already holds tables: restoring {obj.database} over "
                "it needs --force (its objects of the same name are dropped and recreated)"
            )
    result = RestoreResult(manifest.id, [])
    for obj, dsn in targets:
        database = obj.database or dbname_of(dsn)
        restore_one(repo, obj, dsn, jobs=jobs, clean=force, on_progress=on_progress)
        outcome = compare_counts(dsn, manifest.row_counts.get(database, {}), jobs)
        outcome.database = database
        result.databases.append(outcome)
    failures = [m for d in result.databases for m in d.mismatches]
    if failures:
        raise CheckFailed(
            f"restore of {manifest.id}: row counts differ from the manifest: "
            + "; ".join(failures[:5])
            + (f" (and {len(failures) - 5} more)" if len(failures) > 5 else "")
        )
    return result


def restore_one(
    repo: Repository,
    obj: StoredObject,
    dsn: str,
    *,
    jobs: int,
    clean: bool,
    on_progress: Callable[[str, int], None] | None = None,
) -> None:
    with connect(dsn) as conn:
        major = server_major(conn)
    pg_restore = find_client("pg_restore", major)
    conninfo, env = for_subprocess(dsn)
    args = [pg_restore, "--exit-on-error", "-d", conninfo]
    if clean:
        args += ["--clean", "--if-exists"]
    what = f"pg_restore of {obj.database} into {describe(dsn)}"
    database = obj.database or ""

    def progress(n: int) -> None:
        if on_progress is not None:
            on_progress(database, n)

    if jobs == 1:
        with (
            repo.open_decoded(obj) as stream,
            PipeProcess([*args, "--single-transaction"], env=env, what=what, stdin=-1) as proc,
        ):
            try:
                while chunk := stream.read(CHUNK):
                    proc.stdin.write(chunk)
                    progress(len(chunk))
            except BrokenPipeError:
                proc.wait()  # pg_restore died: report its own error
                raise
            proc.wait()
        return
    tmp_dir = os.environ.get("DRKIT_TMPDIR") or None
    fd, tmp_name = tempfile.mkstemp(prefix="drkit-restore-", suffix=".dump", dir=tmp_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, repo.open_decoded(obj) as stream:
            copy_stream(_Progress(stream, progress), out)  # type: ignore[arg-type]
        with PipeProcess([*args, f"--jobs={jobs}", str(tmp)], env=env, what=what) as proc:
            proc.wait()
    finally:
        tmp.unlink(missing_ok=True)


class _Progress:
    def __init__(self, source: Any, report: Callable[[int], None]) -> None:
        self._source = source
        self._report = report

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._source.read(size)
        if data:
            self._report(len(data))
        return data


def compare_counts(dsn: str, expected: dict[str, int], jobs: int = 1) -> DatabaseRestore:
    outcome = DatabaseRestore(database=dbname_of(dsn), target=describe(dsn))
    with connect(dsn) as conn:
        present = {table_key(s, t) for s, t in list_tables(conn)}
    missing = [k for k in expected if k not in present]
    observed = count_rows_concurrently(dsn, [split_key(k) for k in expected if k in present], jobs)
    for key in missing:
        outcome.mismatches.append(f"{key}: table missing")
    for key, want in expected.items():
        if key in observed and observed[key] != want:
            outcome.mismatches.append(f"{key}: expected {want} rows, found {observed[key]}")
    outcome.tables = len(observed)
    outcome.rows = sum(observed.values())
    return outcome
