"""The WAL archive belongs to one cluster: a second cluster given production's
archive_command stores nothing, through any path (issue 20).

Real PostgreSQL clusters and the real command line PostgreSQL runs, into ``file://`` and
S3 (moto over HTTP).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from drkit.pg import LocalCluster, chown_tree, cluster_os_user, run_as
from drkit.storage import Repository
from drkit.wal import SPOOL_ROOT, archive_command, load_wal_policy, system_identifier
from tests.builders import build_manifest
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget, S3Server
from tests.wal_support import Archived, archived_cluster, file_repo_block, shared_dir


@pytest.fixture(params=["file", "s3"])
def prod(request: pytest.FixtureRequest) -> Iterator[Archived]:
    with shared_dir() as root:
        if request.param == "file":
            block = file_repo_block(root)
        else:
            s3: S3Server = request.getfixturevalue("s3_server")
            block = {
                "url": f"s3://{s3.create_bucket()}/drkit",
                "endpoint_url": s3.endpoint,
                "region": "us-east-1",
            }
        with archived_cluster(root, block) as arch:
            yield arch


def repo_of(arch: Archived, policy_dir: Path | None = None) -> Repository:
    return Repository.for_policy(load_wal_policy(arch.env, policy_dir or arch.policy_dir))


def stored(repo: Repository) -> dict[str, int]:
    """Every object of the environment (WAL and records beside it) and its size."""
    return {info.key: info.size for info in repo.list("")}


def wal_stored(repo: Repository, name: str) -> bool:
    return any(info.key.rsplit("/", 1)[-1].startswith(name) for info in repo.list("wal/"))


def statuses(cluster: LocalCluster) -> dict[str, str]:
    status = cluster.data_dir / "pg_wal" / "archive_status"
    return {p.name.rsplit(".", 1)[0]: p.name.rsplit(".", 1)[1] for p in status.iterdir()}


def push_as_postgres_would(line: str, cluster: LocalCluster, name: str) -> Any:
    """Run an archive_command line for ``pg_wal/NAME`` as PostgreSQL runs it: the cluster's
    OS user, in the data directory, with the environment the servers were started with."""
    command = line.replace("%p", f"pg_wal/{name}")
    return run_as(
        ["sh", "-c", f"cd {cluster.data_dir} && {command}"],
        cluster.os_user,
        check=False,
        timeout=300,
    )


def archiver(cluster: LocalCluster) -> tuple[int, int]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_second_cluster_with_productions_archive_command_stores_nothing(
    prod: Archived, run_drkit: DrkitRunner
) -> None:
    repo = repo_of(prod)
    first = prod.switch_and_wait(lambda n: wal_stored(repo, n))
    line = archive_command(prod.env, prod.policy_dir, cluster_os_user())

    # another cluster (its own initdb: another system identifier), archiving paused while
    # a few segments and a history file become ready, as after an outage
    other = LocalCluster.create(
        prod.root / "other",
        settings={"archive_mode": "on", "archive_command": "", "max_wal_size": "256MB"},
        fast=True,
    )
    try:
        with psycopg.connect(other.dsn(), autocommit=True) as conn:
            for _ in range(4):
                conn.execute("SELECT txid_current()")
                conn.execute("SELECT pg_switch_wal()")
        pg_wal = other.data_dir / "pg_wal"
        (pg_wal / "00000002.history").write_text("1\t0/3000000\tno recovery target specified\n")
        (pg_wal / "archive_status" / "00000002.history.ready").write_text("")
        # what production's pushes remember of the repository, copied over: bound to
        # production's system identifier, it lets nobody else in
        remembered = prod.cluster.data_dir / "pg_wal" / SPOOL_ROOT
        if remembered.is_dir():
            shutil.copytree(remembered, pg_wal / SPOOL_ROOT)
        chown_tree(pg_wal, other.os_user)
        ready = sorted(n for n, s in statuses(other).items() if s == "ready")
        segments = [n for n in ready if len(n) == 24]
        assert len(segments) >= 4 and "00000002.history" in ready
        before = stored(repo)
        foreign = system_identifier(other.data_dir)

        # synchronous wal-push of its oldest segment: with the others ready, it would
        # archive them ahead (history file first) in the same call
        pushed = push_as_postgres_would(line, other, segments[0])
        assert pushed.returncode == 1, pushed.stderr
        assert stored(repo) == before  # nothing archived ahead either
        assert all(s == "ready" for n, s in statuses(other).items() if n in ready)
        identity = repo.get_json("identity.json")
        assert identity["system_identifier"] == str(system_identifier(prod.cluster.data_dir))
        message = pushed.stderr.strip()
        assert len(message.splitlines()) == 1
        assert f"cluster {foreign}" in message and identity["system_identifier"] in message
        assert "nothing was stored" in message
        # the history file on its own
        pushed = push_as_postgres_would(line, other, "00000002.history")
        assert pushed.returncode == 1 and "nothing was stored" in pushed.stderr
        # a copy of its segment pushed by hand, from outside any data directory: the
        # segment's own first page names its cluster
        copies = prod.root / "copies"
        copies.mkdir()
        shutil.copy(pg_wal / segments[-1], copies / segments[-1])
        by_hand = run_drkit(
            "wal-push", prod.env, str(copies / segments[-1]), policy_dir=prod.policy_dir
        )
        assert by_hand.code == 1 and f"cluster {foreign}" in by_hand.stderr

        # asynchronous: the worker refuses too, and so does the wal-push waiting for it
        async_dir = prod.root / "async-policies"
        shutil.copytree(prod.policy_dir, async_dir)
        doc = yaml.safe_load((async_dir / "prod.yaml").read_text())
        doc["wal_archiver"] = {"mode": "async", "wait": 5, "idle_exit": 2}
        (async_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
        chown_tree(async_dir, cluster_os_user())
        async_line = archive_command(prod.env, async_dir, cluster_os_user())
        pushed = push_as_postgres_would(async_line, other, segments[1])
        assert pushed.returncode == 1, pushed.stderr
        assert "nothing was stored" in pushed.stderr
        spool_root = pg_wal / SPOOL_ROOT
        assert not list(spool_root.rglob("*.ack"))

        # and PostgreSQL's own archiver, running production's line
        with psycopg.connect(other.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(line))
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 60
        while archiver(other)[1] == 0:
            assert time.monotonic() < deadline, "PostgreSQL never ran archive_command"
            time.sleep(0.2)
        assert archiver(other)[0] == 0

        assert stored(repo) == before  # not one object added or changed
        assert all(s == "ready" for n, s in statuses(other).items() if n in ready)
        assert repo.get_json("identity.json") == identity

        # production goes on archiving as before
        prod.execute("SELECT txid_current()")  # something to switch away from
        nxt = prod.switch_and_wait(lambda n: wal_stored(repo, n))
        assert nxt > first
        assert archiver(prod.cluster)[1] == 0
    finally:
        other.destroy()


def test_the_archive_is_bound_once_and_never_rebound(
    repo_target: RepoTarget, make_policy: PolicyWriter
) -> None:
    """Two clusters' first pushes race: the identity is stored without replacing, so the
    one that records second gets the first one's identifier back, and the record stays."""
    from drkit.wal import read_identity, record_identity

    policy_dir = make_policy("prod", "postgresql:///unused", repo_target)
    repo = Repository.for_wal(load_wal_policy("prod", policy_dir))
    assert read_identity(repo) is None
    assert record_identity(repo, 7000000000000000001, "first") == "7000000000000000001"
    assert record_identity(repo, 7000000000000000002, "second") == "7000000000000000001"
    assert repo.get_json("identity.json")["source"] == "first"
    assert read_identity(repo) == "7000000000000000001"


def test_a_repository_with_backups_is_bound_to_their_cluster(
    repo_target: RepoTarget, make_policy: PolicyWriter
) -> None:
    """An archive used before identities were recorded holds base backups: the first
    push to bind it must come from their cluster, not from whichever server pushes first."""
    from datetime import UTC, datetime

    from drkit.catalog import write_manifest
    from drkit.wal import ForeignWal, read_identity, record_identity

    policy_dir = make_policy("prod", "postgresql:///unused", repo_target)
    repo = Repository.for_wal(load_wal_policy("prod", policy_dir))
    at = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    write_manifest(
        repo,
        build_manifest(
            "physical", at=at, server_version="15.4", system_identifier="7000000000000000001"
        ),
    )
    with pytest.raises(ForeignWal, match="is of cluster 7000000000000000001"):
        record_identity(repo, 7000000000000000002, "another server")
    assert read_identity(repo) is None
    assert record_identity(repo, 7000000000000000001, "production") == "7000000000000000001"


def test_a_base_backup_of_another_cluster_is_refused_before_anything_is_stored(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
) -> None:
    """The archive is bound to production's cluster: a base backup of another server (a
    policy url pointed at the wrong host) would become ``latest`` with no WAL of its own
    behind it.  It is refused (exit 4) before pg_basebackup runs."""
    from drkit.wal import record_identity

    _, url = database
    policy_dir = make_policy("prod", url, file_repo)
    repo = Repository.for_wal(load_wal_policy("prod", policy_dir))
    record_identity(repo, 7000000000000000001, "production")
    done = run_drkit("backup", "prod", "--physical", "--policy-dir", str(policy_dir))
    assert done.code == 4, done.stderr
    assert "7000000000000000001" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert [i.key for i in repo.list("backups/")] == []
