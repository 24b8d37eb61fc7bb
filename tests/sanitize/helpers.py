"""What the sanitize tests share: the test rules, the prod/staging/dev environments over
the SentriKat sample (the ``envs`` fixture: import it into a test module to use it),
the CLI call, and readers of what a target database holds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.fix_cli import REPO_ROOT, DrkitRunner, Env
from tests.fix_pg import PgServer

SALT = "salt-for-the-sanitize-tests-7f3a"
ENV = {"DRKIT_SANITIZE_SALT": SALT}
SHIPPED = REPO_ROOT / "sanitize_rules"


def rules_doc(**overrides: Any) -> dict[str, Any]:
    """The test rules: every strategy family, with alert_log and sync_log kept and cleaned."""
    doc: dict[str, Any] = {
        "version": 1,
        "from": "prod",
        "to": "staging",
        "salt": "${DRKIT_SANITIZE_SALT}",
        "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail"},
        "tables": {
            "organization": {
                "columns": {
                    "id": "keep",
                    "name": "keep",
                    "smtp_host": "keep",
                    "smtp_user": {"strategy": "mask", "keep_start": 2},
                    "smtp_password": {"strategy": "constant", "value": "REDACTED"},
                    "webhook_url": {
                        "strategy": "constant",
                        "value": "https://staging-webhook.example.com",
                    },
                    "created_at": "keep",
                }
            },
            "user": {
                "columns": {
                    "id": "keep",
                    "organization_id": "keep",
                    "email": "email",
                    "username": {"strategy": "template", "template": "user_{id}"},
                    "password_hash": {"strategy": "constant", "value": "$2b$12$sanitized"},
                    "full_name": {"strategy": "fake", "provider": "name"},
                    "phone": {"strategy": "fake", "provider": "phone_number", "unique": True},
                    "last_login_ip": {"strategy": "fake", "provider": "ipv4"},
                    "is_admin": "keep",
                    "created_at": "keep",
                }
            },
            "product": {"copy": True},
            "vulnerability": {"copy": True},
            "product_vulnerability": {"copy": True},
            "alert_log": {
                "columns": {
                    "id": "keep",
                    "organization_id": "keep",
                    "user_id": "keep",
                    "message": {"strategy": "replace_pii"},
                    "created_at": "keep",
                }
            },
            "sync_log": {
                "where": "id % 3 <> 0",
                "columns": {
                    "id": "keep",
                    "source": "keep",
                    "details": {"strategy": "replace_pii", "kinds": ["email", "ip"]},
                    "created_at": "keep",
                },
            },
            "agent": {
                "columns": {
                    "id": "keep",
                    "organization_id": "keep",
                    "hostname": "keep",
                    "api_key": {"strategy": "hash", "length": 40},
                    "last_seen_ip": "nullify",
                }
            },
        },
    }
    doc.update(overrides)
    return doc


def write_rules(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())  # literal SQL, no placeholders


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def all_text(dsn: str) -> str:
    """Every text/JSON value of every table, for independent leak checks."""
    chunks: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (table,) in tables:
            for (text,) in conn.execute(
                sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            ):
                chunks.append(text)
    return "\n".join(chunks)


def table_dump(dsn: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (table,) in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        ).fetchall():
            out[table] = sorted(
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
                )
            )
    return out


def assert_constraints_hold(dsn: str) -> None:
    """Every FK re-validates and no orphan exists; unique indexes are valid."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        fks = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'f'"
        ).fetchall()
        assert fks, "the target has no foreign keys: the post-data schema is missing"
        for table, name, _definition in fks:
            conn.execute(
                sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.SQL(table), sql.Identifier(name)
                )
            )
        orphans = conn.execute(
            """SELECT
                 (SELECT count(*) FROM "user" u LEFT JOIN organization o
                    ON o.id = u.organization_id WHERE o.id IS NULL)
               + (SELECT count(*) FROM product p LEFT JOIN organization o
                    ON o.id = p.organization_id WHERE o.id IS NULL)
               + (SELECT count(*) FROM product_vulnerability pv LEFT JOIN product p
                    ON p.id = pv.product_id WHERE p.id IS NULL)
               + (SELECT count(*) FROM alert_log a LEFT JOIN "user" u ON u.id = a.user_id
                    WHERE a.user_id IS NOT NULL AND u.id IS NULL)
               + (SELECT count(*) FROM agent g LEFT JOIN organization o
                    ON o.id = g.organization_id WHERE o.id IS NULL)"""
        ).fetchone()
        assert orphans == (0,)
        invalid = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indisunique AND NOT indisvalid"
        ).fetchone()
        assert invalid == (0,)
        uniques = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype IN ('u', 'p')"
        ).fetchone()
        assert uniques is not None and uniques[0] >= 9


def sanitize(run_drkit: DrkitRunner, e: Env, *args: str) -> Any:
    return run_drkit("sanitize", *args, policy_dir=e.policy_dir, env=ENV)


def respell(pg: PgServer, dbname: str, *, user: str | None = None, pw: str | None = None) -> str:
    """Prod's database under another spelling: localhost, another user, query parameters."""
    params = psycopg.conninfo.conninfo_to_dict(pg.admin_dsn)
    user = user or str(params.get("user", "postgres"))
    pw = pw if pw is not None else str(params.get("password") or "")
    auth = quote(user, safe="") + (":" + quote(pw, safe="") if pw else "")
    return (
        f"postgresql://{auth}@localhost:{params.get('port', 5432)}/{quote(dbname, safe='')}"
        "?application_name=innocent&connect_timeout=10"
    )


def leftovers(e: Env) -> list[str]:
    found = rows(
        e.dsn("postgres"), "SELECT datname FROM pg_database WHERE datname LIKE '%\\_\\_drkit\\_%'"
    )
    return [str(r[0]) for r in found]


def rules_for(tmp_path: Path, src: str, dst: str, **overrides: Any) -> Path:
    doc = rules_doc(**overrides)
    doc["from"], doc["to"] = src, dst
    return write_rules(tmp_path / f"{src}-to-{dst}.yaml", doc)


@pytest.fixture
def other_role(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A second login role (not a superuser) that may create databases."""
    name, pw = f"r_{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(pw)
            )
        )
    yield name, pw
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for (db,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
            "WHERE rolname = %s)",
            [name],
        ).fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def role_url(pg: PgServer, user: str, pw: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(pg.admin_dsn)
    return f"postgresql://{user}:{pw}@127.0.0.1:{params.get('port', 5432)}/{dbname}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
