"""One connection resolver: a policy url means what libpq makes of it.

``url: service=NAME`` (host, role, password and database in a service file), or a url
without a database relying on ``PGDATABASE``: libpq connects to that database, so drkit
backs up, restores and reports that database — it used to work the name out itself and
back up ``postgres`` (480 bytes, with a tick).  pg_dump and pg_restore are given the
resolved database explicitly, so they and drkit's own connections agree.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from drkit.demo.sample import table_counts
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget


def _server(pg_server: PgServer) -> dict[str, str]:
    params = {k: str(v) for k, v in conninfo_to_dict(pg_server.admin_dsn).items()}
    assert params.get("password"), "these tests need a server with a password"
    return params


def _service_file(path: Path, services: dict[str, dict[str, str]]) -> Path:
    path.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{key}={value}\n" for key, value in params.items())
            for name, params in services.items()
        )
    )
    path.chmod(0o600)
    return path


def test_a_service_url_backs_up_restores_and_reports_the_database_it_names(
    sample_db: tuple[str, str],
    pg_server: PgServer,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    file_repo: RepoTarget,
    tmp_path: Path,
) -> None:
    name, _url = sample_db
    server = _server(pg_server)
    login = {k: server[k] for k in ("host", "port", "user", "password") if k in server}
    target = f"r_{uuid.uuid4().hex[:8]}"  # created by the restore: named only in the file
    services = _service_file(
        tmp_path / "pg_service.conf",
        {"prodsvc": {**login, "dbname": name}, "restoresvc": {**login, "dbname": target}},
    )
    env = {"PGSERVICEFILE": str(services), "PGDATABASE": "postgres"}  # the file wins
    policy_dir = make_policy("prod", "service=prodsvc", file_repo)
    source = table_counts(pg_server.dsn(name))
    outputs = []
    try:
        made = run_drkit("-v", "backup", "prod", "--json", policy_dir=policy_dir, env=env)
        outputs.append(made)
        assert made.code == 0, made.stderr
        assert made.json()["databases"] == [name]
        assert made.json()["rows"] == sum(source.values()) > 0

        restored = run_drkit(
            "restore", "prod", "latest", "--target-db", "service=restoresvc", "--json",
            policy_dir=policy_dir, env=env,
        )  # fmt: skip
        outputs.append(restored)
        assert restored.code == 0, restored.stderr
        assert [d["database"] for d in restored.json()["databases"]] == [name]
        assert table_counts(pg_server.dsn(target)) == source

        status = run_drkit("status", "prod", "--json", policy_dir=policy_dir, env=env)
        outputs.append(status)
        assert list(status.json()["databases"]) == [name], status.stdout
    finally:
        pg_server.drop_database(target)
    for result in outputs:
        assert server["password"] not in result.stdout + result.stderr


def test_a_url_without_a_database_uses_pgdatabase(
    sample_db: tuple[str, str],
    pg_server: PgServer,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    file_repo: RepoTarget,
) -> None:
    name, url = sample_db
    dbless = url.rsplit("/", 1)[0] + "/"  # postgresql://postgres:...@host:port/
    policy_dir = make_policy("prod", dbless, file_repo)
    env = {"PGDATABASE": name}
    made = run_drkit("backup", "prod", "--json", policy_dir=policy_dir, env=env)
    assert made.code == 0, made.stderr
    assert made.json()["databases"] == [name]
    target = f"r_{uuid.uuid4().hex[:8]}"
    try:
        restored = run_drkit(
            "restore", "prod", "latest", "--target-db", pg_server.url(target),
            policy_dir=policy_dir, env=env,
        )  # fmt: skip
        assert restored.code == 0, restored.stderr
        assert table_counts(pg_server.dsn(target)) == table_counts(pg_server.dsn(name))
    finally:
        pg_server.drop_database(target)
    password = _server(pg_server)["password"]
    assert password not in made.stdout + made.stderr + restored.stdout + restored.stderr


def test_a_service_libpq_does_not_know_is_one_line(
    make_policy: PolicyWriter, run_drkit: DrkitRunner, file_repo: RepoTarget, tmp_path: Path
) -> None:
    services = _service_file(tmp_path / "pg_service.conf", {"other": {"dbname": "x"}})
    policy_dir = make_policy("prod", "service=nosuch", file_repo)
    result = run_drkit(
        "backup", "prod", policy_dir=policy_dir, env={"PGSERVICEFILE": str(services)}
    )
    assert result.code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert 'service "nosuch" not found' in lines[0]


@pytest.fixture(autouse=True)
def _no_ambient_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say what libpq sees; nothing from the shell that runs them."""
    for name in ("PGSERVICE", "PGSERVICEFILE", "PGDATABASE", "PGHOST", "PGPORT", "PGUSER"):
        monkeypatch.delenv(name, raising=False)
