"""The paths an operator runs as the policy's own least-privilege role, not a superuser.

The role here is what ``docs/roles.md`` asks for: a login that owns the application's
database, with EXECUTE on ``pg_create_restore_point`` and ``pg_switch_wal`` (what
``check`` asks of backups) and nothing more: no SUPERUSER, no CREATEDB.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import yaml
from psycopg import sql

from tests import builders
from tests.fix_cli import DrkitRunner, PolicyWriter, Result, checks_by_name, drill
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.wal_support import Archived, archived_cluster, file_repo_block, shared_dir

OBJECTIVES = {"rpo": "1h", "rto": "30m"}


@dataclass
class AppRole:
    name: str
    password: str
    database: str
    url: str


def _admin(pg_server: PgServer, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(pg_server.dsn(dbname), autocommit=True)


@pytest.fixture
def app_role(pg_server: PgServer) -> Iterator[AppRole]:
    """A least-privilege role owning a database with two tables of rows."""
    suffix = uuid.uuid4().hex[:8]
    name, password, database = f"app_{suffix}", "pw-" + uuid.uuid4().hex[:12], f"lp_{suffix}"
    role = sql.Identifier(name)
    with _admin(pg_server) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password))
        )
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), role))
    with _admin(pg_server, database) as conn:
        for function in ("pg_create_restore_point(text)", "pg_switch_wal()"):
            conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function), role)
            )
    base = pg_server.url(database)
    host = base.split("@", 1)[1]
    url = f"postgresql://{quote(name)}:{quote(password)}@{host}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE item (id int PRIMARY KEY, label text)")
        conn.execute("INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, 50) g")
        conn.execute("CREATE TABLE note (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO note (body) SELECT 'note ' || g FROM generate_series(1, 7) g")
    yield AppRole(name, password, database, url)
    with _admin(pg_server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        for (db,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datdba = "
            "(SELECT oid FROM pg_roles WHERE rolname = %s)",
            [name],
        ).fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        conn.execute(sql.SQL("DROP ROLE {}").format(role))


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_logical_restore_as_the_app_role_into_a_new_database(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    pg_server: PgServer,
    jobs: str,
) -> None:
    """The dump carries the grants on pg_create_restore_point / pg_switch_wal (system
    functions only a superuser may grant on); the app role restores everything else."""
    policy_dir = make_policy("prod", app_role.url, file_repo)
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    # after a disaster: the DBA re-creates the database, owned by the app role, which
    # has no grant on the system functions there yet (they are per database)
    fresh = f"{app_role.database}_new"
    with _admin(pg_server) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(fresh), sql.Identifier(app_role.name)
            )
        )
    target = app_role.url.rsplit("/", 1)[0] + "/" + fresh
    restored = run_cli(
        "restore", "prod", "latest", "--target-db", target, "--jobs", jobs, policy_dir=policy_dir
    )
    assert restored.code == 0, restored.stderr
    assert _count(target, "item") == 50
    assert _count(target, "note") == 7


@pytest.fixture
def foreign_owner(pg_server: PgServer, app_role: AppRole) -> Iterator[str]:
    """A table in the app's database owned by another role the app role is no member
    of (it may read it, so backups work): a restore as the app role cannot recreate it."""
    name = f"own_{uuid.uuid4().hex[:8]}"
    with _admin(pg_server) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    with _admin(pg_server, app_role.database) as conn:
        conn.execute("CREATE TABLE audit (id int PRIMARY KEY)")
        conn.execute("INSERT INTO audit VALUES (1), (2)")
        conn.execute(sql.SQL("ALTER TABLE audit OWNER TO {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT SELECT ON audit TO {}").format(sql.Identifier(app_role.name)))
    yield name
    with _admin(pg_server, app_role.database) as conn:
        conn.execute("DROP TABLE IF EXISTS audit")
    with _admin(pg_server) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_drill_restores_as_the_app_role(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    scratch_root: Path,
) -> None:
    policy_dir = make_policy(
        "prod",
        app_role.url,
        file_repo,
        objectives=OBJECTIVES,
        drill={"checks": {"amcheck": False}},
    )
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    done = drill(run_cli, policy_dir, scratch_root, "--json")
    assert done.code == 0, done.stderr
    doc = done.json()
    assert doc["verdict"] == "PASS"
    restored = checks_by_name(doc)[f"restore {app_role.database}"]
    assert restored["observed"].endswith(f"as role {app_role.name}")
    assert checks_by_name(doc)[f"rows {app_role.database}:public.item"]["observed"] == 50


def test_drill_fails_where_the_app_role_restore_fails(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    foreign_owner: str,
    pg_server: PgServer,
    scratch_root: Path,
) -> None:
    """The operator's restore as the app role fails (it cannot give a table to a role it
    is no member of); the drill, rehearsing that restore, must fail too, not PASS as a
    superuser restoring without owners would."""
    policy_dir = make_policy(
        "prod",
        app_role.url,
        file_repo,
        objectives=OBJECTIVES,
        drill={"checks": {"amcheck": False}},
    )
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    fresh = f"{app_role.database}_new"
    with _admin(pg_server) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(fresh), sql.Identifier(app_role.name)
            )
        )
    target = app_role.url.rsplit("/", 1)[0] + "/" + fresh
    real = run_cli("restore", "prod", "latest", "--target-db", target, policy_dir=policy_dir)
    assert real.code == 1 and foreign_owner in real.stderr, real.stderr
    done = drill(run_cli, policy_dir, scratch_root, "--json")
    assert done.code == 3, done.stderr
    restored = checks_by_name(done.json())[f"restore {app_role.database}"]
    assert restored["status"] == "FAIL"
    assert foreign_owner in restored["detail"]


@pytest.fixture
def archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


@pytest.mark.slow
def test_physical_drill_as_a_replication_role(
    archived: Archived,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    """The documented backup role for base backups: LOGIN REPLICATION, owning its
    database, EXECUTE on the two WAL functions; no superuser.  The drill connects to the
    recovered server, counts rows and runs amcheck all the same; a collation version
    the recovered server's libc does not give is a WARN in the report."""
    arch = archived
    role, password = "app_phys", "pw-" + uuid.uuid4().hex[:12]
    arch.execute(f"CREATE ROLE {role} LOGIN REPLICATION PASSWORD '{password}'")
    arch.execute(f"CREATE DATABASE shop OWNER {role}")
    arch.execute(
        f"GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO {role}",
        arch.dsn("shop"),
    )
    url = f"postgresql://{role}:{password}@127.0.0.1:{arch.cluster.port}/shop"
    arch.execute("CREATE TABLE item (id int PRIMARY KEY)", url)
    arch.execute("INSERT INTO item SELECT generate_series(1, 20)", url)
    policy_dir = arch.write_policy(url)
    doc = yaml.safe_load((policy_dir / "prod.yaml").read_text())
    doc["objectives"] = OBJECTIVES
    doc["drill"] = {
        "checks": {
            "amcheck": True,
            "sql": [{"name": "items", "query": "SELECT count(*) = 20 FROM item"}],
        }
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    # as if shop had been created by another libc (a musl image's base backup drilled on
    # glibc): the recovered server's libraries give another collation version
    arch.execute("UPDATE pg_database SET datcollversion = '2.17' WHERE datname = 'shop'")
    backup = run_cli("backup", "prod", "--physical", policy_dir=policy_dir)
    assert backup.code == 0, backup.stderr
    done = drill(run_cli, policy_dir, scratch_root, "--json")
    assert done.code == 0, done.stderr + done.stdout
    checks = checks_by_name(done.json())
    assert checks["connect shop"]["status"] == "PASS"
    assert checks["rows shop:public.item"]["observed"] == 20  # at the backup's restore point
    assert checks["sql: items"]["status"] == "PASS"
    assert checks["amcheck shop"]["status"] == "PASS"
    collation = checks["collation shop"]
    assert collation["status"] == "WARN" and collation["expected"] == "2.17"
    assert "REINDEX" in collation["detail"]
    assert done.json()["verdict"] == "PASS"


@pytest.mark.slow
def test_table_restore_from_a_physical_backup_as_the_app_role(
    archived: Archived, run_cli: DrkitRunner, scratch_root: Path
) -> None:
    """``restore --immediate --table item --as item_before --target-db`` with the
    application's own role: no SUPERUSER, no CREATEDB, no REPLICATION; it owns the
    database and its tables.  The base backup is taken by another policy (the backup
    role's); the scratch cluster runs as the server's OS user and needs no privilege on
    the live server.  The copy lands next to the live table, owned by the app role, with
    the rows of the backup; the live table keeps its oid and its rows."""
    arch = archived
    role, password = "app_tables", "pw-" + uuid.uuid4().hex[:12]
    arch.execute(
        f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOREPLICATION PASSWORD '{password}'"
    )
    arch.execute(f"CREATE DATABASE shop OWNER {role}")
    url = f"postgresql://{role}:{password}@127.0.0.1:{arch.cluster.port}/shop"
    arch.execute("CREATE TABLE item (id serial PRIMARY KEY, label text NOT NULL UNIQUE)", url)
    arch.execute("INSERT INTO item (label) SELECT 'item ' || g FROM generate_series(1, 20) g", url)
    backup = run_cli("backup", "prod", "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    arch.execute("DELETE FROM item WHERE id > 5", url)
    live_oid = arch.execute("SELECT 'item'::regclass::oid", url)[0][0]

    app_policy = arch.write_policy(url, arch.root / "policies-app")

    def restore_table(table: str, as_name: str, policy_dir: Path) -> Result:
        return run_cli(
            "restore", "prod", "--immediate", "--table", table, "--as", as_name,
            "--target-db", url, policy_dir=policy_dir, env={"DRKIT_TMPDIR": str(scratch_root)},
        )  # fmt: skip

    restored = restore_table("item", "item_before", app_policy)
    assert restored.code == 0, restored.stderr
    assert _count(url, "item_before") == 20
    owners = arch.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1",
        url,
    )
    assert {str(owner) for _, owner in owners} == {role}, owners
    assert {str(name) for name, _ in owners} >= {"item_before", "item_before_id_seq"}
    assert arch.execute("SELECT 'item'::regclass::oid", url)[0][0] == live_oid
    assert _count(url, "item") == 5
    assert list(scratch_root.iterdir()) == []

    # a role that owns its tables but not the database (CREATE on its schema only) needs
    # no more: the schema exists, so nothing asks for CREATE on the database
    arch.execute("ALTER DATABASE shop OWNER TO postgres")
    arch.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}", arch.dsn("shop"))
    again = restore_table("item", "item_again", app_policy)
    assert again.code == 0, again.stderr
    assert _count(url, "item_again") == 20
    assert _count(url, "item") == 5

    # what it cannot do without is named in one line before any recovery: this policy
    # reads an empty repository, so a recovery started first would fail on that instead
    (arch.root / "empty").mkdir()
    unread = builders.write_policy(
        arch.root / "policies-empty", "prod", url, {"url": f"file://{arch.root / 'empty'}"}
    )
    arch.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}", arch.dsn("shop"))
    for wanted, missing in (
        ("item_denied", "has no CREATE on schema public"),
        ("fresh.item_denied", "cannot create the missing schema fresh (no CREATE on the data"),
    ):
        denied = restore_table("public.item", wanted, unread)
        assert denied.code == 1, denied.stderr
        (line,) = denied.stderr.strip().splitlines()
        assert f"role {role} {missing}" in line, line
    assert arch.execute("SELECT to_regclass('item_denied'), to_regnamespace('fresh')", url) == [
        (None, None)
    ]


def _check(run_cli: DrkitRunner, policy_dir: Path) -> tuple[int, dict[str, dict[str, str]]]:
    result = run_cli("--json", "check", "prod", policy_dir=policy_dir)
    return result.code, {c["name"]: c for c in result.json()["checks"]}


def test_check_proves_the_app_role_can_restore(
    run_cli: DrkitRunner, make_policy: PolicyWriter, file_repo: RepoTarget, app_role: AppRole
) -> None:
    policy_dir = make_policy("prod", app_role.url, file_repo)
    code, checks = _check(run_cli, policy_dir)
    assert code == 0, checks
    restore = checks[f"privileges restore {app_role.database}"]
    assert restore["status"] == "PASS", restore
    assert "no CREATEDB" in restore["detail"]


def test_check_names_what_the_app_role_could_not_restore(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    foreign_owner: str,
) -> None:
    """Backups work (the role reads the table); a restore over the database would not
    (it cannot drop a table it does not own): check must say so, not exit 0."""
    policy_dir = make_policy("prod", app_role.url, file_repo)
    code, checks = _check(run_cli, policy_dir)
    assert code == 3
    restore = checks[f"privileges restore {app_role.database}"]
    assert restore["status"] == "FAIL"
    assert "public.audit" in restore["detail"] and foreign_owner in restore["detail"]
    assert checks[f"privileges {app_role.database}"]["status"] == "PASS"


def test_check_warns_on_a_collation_version_change(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    pg_server: PgServer,
) -> None:
    """A database whose recorded collation version is not the libc's now (a physical
    copy from another libc, an OS upgrade): text indexes may be out of order."""
    policy_dir = make_policy("prod", app_role.url, file_repo)
    _, checks = _check(run_cli, policy_dir)
    assert checks[f"collation {app_role.database}"]["status"] == "PASS"
    with _admin(pg_server) as conn:
        conn.execute(
            "UPDATE pg_database SET datcollversion = '2.17' WHERE datname = %s",
            [app_role.database],
        )
    code, checks = _check(run_cli, policy_dir)
    collation = checks[f"collation {app_role.database}"]
    assert code == 0 and collation["status"] == "WARN"
    assert "2.17" in collation["detail"] and "REINDEX" in collation["detail"]


def test_drill_as_a_superuser_restores_objects_of_other_roles(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    foreign_owner: str,
    pg_server: PgServer,
    scratch_root: Path,
) -> None:
    """A superuser's restore gives each object its owner: the drill re-creates the
    cluster's roles in the scratch cluster, so owners restore there as they would live."""
    policy_dir = make_policy(
        "prod",
        pg_server.url(app_role.database),
        file_repo,
        objectives=OBJECTIVES,
        drill={"checks": {"amcheck": False}},
    )
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    done = drill(run_cli, policy_dir, scratch_root, "--json")
    assert done.code == 0, done.stderr
    checks = checks_by_name(done.json())
    assert checks[f"rows {app_role.database}:public.audit"]["observed"] == 2


def test_drill_without_the_live_server_restores_as_the_documented_role(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    app_role: AppRole,
    scratch_root: Path,
) -> None:
    """The day production is gone: the drill still restores as the policy's role, taken
    to be the documented least-privilege one, and says so."""
    from drkit.pg import free_port

    def policy(url: str) -> Path:
        return make_policy(
            "prod", url, file_repo, objectives=OBJECTIVES, drill={"checks": {"amcheck": False}}
        )

    run_cli("backup", "prod", policy_dir=policy(app_role.url), check=True)
    port = app_role.url.rsplit(":", 1)[1].split("/", 1)[0]
    policy_dir = policy(app_role.url.replace(f":{port}/", f":{free_port()}/"))
    done = drill(run_cli, policy_dir, scratch_root, "--json")
    doc = done.json()
    assert doc["verdict"] == "PASS", done.stderr
    assert checks_by_name(doc)[f"restore {app_role.database}"]["observed"].endswith(
        f"as role {app_role.name}"
    )
    assert any("did not answer" in note for note in doc["notes"])
