"""One pseudonym per address across tables, and a drift guard over ``copy: true`` tables.

Real PostgreSQL, the real CLI as a subprocess; each test asserts what DST holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget

SALT = "salt-for-the-pii-drift-tests-91c2"
ENV = {"DRKIT_SANITIZE_SALT": SALT}


@dataclass
class Pair:
    pg: PgServer
    policy_dir: Path
    src: str
    dst: str
    rules: Path

    def src_sql(self, query: str) -> list[tuple[Any, ...]]:
        return self.pg.query(self.src, query)

    def dst_sql(self, query: str) -> list[tuple[Any, ...]]:
        return self.pg.query(self.dst, query)

    def write_rules(self, tables: dict[str, Any], **defaults: str) -> None:
        doc = {
            "version": 1,
            "from": "prod",
            "to": "staging",
            "salt": "${DRKIT_SANITIZE_SALT}",
            "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail", **defaults},
            "tables": tables,
        }
        self.rules.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


@pytest.fixture
def pair(
    pg_server: PgServer, make_policy: PolicyWriter, file_repo: RepoTarget, tmp_path: Path
) -> Iterator[Pair]:
    suffix = uuid.uuid4().hex[:8]
    src, dst = f"pd_src_{suffix}", f"pd_dst_{suffix}"
    src_url = pg_server.create_database(src)
    make_policy("prod", src_url, file_repo)
    policy_dir = make_policy("staging", pg_server.url(dst), file_repo)
    yield Pair(pg_server, policy_dir, src, dst, tmp_path / "prod-to-staging.yaml")
    pg_server.drop_database(src)
    pg_server.drop_database(dst)


def sanitize(run_drkit: DrkitRunner, p: Pair, *args: str) -> Any:
    return run_drkit(
        "sanitize",
        "prod",
        "staging",
        "--rules",
        str(p.rules),
        *args,
        policy_dir=p.policy_dir,
        env=ENV,
    )


def check(run_drkit: DrkitRunner, p: Pair, *args: str) -> Any:
    return run_drkit(
        "sanitize",
        "check",
        "prod",
        "staging",
        "--rules",
        str(p.rules),
        *args,
        policy_dir=p.policy_dir,
        env=ENV,
    )


def everything(p: Pair) -> str:
    tables = p.dst_sql(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    return "\n".join(
        str(row[0]) for (t,) in tables for row in p.dst_sql(f"SELECT t::text FROM {t} t")
    )


@pytest.mark.parametrize("source", ["live", "backup"])
def test_template_email_is_the_pseudonym_in_every_table_and_spelling(
    run_drkit: DrkitRunner, pair: Pair, source: str
) -> None:
    pair.src_sql(
        """
        CREATE TABLE a_note (id int PRIMARY KEY, body text, doc jsonb);
        CREATE TABLE "user" (id int PRIMARY KEY, email text UNIQUE NOT NULL);
        CREATE TABLE z_contact (id int PRIMARY KEY, email text);
        INSERT INTO "user" VALUES (1, 'Anna.Rossi@Corp.example'), (2, 'jürgen.müller@corp.example');
        INSERT INTO a_note VALUES
          (1, 'write to ANNA.ROSSI%40corp.example or jürgen.müller&#64;corp.example',
              '{"to": ["anna.rossi@corp.example"], "cc": "JÜRGEN.MÜLLER@corp.example"}');
        INSERT INTO z_contact VALUES (1, 'anna.rossi@corp.example'), (2, 'ghost@corp.example');
        """
    )
    pair.write_rules(
        {
            "a_note": {"columns": {"id": "keep", "body": "replace_pii", "doc": "replace_pii"}},
            "user": {
                "columns": {
                    "id": "keep",
                    "email": {"strategy": "template", "template": "user_{id}@example.com"},
                }
            },
            "z_contact": {"columns": {"id": "keep", "email": "email"}},
        }
    )
    args: list[str] = []
    if source == "backup":
        backup = run_drkit("backup", "prod", policy_dir=pair.policy_dir)
        assert backup.code == 0, backup.stderr
        args = ["--from-backup", "latest"]
    result = sanitize(run_drkit, pair, *args)
    assert result.code == 0, result.stderr
    body, doc = pair.dst_sql("SELECT body, doc FROM a_note")[0]
    assert body == "write to user_1@example.com or user_2@example.com"
    assert doc == {"to": ["user_1@example.com"], "cc": "user_2@example.com"}
    contacts = dict(pair.dst_sql("SELECT id, email FROM z_contact"))
    assert contacts[1] == "user_1@example.com"
    assert contacts[2].endswith("@example.com") and "ghost" not in contacts[2]
    text = everything(pair).lower()
    for fragment in ("anna", "rossi", "jürgen", "müller", "corp.example", "ghost"):
        assert fragment not in text


VULN = """
    CREATE TABLE vulnerability (id int PRIMARY KEY, cve text NOT NULL, score numeric);
    INSERT INTO vulnerability VALUES (1, 'CVE-2024-0001', 9.8), (2, 'CVE-2024-0002', 5.0);
"""


def add_secret_column(p: Pair) -> None:
    p.src_sql(
        "ALTER TABLE vulnerability ADD COLUMN reporter_email text;"
        "UPDATE vulnerability SET reporter_email = 'reporter' || id || '@secret.example'"
    )


def assert_nothing_of_the_new_column(p: Pair) -> None:
    exists = p.pg.query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [p.dst])
    if not exists:
        return
    columns = p.dst_sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'vulnerability'::regclass "
        "AND attnum > 0 AND NOT attisdropped"
    )
    assert ("reporter_email",) not in columns
    assert "secret.example" not in everything(p)


def test_check_pins_copy_true_and_a_later_column_stops_check_and_run(
    run_drkit: DrkitRunner, pair: Pair
) -> None:
    pair.src_sql(VULN)
    pair.write_rules({"vulnerability": {"copy": True}})
    pair.rules.write_text(pair.rules.read_text() + "# a comment the pin keeps\n")
    first = check(run_drkit, pair)
    assert first.code == 0, first.stderr
    pinned = yaml.safe_load(pair.rules.read_text())["tables"]["vulnerability"]
    assert pinned == {"copy": True, "columns": ["id", "cve", "score"]}
    assert "# a comment the pin keeps" in pair.rules.read_text()
    assert "pinned" in first.stdout and "public.vulnerability" in first.stdout

    add_secret_column(pair)
    again = check(run_drkit, pair)
    assert again.code == 3
    assert "public.vulnerability.reporter_email" in again.stdout + again.stderr
    run = sanitize(run_drkit, pair)
    assert run.code == 3, run.stderr
    assert "public.vulnerability.reporter_email" in run.stderr
    assert "secret.example" not in run.stdout + run.stderr
    assert_nothing_of_the_new_column(pair)
    # the pin was not widened behind the user's back
    assert yaml.safe_load(pair.rules.read_text())["tables"]["vulnerability"]["columns"] == [
        "id",
        "cve",
        "score",
    ]


def test_a_first_run_pins_copy_true_and_the_next_run_stops_on_a_new_column(
    run_drkit: DrkitRunner, pair: Pair
) -> None:
    pair.src_sql(VULN)
    pair.write_rules({"vulnerability": {"copy": True}})
    first = sanitize(run_drkit, pair)
    assert first.code == 0, first.stderr
    assert pair.dst_sql("SELECT count(*) FROM vulnerability") == [(2,)]
    columns = yaml.safe_load(pair.rules.read_text())["tables"]["vulnerability"]["columns"]
    assert columns == ["id", "cve", "score"]

    add_secret_column(pair)
    second = sanitize(run_drkit, pair, "--force")
    assert second.code == 3, second.stderr
    assert "public.vulnerability.reporter_email" in second.stderr
    assert_nothing_of_the_new_column(pair)
    assert pair.dst_sql("SELECT count(*) FROM vulnerability") == [(2,)]  # DST as it was
