"""Personal data the rules were not told about, attacked end to end (real PostgreSQL, the
real CLI), from the live source and from a backup: originals of masked columns in other
spellings and encodings, personal data by content in kept and copied columns, names of
masked people in free text, the catalog's corners, credentials in view definitions,
the server log, pins, and ``sanitize scan``.

Each test asserts what DST (and the rules file, and the server's log) holds afterwards,
and that no value is ever shown."""

from __future__ import annotations

import base64
import gzip
import json
import quopri
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.fix_cli import DrkitRunner, Env, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.sanitize.helpers import ENV as HELPER_ENV
from tests.sanitize.helpers import SHIPPED, sanitize

SALT = "salt-for-the-pii-attack-tests-5d1e"
ENV = {"DRKIT_SANITIZE_SALT": SALT}

EMAIL = "giulia.romano77@customer-one.com"
PHONE = "+39 347 123 4567"
NAME = "Mary Johnson"
NFC_NAME = "Jürgen Weiß"
ACCOUNT = "4915550100223"
CODE = "ZX81QK"  # from a char(12) column: read back blank-padded

PEOPLE = f"""
CREATE TABLE person (
    id int PRIMARY KEY, email text NOT NULL, phone text, full_name text, account text,
    code char(12)
);
INSERT INTO person VALUES
  (1, '{EMAIL}', '{PHONE}', '{NAME}', '{ACCOUNT}', '{CODE}'),
  (2, 'other.person@customer-two.com', NULL, '{NFC_NAME}', NULL, NULL);
CREATE TABLE memo (id int PRIMARY KEY, body text, doc jsonb, blob bytea);
INSERT INTO memo VALUES (1, 'nothing to see', '{{"a": 1}}', NULL);
"""


@dataclass
class Box:
    pg: PgServer
    policy_dir: Path
    src: str
    dst: str
    rules: Path

    def src_sql(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.pg.dsn(self.src), autocommit=True) as conn:
            conn.execute(query.encode() if params is None else query, params)

    def write_rules(self, memo: Any = None, **tables: Any) -> None:
        doc = {
            "version": 1,
            "from": "prod",
            "to": "staging",
            "salt": "${DRKIT_SANITIZE_SALT}",
            "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail"},
            "tables": {
                "person": {
                    "columns": {
                        "id": "keep",
                        "email": "email",
                        "phone": {"strategy": "fake", "provider": "phone_number"},
                        "full_name": {"strategy": "fake", "provider": "name"},
                        "account": {"strategy": "hash"},
                        "code": {"strategy": "mask"},
                    }
                },
                "memo": memo
                if memo is not None
                else {"columns": {"id": "keep", "body": "keep", "doc": "keep", "blob": "keep"}},
                **tables,
            },
        }
        self.rules.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    def run(self, run_drkit: DrkitRunner, source: str, *args: str) -> Any:
        extra: list[str] = []
        if source == "backup":
            backup = run_drkit("backup", "prod", policy_dir=self.policy_dir)
            assert backup.code == 0, backup.stderr
            extra = ["--from-backup", "latest"]
        return run_drkit(
            "sanitize",
            "prod",
            "staging",
            "--rules",
            str(self.rules),
            *extra,
            *args,
            policy_dir=self.policy_dir,
            env=ENV,
        )

    def dst_exists(self) -> bool:
        found = self.pg.query(
            "postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [self.dst]
        )
        return bool(found)

    def leftovers(self) -> list[Any]:
        return self.pg.query(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            [f"{self.dst}\\_\\_drkit%"],
        )


@pytest.fixture
def box(
    pg_server: PgServer, make_policy: PolicyWriter, file_repo: RepoTarget, tmp_path: Path
) -> Iterator[Box]:
    suffix = uuid.uuid4().hex[:8]
    src, dst = f"pa_src_{suffix}", f"pa_dst_{suffix}"
    src_url = pg_server.create_database(src)
    with psycopg.connect(pg_server.dsn(src), autocommit=True) as conn:
        conn.execute(PEOPLE.encode())
    make_policy("prod", src_url, file_repo)
    policy_dir = make_policy("staging", pg_server.url(dst), file_repo)
    box = Box(pg_server, policy_dir, src, dst, tmp_path / "prod-to-staging.yaml")
    box.write_rules()
    yield box
    pg_server.drop_database(src)
    pg_server.drop_database(dst)


def assert_refused(result: Any, box: Box, *where: str, secret: str = EMAIL) -> None:
    """Exit 3 before publishing, naming ``where``, never showing the value."""
    assert result.code == 3, result.stderr
    shown = (result.stdout + result.stderr).lower()
    for place in where:
        assert place in result.stderr, result.stderr
    for fragment in (secret.lower(), secret.lower().split("@")[0]):
        assert fragment not in shown
    assert not box.dst_exists()
    assert box.leftovers() == []


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


# -- originals of masked columns in other spellings (the leak scan, content reviewed) --

REVIEWED = {
    "columns": {
        "id": "keep",
        "body": {"strategy": "keep", "pii": "none"},
        "doc": {"strategy": "keep", "pii": "none"},
        "blob": {"strategy": "keep", "pii": "none"},
    }
}

SPELLINGS: dict[str, tuple[str, Any]] = {
    "url-encoded": ("body", EMAIL.replace("@", "%40")),
    "html entity": ("body", EMAIL.replace("@", "&#64;")),
    "u-escape in text": ("body", EMAIL.replace("@", "\\u0040")),
    "python dict": ("body", repr({"email": EMAIL})),
    "multi-value": ("body", f"cc: a@b.org, {EMAIL}; x@y.org"),
    "fullwidth": ("body", fullwidth(EMAIL)),
    "nfd": ("body", "signed " + unicodedata.normalize("NFD", NFC_NAME)),
    "phone respelled": ("body", "ring 0039-347-1234567 tonight"),
    "phone national": ("body", "ring 347/123.45.67"),
    "char(n) original": ("body", f"ticket {CODE} closed"),
    "json number": ("doc", json.dumps({"acct": int(ACCOUNT)})),
    "split by a space": ("body", "giulia. romano77 @ customer-one. com"),
    "name split": ("body", "JürgenWeiß"),
    "base64": ("body", base64.b64encode(EMAIL.encode()).decode()),
    "hex": ("body", EMAIL.encode().hex()),
    "quoted-printable": ("body", quopri.encodestring(EMAIL.encode()).decode().replace("@", "=40")),
    "gzip bytea": ("blob", gzip.compress(EMAIL.encode())),
    "base64 gzip": ("body", base64.b64encode(gzip.compress(EMAIL.encode())).decode()),
}


# every spelling from the live source; the backup's read path with three of them
CASES = [(s, "live") for s in sorted(SPELLINGS)] + [
    (s, "backup") for s in ("url-encoded", "gzip bytea", "split by a space")
]


@pytest.mark.parametrize(("spelling", "source"), CASES)
def test_an_original_in_another_spelling_in_a_kept_column_is_a_leak(
    run_drkit: DrkitRunner, box: Box, spelling: str, source: str
) -> None:
    column, value = SPELLINGS[spelling]
    if column == "doc":
        box.src_sql("UPDATE memo SET doc = %s::jsonb", [value])
    else:
        box.src_sql(f"UPDATE memo SET {column} = %s", [value])  # a column of this file
    box.write_rules(REVIEWED)
    result = box.run(run_drkit, source)
    assert_refused(result, box, f"public.memo.{column}")
    assert "original values" in result.stderr


# -- personal data by content, in columns the rules keep --------------------------------

CONTENT = {
    "email": "please write to someone.else@partner.example.org",
    "phone": "caller +44 20 7946 0958",
    "iban": "refund to DE89 3704 0044 0532 0130 00",
    "card": "paid with 4111-1111-1111-1111",
    "ip": "login from 203.0.113.77",
    "secret": "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_Xg",
}


@pytest.mark.parametrize(
    ("kind", "source"),
    [(k, "live") for k in sorted(CONTENT)] + [("email", "backup"), ("secret", "backup")],
)
def test_personal_data_no_rule_names_fails_the_run_by_kind(
    run_drkit: DrkitRunner, box: Box, kind: str, source: str
) -> None:
    box.src_sql("UPDATE memo SET body = %s", [CONTENT[kind]])
    result = box.run(run_drkit, source)
    assert_refused(result, box, f"public.memo.body: {kind} 1", secret=CONTENT[kind].split()[-1])


@pytest.mark.parametrize("source", ["live", "backup"])
def test_what_replace_pii_was_not_told_to_replace_is_found_in_its_output(
    run_drkit: DrkitRunner, box: Box, source: str
) -> None:
    box.src_sql("UPDATE memo SET body = 'mail a.b@partner.example.org or call +44 20 7946 0958'")
    box.write_rules(
        {
            "columns": {
                "id": "keep",
                "body": {"strategy": "replace_pii", "kinds": ["email"]},
                "doc": "keep",
                "blob": "keep",
            }
        }
    )
    result = box.run(run_drkit, source)
    assert_refused(result, box, "public.memo.body: phone 1", secret="7946 0958")
    assert "email" not in result.stderr.split("public.memo.body:")[1].split(";")[0]


def test_a_review_accepts_a_column_and_the_copy_goes_through(
    run_drkit: DrkitRunner, box: Box
) -> None:
    box.src_sql("UPDATE memo SET body = %s", ["ops contact: noc@partner.example.org"])
    box.write_rules(
        {
            "columns": {
                "id": "keep",
                "body": {"strategy": "keep", "pii": "none"},
                "doc": "keep",
                "blob": "keep",
            }
        }
    )
    result = box.run(run_drkit, "live")
    assert result.code == 0, result.stderr
    assert box.pg.query(box.dst, "SELECT body FROM memo") == [
        ("ops contact: noc@partner.example.org",)
    ]


def test_a_kept_inet_column_is_an_ip_address(run_drkit: DrkitRunner, box: Box) -> None:
    box.src_sql(
        "ALTER TABLE memo ADD COLUMN seen_from inet; UPDATE memo SET seen_from = '10.9.8.7'"
    )
    memo = {
        "columns": {
            "id": "keep",
            "body": "keep",
            "doc": "keep",
            "blob": "keep",
            "seen_from": "keep",
        }
    }
    box.write_rules(memo)
    assert_refused(box.run(run_drkit, "live"), box, "public.memo.seen_from: ip 1")


# -- names of masked people in free text -------------------------------------------------


@pytest.mark.parametrize("source", ["live", "backup"])
def test_a_masked_surname_in_free_text_is_found(
    run_drkit: DrkitRunner, box: Box, source: str
) -> None:
    box.src_sql("UPDATE memo SET body = 'Callback: Mrs. Johnson asked about her invoice'")
    result = box.run(run_drkit, source)
    assert_refused(result, box, "public.memo.body: name 1", secret="Johnson")


# -- copy: true tables, pins and --dry-run -------------------------------------------------


def test_a_column_added_before_drkit_met_a_copy_table_is_scanned_and_not_pinned(
    run_drkit: DrkitRunner, box: Box
) -> None:
    box.src_sql(
        "CREATE TABLE vendor (id int PRIMARY KEY, name text, contact text);"
        "INSERT INTO vendor VALUES (1, 'Acme', 'sales: jane.doe@acme-corp.com')"
    )
    box.write_rules(vendor={"copy": True})
    before = box.rules.read_text()
    result = box.run(run_drkit, "live")
    assert_refused(result, box, "public.vendor.contact: email 1", secret="jane.doe@acme-corp.com")
    assert box.rules.read_text() == before  # never pinned into the rules


def test_dry_run_writes_nothing_not_even_a_pin(run_drkit: DrkitRunner, box: Box) -> None:
    box.src_sql("CREATE TABLE vendor (id int PRIMARY KEY, name text)")
    box.write_rules(vendor={"copy": True})
    before = box.rules.read_text()
    result = box.run(run_drkit, "live", "--dry-run")
    assert result.code == 0, result.stderr
    assert box.rules.read_text() == before
    assert not box.dst_exists()


def test_a_clean_first_run_pins_the_copy_table(run_drkit: DrkitRunner, box: Box) -> None:
    box.src_sql(
        "CREATE TABLE vendor (id int PRIMARY KEY, name text); INSERT INTO vendor VALUES (1, 'Acme')"
    )
    box.write_rules(vendor={"copy": True})
    result = box.run(run_drkit, "live")
    assert result.code == 0, result.stderr
    pinned = yaml.safe_load(box.rules.read_text())["tables"]["vendor"]
    assert pinned == {"copy": True, "columns": ["id", "name"]}


# -- the server's log ---------------------------------------------------------------------


def server_log(box: Box) -> str:
    (data_dir,) = box.pg.query("postgres", "SHOW data_directory")[0]
    log = Path(str(data_dir)).parent / "server.log"
    assert log.exists(), f"the test server's log is not at {log}"
    return log.read_text(errors="replace")


@pytest.mark.parametrize("source", ["live", "backup"])
def test_a_row_the_build_rejects_never_echoes_an_original_into_the_log(
    run_drkit: DrkitRunner, box: Box, source: str
) -> None:
    marker = f"quoted-{uuid.uuid4().hex[:6]}"
    box.src_sql(
        "CREATE TABLE ticket (id int PRIMARY KEY, email text"
        " CHECK (id < 25 OR email LIKE '%@customer-one.com'), note text);"
        "INSERT INTO ticket SELECT i, 'p' || i || '@customer-one.com', 'fine' FROM generate_series(1, 30) i;"
        f"UPDATE ticket SET note = 'about {marker} {EMAIL}' WHERE id = 30"
    )
    box.write_rules(ticket={"columns": {"id": "keep", "email": "email", "note": "keep"}})
    result = box.run(run_drkit, source)
    assert_refused(result, box, "public.ticket.note")
    log = server_log(box)
    assert marker not in log and EMAIL not in log


# -- the catalog ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["live", "backup"])
@pytest.mark.parametrize(
    ("ddl", "place"),
    [
        (f"COMMENT ON SCHEMA public IS 'owner {EMAIL}'", "comment on schema public"),
        (
            f'ALTER TABLE memo ADD CONSTRAINT "{EMAIL}" CHECK (id > 0)',
            "constraint name on public.memo",
        ),
        (
            "ALTER TABLE memo ENABLE ROW LEVEL SECURITY;"
            f'CREATE POLICY "{EMAIL}" ON memo USING (true)',
            "policy name on public.memo",
        ),
        (
            f'CREATE STATISTICS "{EMAIL}" ON id, body FROM memo',
            "statistics name in schema public",
        ),
        (f'CREATE INDEX "{EMAIL}" ON memo (id)', "name in schema public"),
    ],
    ids=["public-comment", "constraint", "policy", "statistics", "index"],
)
def test_originals_in_the_catalogs_corners_are_found(
    run_drkit: DrkitRunner, box: Box, ddl: str, place: str, source: str
) -> None:
    box.src_sql(ddl)
    result = box.run(run_drkit, source)
    assert result.code == 3, result.stderr
    assert place in result.stderr or "name withheld" in result.stderr, result.stderr
    assert EMAIL not in result.stderr + result.stdout
    assert not box.dst_exists()


@pytest.mark.parametrize("source", ["live", "backup"])
def test_a_dblink_view_with_credentials_never_reaches_the_target(
    run_drkit: DrkitRunner, box: Box, source: str
) -> None:
    password = "Fdw-Pa55-" + uuid.uuid4().hex[:8]
    box.src_sql("CREATE EXTENSION IF NOT EXISTS dblink")
    box.src_sql(
        "CREATE VIEW live_people AS SELECT * FROM dblink("
        f"'host=127.0.0.1 dbname={box.src} user=reader password={password}',"
        " 'SELECT email FROM person') AS t(email text)"
    )
    result = box.run(run_drkit, source)
    assert result.code == 3, result.stderr
    assert "view public.live_people" in result.stderr
    assert password not in result.stdout + result.stderr
    assert not box.dst_exists()
    assert box.leftovers() == []


# -- sanitize scan -------------------------------------------------------------------------


def test_sanitize_scan_lists_columns_kinds_and_counts_and_drafts_rules(
    run_drkit: DrkitRunner, box: Box, tmp_path: Path
) -> None:
    box.src_sql(
        "INSERT INTO memo VALUES (2, 'call +44 20 7946 0958 or mail x.y@partner.example.org',"
        " '{}', NULL), (3, 'Mrs. Johnson rang', '{}', NULL)"
    )
    before = box.rules.read_text()
    draft = tmp_path / "draft.yaml"
    result = run_drkit(
        "sanitize",
        "scan",
        "prod",
        "--rules",
        str(box.rules),
        "--json",
        "--write-draft",
        str(draft),
        policy_dir=box.policy_dir,
        env=ENV,
    )
    assert result.code == 3, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["draft"] == str(draft)
    assert doc["columns"]["public.memo.body"] == {"email": 1, "phone": 1, "name": 1}
    assert "x.y@partner" not in result.stdout + result.stderr
    assert box.rules.read_text() == before  # the rules file is never edited
    drafted = yaml.safe_load(draft.read_text())
    assert "body" in drafted["tables"]["memo"]["columns"]
    assert not box.dst_exists()


# -- no false alarm on the project's sample with the shipped rules ------------------------


def test_the_sample_with_the_shipped_rules_raises_no_false_alarm(
    run_drkit: DrkitRunner,
    envs: Env,
) -> None:
    """Versions like 1.2.3.4, CVE ids, product names, hostnames and URLs are public data."""
    src = envs.dsn(envs.src_name)
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("UPDATE product SET version = '1.2.3.4' WHERE id % 3 = 0")
        conn.execute("UPDATE product SET version = 'v10.0.19041.1' WHERE id % 3 = 1")
        conn.execute(
            "UPDATE vulnerability SET description = description"
            " || ' See https://nvd.nist.gov/vuln/detail/' || cve_id || ', fixed in 2.4.58.1.'"
        )
    rules = str(SHIPPED / "prod-to-staging.yaml")
    scanned = run_drkit(
        "sanitize",
        "scan",
        "prod",
        "--rules",
        rules,
        "--json",
        policy_dir=envs.policy_dir,
        env=HELPER_ENV,
    )
    assert scanned.code == 0, scanned.stderr
    assert json.loads(scanned.stdout)["columns"] == {}
    copied = sanitize(run_drkit, envs, "prod", "staging", "--rules", rules, "--json")
    assert copied.code == 0, copied.stderr
    leak = json.loads(copied.stdout)["leak_scan"]
    assert leak["clean"] and leak["pii"] == {} and leak["rows_scanned"] > 1000
