"""``drkit sanitize`` end to end against real PostgreSQL: outcomes are rows and exit codes.

The source is the SentriKat sample plus traps (e-mails inside alert messages and JSONB,
IPs inside JSONB); each test runs the real CLI as a subprocess.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from drkit.config import load_policy
from drkit.documents import dump
from drkit.errors import UsageError
from drkit.sanitize import init_rules
from tests.fix_cli import DrkitRunner, Env, PolicyWriter
from tests.fix_pg import PgServer, pg_versions
from tests.fix_s3 import RepoTarget
from tests.sanitize.helpers import (
    ENV,
    SALT,
    SHIPPED,
    all_text,
    assert_constraints_hold,
    rows,
    rules_doc,
    sanitize,
    table_dump,
    write_rules,
)


def test_shipped_prod_to_staging_rules_apply_the_seed_plan(
    run_drkit: DrkitRunner, envs: Env
) -> None:
    src = envs.dsn(envs.src_name)
    dst = envs.dsn(envs.dsts["staging"])
    result = sanitize(
        run_drkit,
        envs,
        "prod",
        "staging",
        "--rules",
        str(SHIPPED / "prod-to-staging.yaml"),
        "--json",
        "--jobs",
        "2",
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["leak_scan"]["clean"] is True
    assert report["leak_scan"]["originals"] > 1000
    users = rows(dst, 'SELECT id, email, username, password_hash, last_login_ip FROM "user"')
    assert len(users) == rows(src, 'SELECT count(*) FROM "user"')[0][0]
    for uid, email, username, pw, ip in users:
        assert (email, username, pw, ip) == (
            f"user_{uid}@example.com",
            f"user_{uid}",
            "$2b$12$sanitized",
            None,
        )
    assert set(rows(dst, "SELECT smtp_password, webhook_url FROM organization")) == {
        ("REDACTED", "https://staging-webhook.example.com")
    }
    assert rows(dst, "SELECT count(*) FROM alert_log") == [(0,)]
    recent = rows(
        src, "SELECT count(*) FROM sync_log WHERE created_at >= now() - interval '7 days'"
    )
    got = rows(dst, "SELECT count(*) FROM sync_log")[0][0]
    assert got > 0 and abs(got - recent[0][0]) <= 2  # rows may cross the 7-day line meanwhile
    assert rows(
        dst, "SELECT count(*) FROM sync_log WHERE created_at < now() - interval '8 days'"
    ) == [(0,)]
    # the data that rules keep is untouched
    assert table_dump(src)["vulnerability"] == table_dump(dst)["vulnerability"]
    # no original e-mail, phone or password hash anywhere in staging
    dst_text = all_text(dst)
    originals = rows(src, 'SELECT email, phone, password_hash, full_name FROM "user"')
    for email, phone, pw, _name in originals:
        assert email not in dst_text and phone not in dst_text and pw not in dst_text
    assert "smtp-secret-" not in dst_text and "hooks.example.net" not in dst_text
    assert_constraints_hold(dst)
    # sequences continue after the copied ids
    assert rows(dst, "SELECT last_value FROM user_id_seq") == rows(
        src, "SELECT last_value FROM user_id_seq"
    )
    assert SALT not in result.stdout + result.stderr


def test_strategies_are_deterministic_across_runs_and_tables(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    src = envs.dsn(envs.src_name)
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    first = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert first.code == 0, first.stderr
    dst = envs.dsn(envs.dsts["staging"])
    before = table_dump(dst)
    again = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force")
    assert again.code == 0, again.stderr
    assert table_dump(dst) == before  # same salt, same pseudonyms, run after run

    users = dict(rows(dst, 'SELECT id, email FROM "user"'))
    src_users = dict(rows(src, 'SELECT id, email FROM "user"'))
    assert all(re.fullmatch(r"u[0-9a-f]{20}@example\.com", e) for e in users.values())
    assert len(set(users.values())) == len(users)
    # join by value across tables: every e-mail quoted in alert messages and sync JSON
    # became exactly the pseudonym the user's row got
    dst_emails = set(users.values())
    messages = rows(
        dst, "SELECT user_id, message FROM alert_log WHERE message LIKE 'Alert sent to %'"
    )
    assert messages
    for user_id, message in messages:
        quoted = message.removeprefix("Alert sent to ").split(":")[0]
        assert quoted == users[user_id]
        assert src_users[user_id] not in message
    requested = rows(
        dst,
        "SELECT details->>'requested_by' FROM sync_log WHERE details ? 'requested_by' AND details->>'requested_by' IS NOT NULL",
    )
    assert requested and {r[0] for r in requested} <= dst_emails
    ips = {str(r[0]) for r in rows(dst, 'SELECT host(last_login_ip) FROM "user"')}
    client_ips = rows(
        dst, "SELECT details->>'client_ip' FROM sync_log WHERE details->>'client_ip' IS NOT NULL"
    )
    assert client_ips and {r[0] for r in client_ips} <= ips
    assert rows(dst, "SELECT count(*) FROM sync_log") == rows(
        src, "SELECT count(*) FROM sync_log WHERE id % 3 <> 0"
    )
    # mask keeps the first two characters, hash has its length, unique phone is unique
    for (user,) in rows(dst, "SELECT smtp_user FROM organization"):
        assert user[:2] == "ma" and set(user[2:]) == {"*"}
    assert {len(k) for (k,) in rows(dst, "SELECT api_key FROM agent")} == {40}
    phones = [p for (p,) in rows(dst, 'SELECT phone FROM "user"')]
    assert len(set(phones)) == len(phones)
    assert_constraints_hold(dst)

    # another salt: other pseudonyms
    other = sanitize_with_salt(run_drkit, envs, rules, "a-completely-different-salt")
    assert other.code == 0, other.stderr
    changed = dict(rows(dst, 'SELECT id, email FROM "user"'))
    assert sum(changed[i] == users[i] for i in users) == 0


def sanitize_with_salt(run_drkit: DrkitRunner, e: Env, rules: Path, salt: str) -> Any:
    return run_drkit(
        "sanitize",
        "prod",
        "staging",
        "--rules",
        str(rules),
        "--force",
        policy_dir=e.policy_dir,
        env={"DRKIT_SANITIZE_SALT": salt},
    )


def test_leak_scan_fails_on_a_planted_leak_and_never_shows_the_value(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    src = envs.dsn(envs.src_name)
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    (victim,) = rows(src, 'SELECT email FROM "user" WHERE id = 7')[0]
    (phone,) = rows(src, 'SELECT phone FROM "user" WHERE id = 8')[0]
    # an innocently named, kept column quotes a user's e-mail; a note quotes a phone
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("UPDATE product SET version = %s WHERE id IN (1, 2)", [victim])
        conn.execute(
            "UPDATE vulnerability SET description = description || ' reported by ' || %s "
            "WHERE id = 3",
            [phone],
        )
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--json")
    assert result.code == 3, result.stderr
    assert "public.product.version: 2" in result.stderr
    assert "public.vulnerability.description: 1" in result.stderr
    assert victim not in result.stderr + result.stdout
    assert phone not in result.stderr + result.stdout
    assert result.json()["leak_scan"]["hits"] == {
        "public.product.version": 2,
        "public.vulnerability.description": 1,
    }


def test_scan_only_finds_a_leak_planted_in_the_target(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    src = envs.dsn(envs.src_name)
    dst = envs.dsn(envs.dsts["staging"])
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    clean = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--scan-only")
    assert clean.code == 0, clean.stderr
    (name,) = rows(src, 'SELECT username FROM "user" WHERE id = 5')[0]
    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute(
            "UPDATE sync_log SET details = details || jsonb_build_object('note', %s::text) "
            "WHERE id = (SELECT min(id) FROM sync_log)",
            [f"ping {name}, see ticket"],
        )
    dirty = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--scan-only")
    assert dirty.code == 3
    assert "public.sync_log.details: 1" in dirty.stderr
    assert name not in dirty.stderr + dirty.stdout


def test_schema_drift_fails_the_run_and_the_check(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    src = envs.dsn(envs.src_name)
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    ok = run_drkit(
        "sanitize",
        "check",
        "prod",
        "staging",
        "--rules",
        str(rules),
        policy_dir=envs.policy_dir,
        env=ENV,
    )
    assert ok.code == 0, ok.stderr
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute('ALTER TABLE "user" ADD COLUMN secret_answer text')
        conn.execute("UPDATE \"user\" SET secret_answer = 'my first dog was rex'")
        conn.execute("CREATE TABLE payment (id serial PRIMARY KEY, card text)")
    check = run_drkit(
        "sanitize",
        "check",
        "prod",
        "staging",
        "--rules",
        str(rules),
        "--json",
        policy_dir=envs.policy_dir,
        env=ENV,
    )
    assert check.code == 3
    report = check.json()
    assert report["unlisted_columns"] == ["public.user.secret_answer"]
    assert report["unlisted_tables"] == ["public.payment"]
    assert any("secret_answer" in p for p in report["pii_kept"])
    run = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert run.code == 3
    assert "public.user.secret_answer" in run.stderr
    assert rows(
        envs.dsn("postgres"),
        "SELECT count(*) FROM pg_database WHERE datname = %s",
        [envs.dsts["staging"]],
    ) == [(0,)]  # nothing was created


def test_direction_guard_and_same_database_are_refused(
    run_drkit: DrkitRunner,
    envs: Env,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    tmp_path: Path,
    pg_server: PgServer,
) -> None:
    rules = tmp_path / "staging-to-prod.yaml"
    doc = rules_doc()
    doc["from"], doc["to"] = "staging", "prod"
    write_rules(rules, doc)
    up = sanitize(run_drkit, envs, "staging", "prod", "--rules", str(rules), "--force")
    assert up.code == 4
    assert "refusing" in up.stderr
    dev_up = sanitize(run_drkit, envs, "dev", "prod", "--force", "--dry-run")
    assert dev_up.code == 4
    # a policy with another name pointing at prod's very database
    make_policy("test", pg_server.url(envs.src_name), file_repo)
    doc["from"], doc["to"] = "prod", "test"
    same = write_rules(tmp_path / "prod-to-test.yaml", doc)
    result = sanitize(run_drkit, envs, "prod", "test", "--rules", str(same), "--force")
    assert result.code == 4
    assert "same database" in result.stderr
    assert rows(envs.dsn(envs.src_name), 'SELECT count(*) > 0 FROM "user"') == [(True,)]


@pytest.mark.parametrize(
    "where",
    [
        "1=1; DROP TABLE agent",
        "id IN (WITH d AS (DELETE FROM agent RETURNING id) SELECT id FROM d)",
    ],
)
def test_sql_injection_in_where_is_a_rules_error(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path, where: str
) -> None:
    doc = rules_doc()
    doc["tables"]["sync_log"]["where"] = where
    rules = write_rules(tmp_path / "r.yaml", doc)
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert result.code == 2
    assert "tables.sync_log.where" in result.stderr
    assert rows(envs.dsn(envs.src_name), "SELECT count(*) > 0 FROM agent") == [(True,)]


def test_target_with_tables_needs_force_and_dry_run_copies_nothing(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    dry = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    plan = {t["table"]: t for t in dry.json()["tables"]}
    assert plan["public.user"]["action"] == "mask"
    assert plan["public.user"]["strategies"]["email"] == "email"
    assert plan["public.sync_log"]["selection"] == "where"
    assert plan["public.vulnerability"]["action"] == "copy"
    src_syncs = rows(envs.dsn(envs.src_name), "SELECT count(*) FROM sync_log WHERE id % 3 <> 0")
    assert plan["public.sync_log"]["rows"] == src_syncs[0][0]
    exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
    assert rows(envs.dsn("postgres"), exists, [envs.dsts["staging"]]) == [(0,)]
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    refused = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert refused.code == 4
    assert "--force" in refused.stderr


def test_subset_keeps_every_foreign_key(run_drkit: DrkitRunner, envs: Env, tmp_path: Path) -> None:
    src = envs.dsn(envs.src_name)
    doc = rules_doc(subset={"start": {"table": "user", "where": "id % 10 = 0"}})
    doc["to"] = "dev"
    rules = write_rules(tmp_path / "prod-to-dev.yaml", doc)
    result = sanitize(run_drkit, envs, "prod", "dev", "--rules", str(rules), "--json")
    assert result.code == 0, result.stderr
    dst = envs.dsn(envs.dsts["dev"])
    assert {r[0] for r in rows(dst, 'SELECT id FROM "user"')} == {
        r[0] for r in rows(src, 'SELECT id FROM "user" WHERE id % 10 = 0')
    }
    kept_orgs = {
        r[0] for r in rows(src, 'SELECT DISTINCT organization_id FROM "user" WHERE id % 10 = 0')
    }
    assert {r[0] for r in rows(dst, "SELECT id FROM organization")} == kept_orgs
    assert {r[0] for r in rows(dst, "SELECT id FROM product")} == {
        r[0]
        for r in rows(
            src, "SELECT id FROM product WHERE organization_id = ANY(%s)", [list(kept_orgs)]
        )
    }
    alerts = rows(dst, "SELECT count(*) FROM alert_log")[0][0]
    assert alerts == rows(src, "SELECT count(*) FROM alert_log WHERE user_id % 10 = 0")[0][0] > 0
    # vulnerabilities are not restricted: every one is there
    assert rows(dst, "SELECT count(*) FROM vulnerability") == rows(
        src, "SELECT count(*) FROM vulnerability"
    )
    assert_constraints_hold(dst)


def test_shipped_staging_to_dev_subset_after_prod_to_staging(
    run_drkit: DrkitRunner, envs: Env
) -> None:
    assert (
        sanitize(
            run_drkit, envs, "prod", "staging", "--rules", str(SHIPPED / "prod-to-staging.yaml")
        ).code
        == 0
    )
    result = sanitize(
        run_drkit, envs, "staging", "dev", "--rules", str(SHIPPED / "staging-to-dev.yaml")
    )
    assert result.code == 0, result.stderr
    dst = envs.dsn(envs.dsts["dev"])
    assert rows(dst, 'SELECT count(*) FROM "user" WHERE id % 10 <> 0') == [(0,)]
    assert rows(dst, 'SELECT count(*) > 0 FROM "user"') == [(True,)]
    assert_constraints_hold(dst)


@pg_versions()
def test_from_backup_gives_the_same_target_as_the_live_copy(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    backup = run_drkit("backup", "prod", policy_dir=envs.policy_dir)
    assert backup.code == 0, backup.stderr
    live = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules))
    assert live.code == 0, live.stderr
    doc = rules_doc()
    doc["to"] = "dev"
    dev_rules = write_rules(tmp_path / "d.yaml", doc)
    # the live database changes after the backup: the backup's rows must win
    with psycopg.connect(envs.dsn(envs.src_name), autocommit=True) as conn:
        conn.execute("DELETE FROM alert_log WHERE id % 2 = 0")
    from_backup = sanitize(
        run_drkit,
        envs,
        "prod",
        "dev",
        "--rules",
        str(dev_rules),
        "--from-backup",
        "latest",
        "--json",
    )
    assert from_backup.code == 0, from_backup.stderr
    assert from_backup.json()["source"].startswith("backup ")
    assert table_dump(envs.dsn(envs.dsts["staging"])) == table_dump(envs.dsn(envs.dsts["dev"]))
    assert_constraints_hold(envs.dsn(envs.dsts["dev"]))


def test_init_drafts_rules_that_check_accepts(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    out = tmp_path / "drafted.yaml"
    result = run_drkit("sanitize", "init", "prod", "--out", str(out), policy_dir=envs.policy_dir)
    assert result.code == 0, result.stderr
    drafted = yaml.safe_load(out.read_text())
    assert drafted["from"] == "prod" and drafted["to"] == "staging"
    user = drafted["tables"]["user"]["columns"]
    assert user["email"] == {"strategy": "email"}
    assert user["password_hash"]["strategy"] == "constant"
    assert user["last_login_ip"] == "nullify"
    assert drafted["tables"]["sync_log"]["columns"]["details"]["strategy"] == "replace_pii"
    assert "# guessed" in out.read_text()
    # the document is what was drafted and where; a file that exists is never replaced
    policy = load_policy("prod", envs.policy_dir)
    again = tmp_path / "json" / "drafted.yaml"
    assert dump(init_rules(policy, again)) == {
        "ok": True,
        "out": str(again),
        "rules": again.read_text(),
    }
    with pytest.raises(UsageError, match="exists: choose another --out"):
        init_rules(policy, out)
    assert yaml.safe_load(out.read_text()) == drafted
    check = run_drkit(
        "sanitize",
        "check",
        "prod",
        "staging",
        "--rules",
        str(out),
        "--json",
        policy_dir=envs.policy_dir,
        env=ENV,
    )
    assert check.code == 0, check.stderr
    assert json.loads(check.stdout)["unlisted_columns"] == []


def test_a_source_policy_with_several_databases_is_refused_in_one_line(
    run_drkit: DrkitRunner, envs: Env, pg_server: PgServer, make_policy: PolicyWriter
) -> None:
    """A rules file describes one database: a policy listing two is refused, nothing copied."""
    src_url = pg_server.url(envs.src_name)
    other = f"other_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(other)
    try:
        make_policy(
            "prod",
            src_url,
            {"url": "file:///nonexistent-unused"},
            database={"url": src_url, "databases": [envs.src_name, other]},
        )
        result = sanitize(
            run_drkit, envs, "prod", "staging", "--rules", str(SHIPPED / "prod-to-staging.yaml")
        )
        assert result.code == 2, result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and "lists 2 databases" in line and other in line
        check = sanitize(
            run_drkit,
            envs,
            "check",
            "prod",
            "staging",
            "--rules",
            str(SHIPPED / "prod-to-staging.yaml"),
        )
        assert check.code == 2
        dst = envs.dsts["staging"]
        assert not pg_server.query(
            "postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [dst]
        )
    finally:
        pg_server.drop_database(other)
