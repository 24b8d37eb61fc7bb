"""Helpers for the WAL / physical backup / PITR tests (not collected by pytest).

These tests need what PostgreSQL's OS user can reach: pytest's ``tmp_path`` lives in a
root-only directory when the tests run as root, so the policy directory, a ``file://``
repository and restored data directories go into a world-readable scratch directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from drkit.config import load_policy
from drkit.pg import LocalCluster, chown_tree, cluster_os_user, run_as
from drkit.storage import Repository
from drkit.wal import archive_command, find_wal_key, prepare_file_repository
from tests import builders
from tests.fix_cli import DrkitRunner


@contextlib.contextmanager
def shared_dir(prefix: str = "drkit-waltest-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        if not os.environ.get("DRKIT_KEEP_TEST_DIRS"):
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class Archived:
    """A cluster archiving into a repository through ``drkit wal-push``."""

    root: Path
    cluster: LocalCluster
    policy_dir: Path
    repo_block: dict[str, Any]
    env: str = "prod"
    restored: list[Path] = field(default_factory=list)
    #: more policy keys (``wal_streaming``, ...)
    policy_extra: dict[str, Any] = field(default_factory=dict)

    def dsn(self, dbname: str = "postgres") -> str:
        return self.cluster.dsn(dbname)

    def execute(self, sql: str, dsn: str | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn or self.dsn(), autocommit=True) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def switch_and_wait(self, repo_has: Any, dsn: str | None = None, timeout: float = 60) -> str:
        """pg_switch_wal() and wait until the segment it closed is in the repository."""
        rows = self.execute(
            "SELECT pg_walfile_name(pg_current_wal_insert_lsn()), pg_switch_wal()", dsn
        )
        name = str(rows[0][0])
        deadline = time.monotonic() + timeout
        while not repo_has(name):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} was not archived within {timeout}s")
            time.sleep(0.2)
        return name

    def write_policy(self, db_url: str, policy_dir: Path | None = None) -> Path:
        directory = policy_dir or self.policy_dir
        builders.write_policy(
            directory,
            self.env,
            db_url,
            self.repo_block,
            environment="prod",
            wal_archiving=True,
            **self.policy_extra,
        )
        chown_tree(directory, cluster_os_user())
        return directory

    def new_pgdata(self) -> Path:
        path = self.root / f"restore{len(self.restored)}"
        self.restored.append(path)
        return path

    def stop_restored(self) -> None:
        user = cluster_os_user()
        for pgdata in self.restored:
            if (pgdata / "postmaster.pid").exists():
                run_as(
                    [self.cluster.bin("pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"],
                    user,
                    check=False,
                    timeout=60,
                )


def start_archived_cluster(
    root: Path,
    repo_block: dict[str, Any],
    env: str = "prod",
    major: int | None = None,
    *,
    settings: dict[str, Any] | None = None,
    initdb_args: tuple[str, ...] = (),
    policy_extra: dict[str, Any] | None = None,
) -> Archived:
    """A cluster (of ``major``; None: the default) archiving into ``repo_block``, with
    more server ``settings``, ``initdb_args`` and policy keys when given."""
    user = cluster_os_user()
    policy_dir = root / "policies"
    policy_dir.mkdir()
    prepare_file_repository(str(repo_block["url"]), env, user)
    cluster = LocalCluster.create(
        root / "pg",
        settings={
            "archive_mode": "on",
            "archive_command": archive_command(env, policy_dir, user),
            "max_wal_size": "256MB",
            **(settings or {}),
        },
        fast=True,
        major=major,
        initdb_args=initdb_args,
    )
    archived = Archived(root, cluster, policy_dir, repo_block, env)
    archived.policy_extra = dict(policy_extra or {})
    archived.write_policy(cluster.dsn())
    return archived


@contextlib.contextmanager
def archived_cluster(
    root: Path,
    repo_block: dict[str, Any],
    env: str = "prod",
    major: int | None = None,
    **kwargs: Any,
) -> Iterator[Archived]:
    """:func:`start_archived_cluster`, then stop what was restored from it and destroy it."""
    arch = start_archived_cluster(root, repo_block, env, major, **kwargs)
    try:
        yield arch
    finally:
        arch.stop_restored()
        arch.cluster.destroy()


def restored_dsn(archived: Archived, port: int, dbname: str = "postgres") -> str:
    base = archived.cluster.dsn(dbname)
    return base.replace(f":{archived.cluster.port}/", f":{port}/")


def file_repo_block(root: Path) -> dict[str, Any]:
    repo = root / "repo"
    repo.mkdir()
    chown_tree(repo, cluster_os_user())
    os.chmod(repo, 0o755)  # noqa: S103 - the cluster user writes WAL here
    return {"url": f"file://{repo}"}


def cluster_user_python(user: str) -> tuple[list[str], str]:
    """A Python ``user`` can run, and a prelude that makes drkit importable in it: the
    interpreter drkit's archive_command would give that user (its checked runtime when
    this one is out of its reach)."""
    from drkit.wal.commands import drkit_argv, shared_runtime

    argv = drkit_argv(user)
    if "-I" not in argv:  # this interpreter, run with -m: drkit is importable as it is
        return [argv[0]], ""
    runtime = shared_runtime()
    paths = [str(p) for p in runtime.pythonpath]
    return [runtime.python, "-I", "-S"], f"import sys; sys.path[:0] = {paths!r}\n"


def repo_of(arch: Archived) -> Repository:
    return Repository.for_policy(load_policy(arch.env, arch.policy_dir))


def has_wal(arch: Archived) -> Callable[[str], bool]:
    repo = repo_of(arch)
    return lambda name: find_wal_key(repo, name) is not None


def server_now(arch: Archived, dsn: str | None = None) -> datetime:
    value: datetime = arch.execute("SELECT clock_timestamp()", dsn)[0][0]
    return value.astimezone(UTC)


def markers(dsn: str, arch: Archived) -> list[str]:
    return [str(r[0]) for r in arch.execute("SELECT label FROM marker ORDER BY id", dsn)]


def add_marker(arch: Archived, label: str, dsn: str | None = None) -> datetime:
    """Insert a marker in its own transaction; returns its commit time (server clock)."""
    arch.execute(f"INSERT INTO marker (label) VALUES ('{label}')", dsn)
    return server_now(arch, dsn)


def pitr(
    run_drkit: DrkitRunner,
    arch: Archived,
    target: str,
    *extra: str,
    policy_dir: Any = None,
    env: dict[str, str] | None = None,
) -> Any:
    pgdata = arch.new_pgdata()
    result = run_drkit(
        "restore",
        arch.env,
        "--point-in-time",
        target,
        "--pgdata",
        str(pgdata),
        "--json",
        *extra,
        policy_dir=policy_dir or arch.policy_dir,
        env=env,
        timeout=600,
    )
    log = pgdata / "log" / "drkit-recovery.log"
    if result.code != 0 and log.exists():  # say why in the assertion message
        result.stderr += "\n--- recovery log ---\n" + "\n".join(
            line
            for line in log.read_text(errors="replace").splitlines()
            if "accepting connections" not in line and "Consistent recovery" not in line
        )
    return pgdata, result


def backup_with_markers(arch: Archived, run_drkit: DrkitRunner, *labels: str) -> list[str]:
    """A physical backup, then one marker per label, each in its own archived segment."""
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    backup = run_drkit("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    segments = []
    for label in labels:
        add_marker(arch, label)
        segments.append(arch.switch_and_wait(has_wal(arch)))
    return segments
