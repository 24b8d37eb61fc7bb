"""``drkit sanitize`` attacked: each test tries to break one promise and asserts what is
readable afterwards (prod's rows, DST's contents, leftover databases), not only exit codes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.fix_cli import DrkitRunner, Env, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.sanitize.helpers import (
    ENV,
    leftovers,
    other_role,  # noqa: F401  (the fixture)
    respell,
    role_url,
    rows,
    rules_doc,
    rules_for,
    sanitize,
    table_dump,
    write_rules,
)


def prod_fingerprint(e: Env) -> dict[str, list[Any]]:
    return table_dump(e.dsn(e.src_name))


# ---------------------------------------------------------------------------
# 1. Guards by identity
# ---------------------------------------------------------------------------


def libpq_spelling(pg: PgServer, dbname: str, spelling: str) -> tuple[str, dict[str, str]]:
    """Prod's database as only libpq's resolution reveals it: a host list whose first
    host is dead, or a bare database name completed by ``PG*`` variables."""
    params = psycopg.conninfo.conninfo_to_dict(pg.admin_dsn)
    port, user = str(params.get("port", 5432)), str(params.get("user", "postgres"))
    password = str(params.get("password") or "")
    if spelling == "host-list":
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"postgresql://{auth}@127.0.0.1:1,localhost:{port}/{dbname}?connect_timeout=5", {}
    variables = {"PGHOST": "localhost", "PGPORT": port, "PGUSER": user}
    if password:
        variables["PGPASSWORD"] = password
    return f"dbname={dbname}", variables


@pytest.mark.parametrize("spelling", ["localhost", "other-user", "host-list", "pg-variables"])
def test_dev_policy_aliasing_prod_is_refused_live(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    spelling: str,
) -> None:
    variables: dict[str, str] = {}
    if spelling in ("host-list", "pg-variables"):
        url, variables = libpq_spelling(pg_server, envs.src_name, spelling)
    else:
        user, pw = other_role if spelling == "other-user" else (None, None)
        url = respell(pg_server, envs.src_name, user=user, pw=pw)
    make_policy("dev", url, file_repo)
    before = prod_fingerprint(envs)
    rules = rules_for(tmp_path, "prod", "dev")
    result = run_drkit(
        "sanitize",
        "prod",
        "dev",
        "--rules",
        str(rules),
        "--force",
        policy_dir=envs.policy_dir,
        env={**ENV, **variables},
    )
    assert result.code == 4, result.stderr
    assert "same database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert prod_fingerprint(envs) == before
    assert leftovers(envs) == []


def test_dev_policy_aliasing_prod_is_refused_from_backup_with_force(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    assert run_drkit("backup", "prod", policy_dir=envs.policy_dir).code == 0
    make_policy("dev", respell(pg_server, envs.src_name), file_repo)
    before = prod_fingerprint(envs)
    rules = rules_for(tmp_path, "prod", "dev")
    result = sanitize(
        run_drkit,
        envs,
        "prod",
        "dev",
        "--rules",
        str(rules),
        "--from-backup",
        "latest",
        "--force",
    )
    assert result.code == 4, result.stderr
    assert "same database" in result.stderr
    assert prod_fingerprint(envs) == before


def test_custom_environment_with_prods_rank_is_refused(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    mirror = f"mir_{uuid.uuid4().hex[:8]}"
    make_policy("mirror", pg_server.url(mirror), file_repo, environment="mirror", rank=3)
    rules = rules_for(tmp_path, "prod", "mirror")
    result = sanitize(run_drkit, envs, "prod", "mirror", "--rules", str(rules), "--force")
    assert result.code == 4, result.stderr
    assert "strictly higher" in result.stderr
    exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
    assert rows(envs.dsn("postgres"), exists, [mirror]) == [(0,)]


def test_self_declared_high_rank_cannot_target_prods_database(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    """Even with prod unprotected, a target that ranks itself above prod is not prod."""
    make_policy("prod", pg_server.url(envs.src_name), file_repo, protected=False)
    make_policy("lab", pg_server.url(envs.src_name), file_repo, environment="lab", rank=9)
    make_policy("x", respell(pg_server, envs.src_name), file_repo, environment="x", rank=5)
    before = prod_fingerprint(envs)
    rules = rules_for(tmp_path, "lab", "x")
    result = sanitize(run_drkit, envs, "lab", "x", "--rules", str(rules), "--force")
    assert result.code == 4, result.stderr
    assert "same database" in result.stderr
    assert prod_fingerprint(envs) == before


def test_protected_environment_is_never_a_target(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    vault = f"vlt_{uuid.uuid4().hex[:8]}"
    make_policy(
        "vault", pg_server.url(vault), file_repo, environment="vault", rank=0, protected=True
    )
    rules = rules_for(tmp_path, "prod", "vault")
    for extra in ((), ("--force",), ("--dry-run",)):
        result = sanitize(run_drkit, envs, "prod", "vault", "--rules", str(rules), *extra)
        assert result.code == 4, result.stderr
        assert "protected" in result.stderr
    exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
    assert rows(envs.dsn("postgres"), exists, [vault]) == [(0,)]


def test_unreachable_protected_environment_fails_closed_until_dst_is_drkits_copy(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    staging = envs.dsn(envs.dsts["staging"])
    envs.pg.create_database(envs.dsts["staging"])  # DST exists, not drkit's copy
    make_policy(
        "archive",
        "postgresql://nobody:pw@127.0.0.1:1/archive",
        file_repo,
        environment="archive",
        rank=5,
    )
    refused = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert refused.code == 4, refused.stderr
    assert "cannot reach archive" in refused.stderr
    (envs.policy_dir / "archive.yaml").rename(tmp_path / "archive.yaml")
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    (tmp_path / "archive.yaml").rename(envs.policy_dir / "archive.yaml")
    again = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force")
    assert again.code == 0, again.stderr  # DST carries the stamp of drkit's published copy
    stamp = rows(
        staging,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = current_database()",
    )
    assert str(stamp[0][0]).startswith("drkit sanitized copy for staging ")
    resalted = run_drkit(
        "sanitize",
        "prod",
        "staging",
        "--rules",
        str(rules),
        "--force",
        policy_dir=envs.policy_dir,
        env={"DRKIT_SANITIZE_SALT": "another-salt-entirely-42"},
    )
    assert resalted.code == 4, resalted.stderr  # another salt's run cannot read the stamp
    assert "cannot reach archive" in resalted.stderr


@pytest.fixture
def vault(pg_server: PgServer) -> Iterator[str]:
    """A protected environment's database, on the test server, holding one row."""
    name = f"vlt_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, owner text)")
        conn.execute("INSERT INTO ledger VALUES (1, 'vault-owner@corp.example')")
    yield name
    pg_server.drop_database(name)


def vault_intact(pg: PgServer, name: str) -> bool:
    found = rows(pg.dsn("postgres"), "SELECT count(*) FROM pg_database WHERE datname = %s", [name])
    if found != [(1,)]:
        return False
    tables = rows(
        pg.dsn(name),
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
        "'public'::regnamespace ORDER BY 1",
    )
    return tables == [("ledger",)] and rows(pg.dsn(name), "SELECT * FROM ledger") == [
        (1, "vault-owner@corp.example")
    ]


def create_other_targets(e: Env, *names: str) -> None:
    """Databases for the fixture's other environments, so that only the environment a
    test is about is unreachable."""
    for name in names:
        e.pg.create_database(e.dsts[name])


def source_args(run_drkit: DrkitRunner, policy_dir: Path, source: str) -> tuple[str, ...]:
    """Nothing for the live source; for a backup, one is taken and named."""
    if source == "live":
        return ()
    assert run_drkit("backup", "prod", policy_dir=policy_dir).code == 0
    return ("--from-backup", "latest")


@pytest.mark.parametrize("source", ["live", "backup"])
def test_stamp_forged_through_url_options_is_no_stamp(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    vault: str,
    tmp_path: Path,
    source: str,
) -> None:
    """A protected environment that cannot be reached from here, and a DST url that
    reaches its database with ``options=-c drkit.sanitize_target=dev``: a setting a url
    can make is no proof that DST is drkit's copy."""
    make_policy(
        "vault",
        f"postgresql://nobody:pw@127.0.0.1:1/{vault}",
        file_repo,
        environment="vault",
        rank=0,
        protected=True,
    )
    create_other_targets(envs, "staging", "test")
    forged = respell(pg_server, vault) + "&options=" + quote("-c drkit.sanitize_target=dev")
    make_policy("dev", forged, file_repo)
    args = source_args(run_drkit, envs.policy_dir, source)
    rules = rules_for(tmp_path, "prod", "dev")
    result = sanitize(run_drkit, envs, "prod", "dev", "--rules", str(rules), "--force", *args)
    assert result.code == 4, result.stderr
    assert "cannot reach vault" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert vault_intact(pg_server, vault)
    assert leftovers(envs) == []


def write_services(path: Path, services: dict[str, dict[str, str]]) -> Path:
    path.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in params.items())
            for name, params in services.items()
        )
    )
    return path


@pytest.mark.parametrize("source", ["live", "backup"])
@pytest.mark.parametrize("which", ["dst", "prod"])
def test_service_url_resolving_to_prods_database_is_refused(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    tmp_path: Path,
    source: str,
    which: str,
) -> None:
    """``service=NAME`` whose pg_service.conf entry is prod's database: as DST's url, or
    as prod's own url while DST names the database directly."""
    params = psycopg.conninfo.conninfo_to_dict(pg_server.admin_dsn)
    entry = {
        "host": "localhost",
        "port": str(params.get("port", 5432)),
        "user": str(params.get("user", "postgres")),
        "dbname": envs.src_name,
        "application_name": "innocent",
    }
    if params.get("password"):
        entry["password"] = str(params["password"])
    services = write_services(tmp_path / "pg_service.conf", {"svc": entry})
    if which == "dst":
        make_policy("dev", "service=svc", file_repo)
    else:
        make_policy("prod", "service=svc", file_repo)
        make_policy("dev", respell(pg_server, envs.src_name), file_repo)
    env = {**ENV, "PGSERVICEFILE": str(services)}
    before = prod_fingerprint(envs)
    args: tuple[str, ...] = ()
    if source == "backup":
        backup = run_drkit("backup", "prod", policy_dir=envs.policy_dir, env=env)
        assert backup.code == 0, backup.stderr
        args = ("--from-backup", "latest")
    rules = rules_for(tmp_path, "prod", "dev")
    result = run_drkit(
        "sanitize",
        "prod",
        "dev",
        "--rules",
        str(rules),
        "--force",
        *args,
        policy_dir=envs.policy_dir,
        env=env,
    )
    assert result.code == 4, result.stderr
    assert "same database" in result.stderr
    assert prod_fingerprint(envs) == before
    assert leftovers(envs) == []


@pytest.mark.parametrize("source", ["live", "backup"])
def test_protected_url_finding_no_database_is_no_proof(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    vault: str,
    tmp_path: Path,
    source: str,
) -> None:
    """The protected environment's url reaches a server on which its database does not
    exist (from here it resolves elsewhere: another PGHOST, a stale service entry); DST
    is its real database.  "Not there" proves nothing about DST."""
    make_policy(
        "vault",
        pg_server.url(f"gone_{uuid.uuid4().hex[:8]}"),
        file_repo,
        environment="vault",
        rank=0,
        protected=True,
    )
    make_policy("dev", respell(pg_server, vault), file_repo)
    create_other_targets(envs, "staging", "test")
    args = source_args(run_drkit, envs.policy_dir, source)
    rules = rules_for(tmp_path, "prod", "dev")
    for extra in ((), ("--dry-run",)):
        result = sanitize(
            run_drkit, envs, "prod", "dev", "--rules", str(rules), "--force", *args, *extra
        )
        assert result.code == 4, result.stderr
        assert "vault" in result.stderr and "does not exist" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert vault_intact(pg_server, vault)
    assert leftovers(envs) == []


@pytest.mark.parametrize(
    "password",
    ["Zq7x%zzKw9v", "Zq7x%2Kw9v", "Zq7x/Kw9v", "Zq7x?Kw9v", "Zq7x#Kw9v", "Zq7x@Kw9v", "Zq7x Kw9v"],
    ids=["bad-escape", "short-escape", "slash", "question", "hash", "at", "space"],
)
@pytest.mark.parametrize("form", ["url", "keywords"])
def test_a_connection_string_is_masked_in_every_error_whatever_it_holds(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    tmp_path: Path,
    password: str,
    form: str,
) -> None:
    """DST's password written as it is (not escaped): libpq misreads the url or quotes
    the piece it cannot parse; neither piece of the password reaches any output."""
    params = psycopg.conninfo.conninfo_to_dict(pg_server.admin_dsn)
    port, db = params.get("port", 5432), envs.dsts["staging"]
    if form == "url":
        url = f"postgresql://postgres:{password}@127.0.0.1:{port}/{db}"
    else:
        url = f"host=127.0.0.1 port={port} user=postgres password={password} dbname={db}"
    make_policy("staging", url, file_repo)
    rules = rules_for(tmp_path, "prod", "staging")
    outputs = []
    for command in (
        ("sanitize", "prod", "staging", "--rules", str(rules)),
        ("--json", "sanitize", "prod", "staging", "--rules", str(rules)),
        ("sanitize", "check", "prod", "staging", "--rules", str(rules)),
        ("--json", "check", "staging"),
        ("policy", "check", "staging"),
    ):
        result = run_drkit(*command, policy_dir=envs.policy_dir, env=ENV)
        if command[0] != "policy":  # offline: a well-formed string passes
            assert result.code != 0, (command, result.stdout, result.stderr)
        outputs.append(result.stdout + result.stderr)
    for text in outputs:
        assert "Zq7x" not in text and "Kw9v" not in text, text


# ---------------------------------------------------------------------------
# 2. Build aside, publish atomically
# ---------------------------------------------------------------------------


def test_unique_index_the_pseudonyms_violate_leaves_dst_exactly_as_it_was(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    staging = envs.dsn(envs.dsts["staging"])
    before = table_dump(staging)
    oid = "SELECT oid FROM pg_database WHERE datname = %s"
    oid_before = rows(envs.dsn("postgres"), oid, [envs.dsts["staging"]])
    with psycopg.connect(envs.dsn(envs.src_name), autocommit=True) as conn:
        conn.execute("UPDATE \"user\" SET full_name = full_name || ' ' || id")
        conn.execute('CREATE UNIQUE INDEX user_fullname_lower ON "user" (lower(full_name))')
    doc = rules_doc()
    doc["tables"]["user"]["columns"]["full_name"] = {
        "strategy": "template",
        "template": "n{organization_id}",
    }
    bad = write_rules(tmp_path / "bad.yaml", doc)
    assert (
        run_drkit(
            "sanitize",
            "check",
            "prod",
            "staging",
            "--rules",
            str(bad),
            policy_dir=envs.policy_dir,
            env=ENV,
        ).code
        == 0
    )  # beyond what check reads
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(bad), "--force")
    assert result.code == 1, result.stderr
    assert "user_fullname_lower" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert table_dump(staging) == before
    assert rows(envs.dsn("postgres"), oid, [envs.dsts["staging"]]) == oid_before
    assert leftovers(envs) == []


@pytest.mark.parametrize(
    ("ddl", "column", "strategy", "expected"),
    [
        (
            'CREATE UNIQUE INDEX user_pw_lower ON "user" (lower(password_hash))',
            "password_hash",
            {"strategy": "constant", "value": "x"},
            "user_pw_lower",
        ),
        (
            'CREATE UNIQUE INDEX user_hash_active ON "user" (password_hash) WHERE NOT is_admin',
            "password_hash",
            {"strategy": "mask", "keep_start": 2},
            "user_hash_active",
        ),
        (
            'CREATE UNIQUE INDEX user_ip_nnd ON "user" (last_login_ip) NULLS NOT DISTINCT',
            "last_login_ip",
            {"strategy": "nullify"},
            "user_ip_nnd",
        ),
        (
            'ALTER TABLE "user" ADD CONSTRAINT user_email_customer '
            "CHECK (email LIKE '%@customer%')",
            "email",
            "email",
            "user_email_customer",
        ),
        (
            'ALTER TABLE "user" ADD COLUMN rank_no int',
            "rank_no",
            {"strategy": "template", "template": "r{id}"},
            "integer column",
        ),
        (
            'ALTER TABLE "user" ADD COLUMN lower_mail text GENERATED ALWAYS AS (lower(email)) STORED',
            "username",
            {"strategy": "template", "template": "u{id}{lower_mail}"},
            "generated column",
        ),
    ],
    ids=["expression-index", "partial-index", "nulls-not-distinct", "check", "int", "generated"],
)
def test_check_and_run_refuse_strategies_the_constraints_reject(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
    ddl: str,
    column: str,
    strategy: Any,
    expected: str,
) -> None:
    with psycopg.connect(envs.dsn(envs.src_name), autocommit=True) as conn:
        conn.execute(ddl)
    doc = rules_doc()
    doc["tables"]["user"]["columns"][column] = strategy
    if "GENERATED" in ddl:
        doc["tables"]["user"]["columns"]["lower_mail"] = "keep"
    bad = write_rules(tmp_path / "bad.yaml", doc)
    check = run_drkit(
        "sanitize",
        "check",
        "prod",
        "staging",
        "--rules",
        str(bad),
        policy_dir=envs.policy_dir,
        env=ENV,
    )
    assert check.code == 2, check.stderr
    assert expected in check.stderr
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(bad))
    assert result.code == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
    assert rows(envs.dsn("postgres"), exists, [envs.dsts["staging"]]) == [(0,)]
    assert leftovers(envs) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_drops_the_build_and_keeps_dst(
    envs: Env,
    run_drkit: DrkitRunner,
    tmp_path: Path,
    signum: int,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    staging = envs.dsn(envs.dsts["staging"])
    before = table_dump(staging)
    with psycopg.connect(envs.dsn(envs.src_name)) as blocker:
        # the run's pg_dump waits for this lock: the build exists, the copy has not finished
        blocker.execute("LOCK TABLE agent IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drkit",
                "--policy-dir",
                str(envs.policy_dir),
                "sanitize",
                "prod",
                "staging",
                "--rules",
                str(rules),
                "--force",
            ],
            env={**os.environ, **ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = %s"
            )
            deadline = time.monotonic() + 120
            while rows(envs.dsn("postgres"), waiting, [envs.src_name]) == [(0,)]:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the run never reached the locked table"
                time.sleep(0.2)
            assert len(leftovers(envs)) == 1
            proc.send_signal(signum)
            _out, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert leftovers(envs) == []
    assert table_dump(staging) == before


def test_sessions_on_dst_are_refused_unless_forced(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    envs.pg.create_database(envs.dsts["staging"])
    staging = envs.dsn(envs.dsts["staging"])
    with psycopg.connect(staging, autocommit=True) as app:
        refused = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
        assert refused.code == 4, refused.stderr
        assert "sessions are connected" in refused.stderr and "--force" in refused.stderr
        assert rows(staging, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
        forced = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force")
        assert forced.code == 0, forced.stderr
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")
    assert rows(staging, 'SELECT count(*) > 0 FROM "user"') == [(True,)]
    assert leftovers(envs) == []


def check_and_dry_run(run_drkit: DrkitRunner, e: Env, dst: str, rules: Path) -> tuple[Any, Any]:
    check = run_drkit(
        "sanitize", "check", "prod", dst, "--rules", str(rules), policy_dir=e.policy_dir, env=ENV
    )
    dry = sanitize(run_drkit, e, "prod", dst, "--rules", str(rules), "--dry-run")
    return check, dry


def test_least_privilege_role_owning_dst_with_createdb_runs_and_is_recognised(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """DST's owner with CREATEDB (all the README asks for), not a superuser: the check,
    the dry run and the run agree, and the copy it publishes is recognised as drkit's
    when a protected environment later cannot be reached."""
    user, pw = other_role
    db = envs.dsts["staging"]
    envs.pg.create_database(db)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(db), sql.Identifier(user)
            )
        )
    make_policy("staging", role_url(pg_server, user, pw, db), file_repo)
    rules = rules_for(tmp_path, "prod", "staging")
    check, dry = check_and_dry_run(run_drkit, envs, "staging", rules)
    assert check.code == 0, check.stderr
    assert dry.code == 0, dry.stderr
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert result.code == 0, result.stderr
    staging = envs.dsn(db)
    assert rows(staging, 'SELECT count(*) > 0 FROM "user"') == [(True,)]
    owner = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
    assert rows(envs.dsn("postgres"), owner, [db]) == [(user,)]
    make_policy(
        "archive",
        "postgresql://nobody:pw@127.0.0.1:1/archive",
        file_repo,
        environment="archive",
        rank=5,
        protected=True,
    )
    again = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force")
    assert again.code == 0, again.stderr
    assert leftovers(envs) == []


def test_check_and_dry_run_prove_the_privileges_of_the_run(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """What the run would refuse (exit 4), the check and the dry run refuse too: a DST
    the role does not own, then a role without CREATEDB."""
    user, pw = other_role
    db = envs.dsts["staging"]
    envs.pg.create_database(db)  # owned by the test's superuser, not by the role
    make_policy("staging", role_url(pg_server, user, pw, db), file_repo)
    rules = rules_for(tmp_path, "prod", "staging")
    for result in check_and_dry_run(run_drkit, envs, "staging", rules):
        assert result.code == 4, result.stderr
        assert "does not own database" in result.stderr, result.stderr
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(db), sql.Identifier(user)
            )
        )
        conn.execute(sql.SQL("ALTER ROLE {} NOCREATEDB").format(sql.Identifier(user)))
    for result in check_and_dry_run(run_drkit, envs, "staging", rules):
        assert result.code == 4, result.stderr
        assert f"ALTER ROLE {user} CREATEDB" in result.stderr
    assert rows(
        envs.dsn(db), "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    ) == [(0,)]
    assert leftovers(envs) == []


def test_role_without_createdb_is_refused_before_anything_is_written(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    pg_server: PgServer,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    user, pw = other_role
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOCREATEDB").format(sql.Identifier(user)))
    db = envs.dsts["staging"]
    params = psycopg.conninfo.conninfo_to_dict(pg_server.admin_dsn)
    url = f"postgresql://{user}:{pw}@127.0.0.1:{params.get('port', 5432)}/{db}"
    make_policy("staging", url, file_repo)
    rules = rules_for(tmp_path, "prod", "staging")
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert result.code == 4, result.stderr
    assert f"ALTER ROLE {user} CREATEDB" in result.stderr
    assert leftovers(envs) == []


def test_keep_old_keeps_the_replaced_database(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    with psycopg.connect(envs.dsn(envs.dsts["staging"]), autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (x int)")
    result = sanitize(
        run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force", "--keep-old"
    )
    assert result.code == 0, result.stderr
    staging = envs.dsn(envs.dsts["staging"])
    assert rows(staging, "SELECT to_regclass('marker') IS NULL") == [(True,)]
    kept = leftovers(envs)
    assert len(kept) == 1 and "__drkit_old_" in kept[0]
    assert rows(envs.dsn(kept[0]), "SELECT count(*) FROM marker") == [(0,)]
    envs.pg.drop_database(kept[0])


# ---------------------------------------------------------------------------
# A small hand-made source for the cases the sample cannot express
# ---------------------------------------------------------------------------

MINI = """
CREATE TABLE person (id int PRIMARY KEY, email text NOT NULL, note text);
INSERT INTO person SELECT i, 'p' || i || '@corp.example', 'n' || i FROM generate_series(1, 10) i;
CREATE TABLE memo (id int PRIMARY KEY, body text);
INSERT INTO memo VALUES (1, 'please call p9@corp.example about the invoice');
"""


class Mini:
    def __init__(self, pg: PgServer, policy_dir: Path, src: str, dst: str) -> None:
        self.pg, self.policy_dir, self.src, self.dst = pg, policy_dir, src, dst

    def run(self, run_drkit: DrkitRunner, rules: Path, *args: str) -> Any:
        return run_drkit(
            "sanitize",
            "prod",
            "staging",
            "--rules",
            str(rules),
            *args,
            policy_dir=self.policy_dir,
            env=ENV,
        )

    def dst_exists(self) -> bool:
        found = rows(
            self.pg.dsn(), "SELECT count(*) FROM pg_database WHERE datname = %s", [self.dst]
        )
        return found == [(1,)]


@pytest.fixture
def mini(
    pg_server: PgServer,
    database: tuple[str, str],
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
) -> Iterator[Mini]:
    src, url = database
    with psycopg.connect(pg_server.dsn(src), autocommit=True) as conn:
        conn.execute(MINI)
    dst = f"stg_{uuid.uuid4().hex[:8]}"
    make_policy("prod", url, file_repo)
    policy_dir = make_policy("staging", pg_server.url(dst), file_repo)
    yield Mini(pg_server, policy_dir, src, dst)
    pg_server.drop_database(dst)


def mini_rules(tmp_path: Path, person: dict[str, Any], **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "version": 1,
        "from": "prod",
        "to": "staging",
        "salt": "${DRKIT_SANITIZE_SALT}",
        "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail"},
        "tables": {
            "person": {"columns": {"id": "keep", "email": "email", "note": "keep"}, **person},
            "memo": {"copy": True},
        },
        **extra,
    }
    return write_rules(tmp_path / "mini.yaml", doc)


@pytest.mark.parametrize(
    "person",
    [{"where": "id <= 5"}, {"rows": "none"}],
    ids=["where", "rows-none"],
)
def test_kept_text_quoting_a_person_whose_row_was_not_copied_is_a_leak(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path, person: dict[str, Any]
) -> None:
    rules = mini_rules(tmp_path, person)
    result = mini.run(run_drkit, rules)
    assert result.code == 3, result.stderr
    assert "public.memo" in result.stderr
    assert "p9@corp.example" not in (result.stderr + result.stdout).lower()
    assert not mini.dst_exists()  # the copy with the leak was never published
    assert leftovers_on(mini.pg) == []


def test_subset_left_out_rows_are_searched_too(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path
) -> None:
    rules = mini_rules(tmp_path, {}, subset={"start": {"table": "person", "where": "id <= 5"}})
    result = mini.run(run_drkit, rules)
    assert result.code == 3, result.stderr
    assert not mini.dst_exists()


def test_a_volatile_filter_hides_no_row_from_the_originals(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path
) -> None:
    """``where: random() < 0.5`` draws other rows at each read of the same snapshot: a
    row neither copied nor read as "left out" would have unknown originals.  Every row
    of a masked table is read for its originals, whatever a filter draws, so each of the
    60 memos quoting a person is a hit."""
    with psycopg.connect(mini.pg.dsn(mini.src), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO person SELECT i, 'p' || i || '@corp.example', 'n' || i "
            "FROM generate_series(11, 60) i"
        )
        conn.execute(
            "INSERT INTO memo SELECT i, 'please call p' || i || '@corp.example' "
            "FROM generate_series(2, 60) i"
        )
    result = mini.run(run_drkit, mini_rules(tmp_path, {"where": "random() < 0.5"}))
    assert result.code == 3, result.stderr
    found = re.search(r"masked columns found in public\.memo\.body: (\d+)", result.stderr)
    assert found is not None and found.group(1) == "60", result.stderr
    assert not mini.dst_exists()


def test_row_level_security_hiding_source_rows_is_refused(
    run_drkit: DrkitRunner,
    mini: Mini,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    user, pw = other_role
    src = mini.pg.dsn(mini.src)
    with psycopg.connect(src, autocommit=True) as conn:
        for table in ("person", "memo"):
            conn.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                    sql.Identifier(table), sql.Identifier(user)
                )
            )
        conn.execute("ALTER TABLE person ENABLE ROW LEVEL SECURITY")
        conn.execute("ALTER TABLE person FORCE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY evens ON person USING (id % 2 = 0)")
    try:
        params = psycopg.conninfo.conninfo_to_dict(mini.pg.admin_dsn)
        make_policy(
            "prod",
            f"postgresql://{user}:{pw}@127.0.0.1:{params.get('port', 5432)}/{mini.src}",
            file_repo,
        )
        rules = mini_rules(tmp_path, {})
        refused = mini.run(run_drkit, rules)
        assert refused.code == 4, refused.stderr
        assert "public.person" in refused.stderr and "BYPASSRLS" in refused.stderr
        assert not mini.dst_exists()
        with psycopg.connect(mini.pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(user)))
        memo_doc = yaml.safe_load(rules.read_text())
        memo_doc["tables"]["memo"] = {"columns": {"id": "keep", "body": "replace_pii"}}
        rules.write_text(yaml.safe_dump(memo_doc))
        copied = mini.run(run_drkit, rules)
        assert copied.code == 0, copied.stderr
        assert rows(mini.pg.dsn(mini.dst), "SELECT count(*) FROM person") == [(10,)]
    finally:
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute(
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(user))
            )


def leftovers_on(pg: PgServer) -> list[str]:
    found = rows(
        pg.dsn("postgres"), "SELECT datname FROM pg_database WHERE datname LIKE '%\\_\\_drkit\\_%'"
    )
    return [str(r[0]) for r in found]


@pytest.mark.parametrize("source", ["live", "backup"])
def test_user_mapping_passwords_never_reach_the_target(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path, source: str
) -> None:
    secret = "Fdw-Pa55-" + uuid.uuid4().hex[:10]
    with psycopg.connect(mini.pg.dsn(mini.src), autocommit=True) as conn:
        conn.execute("CREATE FOREIGN DATA WRAPPER drkit_dummy_fdw")
        conn.execute("CREATE SERVER remote_srv FOREIGN DATA WRAPPER drkit_dummy_fdw")
        conn.execute(
            sql.SQL(
                "CREATE USER MAPPING FOR PUBLIC SERVER remote_srv OPTIONS (user 'app', password {})"
            ).format(sql.Literal(secret))
        )
    rules = mini_rules(tmp_path, {})
    doc = yaml.safe_load(rules.read_text())
    doc["tables"]["memo"] = {"columns": {"id": "keep", "body": "replace_pii"}}
    rules.write_text(yaml.safe_dump(doc))
    args: tuple[str, ...] = ()
    if source == "backup":
        assert run_drkit("backup", "prod", policy_dir=mini.policy_dir).code == 0
        args = ("--from-backup", "latest")
    result = mini.run(run_drkit, rules, *args)
    assert result.code == 0, result.stderr
    dst = mini.pg.dsn(mini.dst)
    assert rows(dst, "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'remote_srv'") == [
        (1,)
    ]
    assert rows(dst, "SELECT count(*) FROM pg_user_mapping") == [(0,)]
    assert rows(dst, "SELECT count(*) FROM person") == [(10,)]


SHAPES = """
CREATE DOMAIN email_d AS text CHECK (VALUE LIKE '%@%');
CREATE TABLE contact (id int PRIMARY KEY, email email_d NOT NULL);
INSERT INTO contact SELECT i, 'c' || i || '@corp.example' FROM generate_series(1, 5) i;
CREATE TABLE base (id int, email text);
CREATE TABLE child (extra text) INHERITS (base);
INSERT INTO base VALUES (1, 'b1@corp.example');
INSERT INTO child VALUES (2, 'b2@corp.example', 'x');
CREATE TABLE part (id int, email text) PARTITION BY RANGE (id);
CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (100);
INSERT INTO part VALUES (5, 'p5@corp.example');
SELECT lo_from_bytea(0, convert_to('lo mentions c1@corp.example', 'UTF8'));
"""


def test_live_and_backup_read_the_same_schema_and_accept_the_same_rules(
    run_drkit: DrkitRunner,
    mini: Mini,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    tmp_path: Path,
) -> None:
    with psycopg.connect(mini.pg.dsn(mini.src), autocommit=True) as conn:
        conn.execute(SHAPES)
    dev = f"dev_{uuid.uuid4().hex[:8]}"
    make_policy("dev", mini.pg.url(dev), file_repo)
    tables = {
        "person": {"columns": {"id": "keep", "email": "email", "note": "keep"}},
        "memo": {"columns": {"id": "keep", "body": "replace_pii"}},
        "contact": {"columns": {"id": "keep", "email": "email"}},
        "base": {"columns": {"id": "keep", "email": "email"}},
        "child": {"columns": {"id": "keep", "email": "email", "extra": "keep"}},
        "part_1": {"columns": {"id": "keep", "email": "email"}},
    }
    doc: dict[str, Any] = {
        "version": 1,
        "from": "prod",
        "to": "staging",
        "salt": "${DRKIT_SANITIZE_SALT}",
        "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail"},
        "tables": tables,
    }
    staging_rules = write_rules(tmp_path / "s.yaml", doc)
    dev_rules = write_rules(tmp_path / "d.yaml", {**doc, "to": "dev"})
    try:
        assert run_drkit("backup", "prod", policy_dir=mini.policy_dir).code == 0
        live = mini.run(run_drkit, staging_rules)
        assert live.code == 0, live.stderr
        for _ in range(2):  # the second run replaces the first (large objects and all)
            backup = run_drkit(
                "sanitize",
                "prod",
                "dev",
                "--rules",
                str(dev_rules),
                "--from-backup",
                "latest",
                "--force",
                policy_dir=mini.policy_dir,
                env=ENV,
            )
            assert backup.code == 0, backup.stderr
        staging, dev_dsn = mini.pg.dsn(mini.dst), mini.pg.dsn(dev)
        assert table_dump(staging) == table_dump(dev_dsn)
        for dsn in (staging, dev_dsn):
            assert rows(dsn, "SELECT id, extra FROM child") == [(2, "x")]
            assert rows(dsn, "SELECT count(*) FROM ONLY base") == [(1,)]
            assert rows(dsn, "SELECT count(*) FROM part") == [(1,)]
            assert rows(dsn, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
            assert "corp.example" not in str(table_dump(dsn))
    finally:
        mini.pg.drop_database(dev)


def test_publish_keeps_dsts_database_privileges(
    run_drkit: DrkitRunner,
    mini: Mini,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """An app role allowed to CONNECT (PUBLIC not) can still connect after the swap."""
    user, _pw = other_role
    mini.pg.create_database(mini.dst)
    with psycopg.connect(mini.pg.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(mini.dst))
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(mini.dst), sql.Identifier(user)
            )
        )
    rules = mini_rules(tmp_path, {})
    doc = yaml.safe_load(rules.read_text())
    doc["tables"]["memo"] = {"columns": {"id": "keep", "body": "replace_pii"}}
    rules.write_text(yaml.safe_dump(doc))
    assert mini.run(run_drkit, rules).code == 0
    acl = "SELECT has_database_privilege(%s, current_database(), 'CONNECT')"
    assert rows(mini.pg.dsn(mini.dst), acl, [user]) == [(True,)]
    assert rows(mini.pg.dsn(mini.dst), acl, ["public"]) == [(False,)]


def test_from_backup_rows_none_originals_are_searched_too(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path
) -> None:
    assert run_drkit("backup", "prod", policy_dir=mini.policy_dir).code == 0
    rules = mini_rules(tmp_path, {"rows": "none"})
    result = mini.run(run_drkit, rules, "--from-backup", "latest")
    assert result.code == 3, result.stderr
    assert "public.memo" in result.stderr
    assert not mini.dst_exists()
    assert leftovers_on(mini.pg) == []


def test_interrupt_during_the_parallel_copy_drops_the_build_and_keeps_dst(
    envs: Env,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    staging = envs.dsn(envs.dsts["staging"])
    before = table_dump(staging)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drkit",
            "--policy-dir",
            str(envs.policy_dir),
            "sanitize",
            "prod",
            "staging",
            "--rules",
            str(rules),
            "--force",
            "--jobs",
            "2",
        ],
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    blocker: psycopg.Connection[Any] | None = None
    try:
        deadline = time.monotonic() + 120
        while blocker is None:  # the build's agent table, committed by the pre-data restore
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the build never got its tables"
            builds = [b for b in leftovers(envs) if "__drkit_old_" not in b]
            if builds:
                try:
                    conn = psycopg.connect(envs.dsn(builds[0]))
                    conn.execute("LOCK TABLE agent IN ACCESS EXCLUSIVE MODE NOWAIT")
                    blocker = conn
                except psycopg.Error:
                    pass
            time.sleep(0.1)
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while rows(envs.dsn("postgres"), waiting) == [(0,)]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the copy never reached the locked table"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _out, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if blocker is not None:
            blocker.close()
    assert proc.returncode == 130, stderr
    assert leftovers(envs) == []
    assert table_dump(staging) == before


TWINS = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TABLE login (id int PRIMARY KEY, email text UNIQUE NOT NULL);
INSERT INTO login VALUES
  (1, 'Cy.Ng@corp.example'), (2, 'cy.ng@corp.example'), (3, 'dee@corp.example');
CREATE TABLE session (id int PRIMARY KEY, email text NOT NULL REFERENCES login (email));
INSERT INTO session VALUES
  (20, 'cy.ng@corp.example'), (21, 'Cy.Ng@corp.example'), (22, 'dee@corp.example');
CREATE TABLE account (id int PRIMARY KEY, email citext UNIQUE NOT NULL);
INSERT INTO account VALUES (1, 'Ann.Lee@corp.example'), (2, 'bob@corp.example');
CREATE TABLE ticket (id int PRIMARY KEY, email citext NOT NULL REFERENCES account (email));
INSERT INTO ticket VALUES
  (10, 'ann.lee@CORP.example'), (11, 'BOB@corp.example'), (12, 'Ann.Lee@corp.example');
"""
TWIN_JOINS = (
    "SELECT s.id, l.id FROM session s JOIN login l ON l.email = s.email ORDER BY 1",
    "SELECT t.id, a.id FROM ticket t JOIN account a ON a.email = t.email ORDER BY 1",
)


@pytest.mark.parametrize("source", ["live", "backup"])
def test_foreign_keys_through_case_twins_keep_pointing_at_the_same_row(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path, source: str
) -> None:
    """Two users whose addresses differ only in case (a case-sensitive key) and a citext
    key referenced in another case: each child row still points at its own parent."""
    src = mini.pg.dsn(mini.src)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(TWINS)
    before = [rows(src, join) for join in TWIN_JOINS]
    rules = mini_rules(tmp_path, {})
    doc = yaml.safe_load(rules.read_text())
    doc["tables"]["memo"] = {"columns": {"id": "keep", "body": "replace_pii"}}
    doc["tables"]["login"] = {
        "columns": {"id": "keep", "email": {"strategy": "template", "template": "l{id}@x.example"}}
    }
    doc["tables"]["session"] = {"columns": {"id": "keep", "email": "email"}}
    doc["tables"]["account"] = {
        "columns": {"id": "keep", "email": {"strategy": "template", "template": "a{id}@x.example"}}
    }
    doc["tables"]["ticket"] = {"columns": {"id": "keep", "email": "email"}}
    rules.write_text(yaml.safe_dump(doc))
    args: tuple[str, ...] = ()
    if source == "backup":
        assert run_drkit("backup", "prod", policy_dir=mini.policy_dir).code == 0
        args = ("--from-backup", "latest")
    result = mini.run(run_drkit, rules, *args)
    assert result.code == 0, result.stderr
    dst = mini.pg.dsn(mini.dst)
    assert [rows(dst, join) for join in TWIN_JOINS] == before
    assert "corp.example" not in str(table_dump(dst))


OWN_PSEUDONYMS = """
CREATE TABLE login (id int PRIMARY KEY, email text UNIQUE NOT NULL);
INSERT INTO login VALUES (5, 'l5@x.example'), (6, 'ann@corp.example');
INSERT INTO person VALUES (11, 'l5@x.example', 'n11');
UPDATE memo SET body = 'write to l5@x.example, ann@corp.example and p9@corp.example';
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_addresses_that_are_their_own_pseudonyms_wait_for_the_whole_email_map(
    run_drkit: DrkitRunner, mini: Mini, tmp_path: Path, jobs: str
) -> None:
    """The originals pass fills the e-mail map while it reads: a table whose strategies
    read the map (``email``, ``replace_pii``) is read only once every template row is
    registered.  Read earlier, ``l5@x.example`` (the template's own output for row 5)
    would count as an original, and the copy holding it would fail its leak scan."""
    src = mini.pg.dsn(mini.src)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(OWN_PSEUDONYMS)
    rules = mini_rules(tmp_path, {})
    doc = yaml.safe_load(rules.read_text())
    doc["tables"]["memo"] = {"columns": {"id": "keep", "body": "replace_pii"}}
    doc["tables"]["login"] = {
        "columns": {"id": "keep", "email": {"strategy": "template", "template": "l{id}@x.example"}}
    }
    rules.write_text(yaml.safe_dump(doc))
    result = mini.run(run_drkit, rules, "--jobs", jobs)
    assert result.code == 0, result.stderr
    dst = mini.pg.dsn(mini.dst)
    assert rows(dst, "SELECT email FROM person WHERE id = 11") == [("l5@x.example",)]
    (body,) = rows(dst, "SELECT body FROM memo")[0]
    nine = rows(dst, "SELECT email FROM person WHERE id = 9")[0][0]
    assert body == f"write to l5@x.example, l6@x.example and {nine}"
