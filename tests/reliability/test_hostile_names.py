"""Hostile identifiers: quotes, spaces, dots, unicode, reserved words and mixed case in
database, schema, table and column names survive backup → verify → restore, with every
row and every value intact and the manifest's row counts checked on restore."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import make_age_key

SCHEMAS = ["public", 'we"ird sch.ema', "Ünïcødé"]
TABLES = ["select", "My Table", 'quo"te', "dots.in.name", "表 テーブル", "MiXeD", "a'b;--"]
COLUMNS = ["order", "a b", 'x"y', "É", "user", "CamelCase", "semi;colon"]


@pytest.fixture
def hostile_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    name = f"h 'db\" ü {uuid.uuid4().hex[:6]}"
    url = pg_server.create_database(name)
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        for schema in SCHEMAS:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for table in TABLES:
                cols = sql.SQL(", ").join(
                    sql.SQL("{} text").format(sql.Identifier(c)) for c in COLUMNS
                )
                ident = sql.Identifier(schema, table)
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {})").format(ident, cols)
                )
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT g, {} FROM generate_series(1, {}) g").format(
                        ident,
                        sql.SQL(", ").join(
                            sql.SQL("g::text || {}").format(sql.Literal(f" {c} ☃ '\"\\"))
                            for c in COLUMNS
                        ),
                        sql.Literal(len(table) * 3 + len(schema)),
                    )
                )
    yield name, url
    pg_server.drop_database(name)


def snapshot(pg_server: PgServer, dbname: str) -> dict[str, str]:
    """A digest of every row of every hostile table."""
    found: dict[str, str] = {}
    with psycopg.connect(pg_server.dsn(dbname)) as conn:
        for schema in SCHEMAS:
            for table in TABLES:
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*)::text || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM {} t"
                    ).format(sql.Identifier(schema, table))
                ).fetchone()
                assert row is not None
                found[f"{schema}.{table}"] = str(row[0])
    return found


def test_hostile_names_survive_backup_verify_restore(
    hostile_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    name, url = hostile_db
    identity, recipient = make_age_key(tmp_path / "keys")
    repository = {"encryption": {"recipients": [recipient], "identity_file": str(identity)}}
    policy_dir = make_policy("prod", url, file_repo, repository=repository)
    before = snapshot(pg_server, name)

    made = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    backup_id = made.json()["id"]
    assert made.json()["tables"] == len(SCHEMAS) * len(TABLES)
    assert file_repo.root is not None
    manifest = json.loads(
        (file_repo.root / "prod" / "backups" / backup_id / "manifest.json").read_text()
    )
    assert manifest["databases"] == [name]
    counts = manifest["row_counts"][name]
    assert len(counts) == len(SCHEMAS) * len(TABLES)
    assert sum(counts.values()) == sum(int(v.split(":")[0]) for v in before.values())

    assert run_drkit("verify", "prod", backup_id, policy_dir=policy_dir).code == 0
    listed = run_drkit("backups", "prod", "--json", policy_dir=policy_dir)
    assert listed.json()["backups"][0]["databases"] == [name]

    target = f"r 'x\" ü {uuid.uuid4().hex[:6]}"
    restored = run_drkit(
        "restore", "prod", backup_id, "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 0, restored.stderr
    assert snapshot(pg_server, target) == before
    pg_server.drop_database(target)


@given(schema=st.text(min_size=1, max_size=20), table=st.text(min_size=1, max_size=20))
def test_table_keys_split_back_whatever_the_names(schema: str, table: str) -> None:
    from drkit.pg.tables import split_key, table_key

    assert split_key(table_key(schema, table)) == (schema, table)


SANITIZE_SCHEMAS = ["public", 'we"ird schema', "Ünïcødé"]  # rules name tables schema.table


def test_hostile_names_survive_sanitize_live_and_from_an_encrypted_backup(
    pg_server: PgServer,
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    src = f"hs 'src\" {uuid.uuid4().hex[:6]}"
    url = pg_server.create_database(src)
    with psycopg.connect(pg_server.dsn(src), autocommit=True) as conn:
        for schema in SANITIZE_SCHEMAS:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for table in TABLES:
                cols = sql.SQL(", ").join(
                    sql.SQL("{} text").format(sql.Identifier(c)) for c in COLUMNS
                )
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {})").format(
                        sql.Identifier(schema, table), cols
                    )
                )
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT g, {} FROM generate_series(1, 25) g").format(
                        sql.Identifier(schema, table),
                        sql.SQL(", ").join(
                            sql.SQL("'secret-' || {} || '-' || g").format(sql.Literal(c))
                            for c in COLUMNS
                        ),
                    )
                )
    columns: dict[str, object] = {
        "id": "keep",
        "order": {"strategy": "template", "template": "o_{id}"},
        "a b": {"strategy": "constant", "value": "C"},
        'x"y': "nullify",
        "É": {"strategy": "hash", "length": 12},
        "user": "keep",
        "CamelCase": {"strategy": "mask", "keep_start": 1},
        "semi;colon": {"strategy": "fake", "provider": "word"},
    }
    rules = {
        "version": 1,
        "from": "prod",
        "to": "dev",
        "salt": "${DRKIT_SANITIZE_SALT}",
        "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail"},
        "tables": {
            f"{schema}.{table}": {"columns": columns}
            for schema in SANITIZE_SCHEMAS
            for table in TABLES
        },
    }
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules, allow_unicode=True, sort_keys=False))
    identity, recipient = make_age_key(tmp_path / "keys")
    encryption = {"encryption": {"recipients": [recipient], "identity_file": str(identity)}}
    policy_dir = make_policy("prod", url, file_repo, repository=encryption)
    targets = {
        "live": f"hd 'live\" {uuid.uuid4().hex[:6]}",
        "backup": f"hd 'bk {uuid.uuid4().hex[:6]}",
    }
    env = {"DRKIT_SANITIZE_SALT": "hostile-salt-0123456789"}
    try:
        assert run_drkit("backup", "prod", policy_dir=policy_dir).code == 0
        for how, target in targets.items():
            make_policy("dev", pg_server.url(target), file_repo, repository=encryption)
            extra = ["--from-backup", "latest"] if how == "backup" else []
            done = run_drkit(
                "sanitize",
                "prod",
                "dev",
                "--rules",
                str(rules_path),
                *extra,
                policy_dir=policy_dir,
                env=env,
                timeout=300,
            )
            assert done.code == 0, (how, done.stderr)
            with psycopg.connect(pg_server.dsn(target)) as conn:
                for schema in SANITIZE_SCHEMAS:
                    for table in TABLES:
                        ident = sql.Identifier(schema, table)
                        got = conn.execute(
                            sql.SQL(
                                "SELECT count(*), count(*) FILTER (WHERE {} = 'C'), "
                                "count({}), bool_and({} = 'o_' || id) , "
                                "count(*) FILTER (WHERE t::text LIKE '%secret-order%' "
                                "OR t::text LIKE '%secret-a b%' OR t::text LIKE '%secret-É%') "
                                "FROM {} t"
                            ).format(
                                sql.Identifier("a b"),
                                sql.Identifier('x"y'),
                                sql.Identifier("order"),
                                ident,
                            )
                        ).fetchone()
                        assert got == (25, 25, 0, True, 0), (how, schema, table, got)
        # the live copy and the copy from the encrypted backup are the same rows
        live, backup = (snapshot_of(pg_server, t, SANITIZE_SCHEMAS) for t in targets.values())
        assert live == backup
    finally:
        for target in targets.values():
            pg_server.drop_database(target)
        pg_server.drop_database(src)


def snapshot_of(pg_server: PgServer, dbname: str, schemas: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    with psycopg.connect(pg_server.dsn(dbname)) as conn:
        for schema in schemas:
            for table in TABLES:
                row = conn.execute(
                    sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {} t").format(
                        sql.Identifier(schema, table)
                    )
                ).fetchone()
                found[f"{schema}.{table}"] = str(row[0] if row else None)
    return found
