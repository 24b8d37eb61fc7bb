"""Partial backups (``drkit backup prod --database shop``) count only for what they hold.

A policy with two databases, ``main`` and ``shop``: one full backup, then a backup of
``shop`` alone.  The partial backup is the newest, but it is never the answer for
``main``: retention keeps the full one, ``status`` measures each database's RPO from
the backups that hold it, a drill of ``latest`` restores each database from its own
newest backup, and ``restore --database`` / ``--table`` pick a part of a backup.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit.catalog import make_backup_id, resolve_backup, write_manifest
from drkit.config import load_policy
from drkit.errors import NotFoundError, UsageError
from drkit.storage import Repository
from tests.builders import build_manifest
from tests.fix_cli import DrkitRunner, PolicyWriter, checks_by_name, drill
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget


@dataclass
class TwoDatabases:
    main: str
    shop: str
    policy_dir: Path
    pg: PgServer
    repo: RepoTarget


@pytest.fixture
def two_databases(
    pg_server: PgServer, file_repo: RepoTarget, make_policy: PolicyWriter
) -> Iterator[TwoDatabases]:
    suffix = uuid.uuid4().hex[:8]
    main, shop = f"main_{suffix}", f"shop_{suffix}"
    url = pg_server.create_database(main)
    pg_server.create_database(shop)
    pg_server.query(main, "CREATE TABLE account (id int PRIMARY KEY, name text)")
    pg_server.query(main, "INSERT INTO account SELECT g, 'a' || g FROM generate_series(1, 30) g")
    pg_server.query(main, "CREATE SCHEMA billing")
    pg_server.query(main, "CREATE TABLE billing.invoice (id int PRIMARY KEY)")
    pg_server.query(main, "INSERT INTO billing.invoice SELECT generate_series(1, 7)")
    pg_server.query(shop, "CREATE TABLE item (id int PRIMARY KEY)")
    pg_server.query(shop, "INSERT INTO item SELECT generate_series(1, 12)")
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        database={"url": url, "databases": [main, shop]},
        objectives={"rpo": "1h", "rto": "30m"},
        drill={"checks": {"row_counts": True, "amcheck": False}},
    )
    try:
        yield TwoDatabases(main, shop, policy_dir, pg_server, file_repo)
    finally:
        pg_server.drop_database(main)
        pg_server.drop_database(shop)


def backup(run_cli: DrkitRunner, dbs: TwoDatabases, *args: str) -> str:
    done = run_cli("backup", "prod", "--json", *args, policy_dir=dbs.policy_dir, check=True)
    time.sleep(1.1)  # backup ids have a one-second resolution
    return str(done.json()["id"])


def test_prune_never_plans_to_delete_the_only_backup_holding_a_database(
    two_databases: TwoDatabases, run_cli: DrkitRunner
) -> None:
    dbs = two_databases
    full = backup(run_cli, dbs)
    partial = backup(run_cli, dbs, "--database", dbs.shop)
    plan = run_cli("prune", "prod", "--dry-run", "--json", policy_dir=dbs.policy_dir)
    assert plan.code == 0, plan.stderr
    actions = {b["id"]: (b["action"], b["reasons"]) for b in plan.json()["backups"]}
    assert actions[full] == ("KEEP", [f"newest ({dbs.main})"])
    assert actions[partial] == ("KEEP", ["newest"])
    # and the real prune does what the dry run said
    run_cli("prune", "prod", "--json", policy_dir=dbs.policy_dir, check=True)
    listed = run_cli("backups", "prod", "--json", policy_dir=dbs.policy_dir, check=True)
    assert {b["id"] for b in listed.json()["backups"]} == {full, partial}


def test_status_measures_rpo_per_database_and_reports_the_worst(
    two_databases: TwoDatabases, run_cli: DrkitRunner
) -> None:
    dbs = two_databases
    backup(run_cli, dbs, "--database", dbs.shop)
    # only shop is backed up: main has nothing restorable, whatever shop's freshness
    done = run_cli("status", "prod", "--json", policy_dir=dbs.policy_dir)
    assert done.code == 3, done.stdout + done.stderr
    doc = done.json()
    assert doc["rpo_exposure_seconds"] is None
    assert doc["rpo_worst_database"] == dbs.main
    assert doc["databases"][dbs.main]["last_backup_id"] is None
    assert doc["databases"][dbs.shop]["rpo_exposure_seconds"] < 60
    assert doc["breached"] == [f"RPO: nothing is restorable for database {dbs.main} (objective 1h)"]

    full = backup(run_cli, dbs)
    time.sleep(1.0)
    partial = backup(run_cli, dbs, "--database", dbs.shop)
    doc = run_cli("status", "prod", "--json", policy_dir=dbs.policy_dir, check=True).json()
    per_db = doc["databases"]
    assert per_db[dbs.main]["last_backup_id"] == full
    assert per_db[dbs.shop]["last_backup_id"] == partial
    assert per_db[dbs.main]["rpo_exposure_seconds"] > per_db[dbs.shop]["rpo_exposure_seconds"]
    assert doc["rpo_worst_database"] == dbs.main
    assert doc["rpo_exposure_seconds"] == per_db[dbs.main]["rpo_exposure_seconds"]

    screen = run_cli("status", "prod", policy_dir=dbs.policy_dir, check=True)
    assert f"worst: database {dbs.main}" in screen.stdout
    assert f"database {dbs.main}" in screen.stdout and full in screen.stdout


def test_drill_of_latest_restores_each_database_from_its_newest_backup(
    two_databases: TwoDatabases, run_cli: DrkitRunner, scratch_root: Path
) -> None:
    dbs = two_databases
    full = backup(run_cli, dbs)
    dbs.pg.query(dbs.shop, "INSERT INTO item SELECT generate_series(13, 20)")
    partial = backup(run_cli, dbs, "--database", dbs.shop)
    done = drill(run_cli, dbs.policy_dir, scratch_root, "--json", timeout=600)
    assert done.code == 0, done.stdout + done.stderr
    doc = done.json()
    checks = checks_by_name(doc)
    assert checks[f"rows {dbs.main}:public.account"]["observed"] == 30
    assert checks[f"rows {dbs.main}:billing.invoice"]["observed"] == 7
    assert checks[f"rows {dbs.shop}:public.item"]["observed"] == 20  # from the partial one
    assert checks[f"restore {dbs.main}"]["status"] == "PASS"
    assert checks[f"restore {dbs.shop}"]["status"] == "PASS"
    assert doc["backup"]["id"] == partial
    assert doc["backup"]["databases"] == {dbs.main: full, dbs.shop: partial}


def test_restore_latest_puts_back_every_database_from_its_newest_backup(
    two_databases: TwoDatabases, run_cli: DrkitRunner
) -> None:
    dbs = two_databases
    backup(run_cli, dbs, "--database", dbs.shop)
    # main is held by no backup: refused before anything is touched
    refused = run_cli("restore", "prod", "latest", "--force", policy_dir=dbs.policy_dir)
    assert refused.code == 1 and f"holds database {dbs.main}" in refused.stderr
    full = backup(run_cli, dbs)
    dbs.pg.query(dbs.shop, "INSERT INTO item SELECT generate_series(13, 20)")
    partial = backup(run_cli, dbs, "--database", dbs.shop)
    dbs.pg.query(dbs.main, "DELETE FROM account WHERE id > 10")
    dbs.pg.query(dbs.shop, "DELETE FROM item")
    done = run_cli("restore", "prod", "latest", "--force", "--json", policy_dir=dbs.policy_dir)
    assert done.code == 0, done.stderr
    came_from = {d["database"]: d["backup_id"] for d in done.json()["databases"]}
    assert came_from == {dbs.shop: partial, dbs.main: full}
    assert dbs.pg.query(dbs.main, "SELECT count(*) FROM account") == [(30,)]
    assert dbs.pg.query(dbs.shop, "SELECT count(*) FROM item") == [(20,)]


def test_restore_one_database_and_named_tables(
    two_databases: TwoDatabases, run_cli: DrkitRunner
) -> None:
    dbs = two_databases
    full = backup(run_cli, dbs)
    target_name = f"target_{uuid.uuid4().hex[:8]}"
    target = dbs.pg.create_database(target_name)
    try:
        # one database of a two-database backup (--target-db alone is refused)
        refused = run_cli("restore", "prod", full, "--target-db", target, policy_dir=dbs.policy_dir)
        assert refused.code == 2 and "--database" in refused.stderr
        done = run_cli(
            "restore",
            "prod",
            full,
            "--database",
            dbs.shop,
            "--target-db",
            target,
            "--json",
            policy_dir=dbs.policy_dir,
        )
        assert done.code == 0, done.stderr
        assert [d["database"] for d in done.json()["databases"]] == [dbs.shop]
        assert dbs.pg.query(target_name, "SELECT count(*) FROM item") == [(12,)]
        dbs.pg.query(target_name, "DROP TABLE item")

        # named tables: schema-qualified and bare, like pg_restore -n/-t; only those are
        # restored, and the row-count check covers only them
        done = run_cli(
            "restore",
            "prod",
            full,
            "--database",
            dbs.main,
            "--target-db",
            target,
            "--table",
            "billing.invoice",
            "--json",
            policy_dir=dbs.policy_dir,
        )
        assert done.code == 0, done.stderr
        tables = dbs.pg.query(
            target_name,
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        )
        assert tables == [("billing.invoice",)]
        assert dbs.pg.query(target_name, "SELECT count(*) FROM billing.invoice") == [(7,)]
        assert done.json()["databases"][0]["tables"] == 1
        done = run_cli(
            "restore",
            "prod",
            full,
            "--database",
            dbs.main,
            "--target-db",
            target,
            "--table",
            "account",
            "--force",
            "--json",
            policy_dir=dbs.policy_dir,
        )
        assert done.code == 0, done.stderr
        assert dbs.pg.query(target_name, "SELECT count(*) FROM account") == [(30,)]

        # a database or table the backup does not hold is an error, nothing restored
        partial = backup(run_cli, dbs, "--database", dbs.shop)
        wrong = run_cli(
            "restore",
            "prod",
            partial,
            "--database",
            dbs.main,
            "--target-db",
            target,
            policy_dir=dbs.policy_dir,
        )
        assert wrong.code == 2 and f"does not hold database {dbs.main}" in wrong.stderr
        missing = run_cli(
            "restore",
            "prod",
            full,
            "--database",
            dbs.shop,
            "--target-db",
            target,
            "--table",
            "nosuch",
            "--force",
            policy_dir=dbs.policy_dir,
        )
        assert missing.code == 2 and "nosuch" in missing.stderr
    finally:
        dbs.pg.drop_database(target_name)


def test_resolve_backup_latest_holding_a_database(
    file_repo: RepoTarget, make_policy: PolicyWriter
) -> None:
    """The API drill and ``sanitize --from-backup latest`` use: the newest backup that
    holds the database, not the newest backup."""
    policy_dir = make_policy("prod", "postgresql://app@127.0.0.1:1/main", file_repo)
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    ids = []
    for day, held in ((1, ["main", "shop"]), (2, ["shop"])):
        started = datetime(2026, 11, day, 2, tzinfo=UTC)
        backup_id = make_backup_id(started, "logical")
        objects = [
            repo.store(f"backups/{backup_id}/{db}.dump", io.BytesIO(b"x"), database=db)
            for db in held
        ]
        write_manifest(
            repo,
            build_manifest(
                backup_id=backup_id,
                at=started,
                duration=timedelta(minutes=1),
                databases=held,
                consistent_at=started,
                objects=objects,
            ),
        )
        ids.append(backup_id)
    assert resolve_backup(repo, "latest").id == ids[1]
    assert resolve_backup(repo, "latest", database="main").id == ids[0]
    assert resolve_backup(repo, "latest", kinds=("logical",), database="shop").id == ids[1]
    with pytest.raises(NotFoundError, match="holding database other"):
        resolve_backup(repo, "latest", database="other")
    with pytest.raises(UsageError, match="does not hold database main"):
        resolve_backup(repo, ids[1], database="main")
