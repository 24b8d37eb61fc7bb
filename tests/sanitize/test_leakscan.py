"""The leak scan against real PostgreSQL: every hidden form of an original in the target
(data of every type, and the catalog) is reported by table/column or object, never by
value; a clean target is clean."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from drkit.errors import SafetyRefused
from drkit.sanitize.scan import LeakIndex, LeakReport, scan_database
from tests.fix_cli import DrkitRunner, Env
from tests.fix_pg import PgServer
from tests.sanitize.helpers import execute, rows, rules_doc, sanitize, write_rules

EMAIL = "Anna.Rossi77@Customer-One.com"
PHONE = "+1 555 0100 2233"
NAME = "Bartholomew Quince"
DIGITS = "4915550100223"
SECRET = "Secret-Pass-9981"
SHORT = "Zed9"
NON_ASCII = "Jürgen Weiß-Öztürk"
ORIGINALS = [EMAIL, PHONE, NAME, DIGITS, SECRET, SHORT, NON_ASCII, "ab", "Generated Name"]


@pytest.fixture
def target(pg_server: PgServer) -> Iterator[str]:
    name = "t_leak_" + uuid.uuid4().hex[:8]
    url = pg_server.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION hstore")
        conn.execute("CREATE EXTENSION citext")
    yield url
    pg_server.drop_database(name)


def scan(url: str, originals: list[str] | None = None) -> LeakReport:
    index = LeakIndex()
    index.add_many(ORIGINALS if originals is None else originals)
    searcher = index.searcher({"Generated Name"})
    with psycopg.connect(url, autocommit=True) as conn:
        return scan_database(conn, searcher)


def test_every_hidden_form_in_the_data_is_found_by_column(target: str) -> None:
    lower = EMAIL.lower()
    escaped = "".join(f"\\u{ord(c):04x}" if c in "@." else c for c in EMAIL)
    execute(
        target,
        "CREATE TYPE contact AS (label text, phone text)",
        "CREATE DOMAIN mailaddr AS text",
        f"CREATE TYPE who AS ENUM ('nobody', '{NAME}')",
        "CREATE TABLE clean (id int PRIMARY KEY, note text, doc jsonb, code text)",
        "INSERT INTO clean VALUES (1, 'nothing here', '{\"a\": \"b\"}', 'Zed99 Zed9x')",
        "CREATE TABLE forms ("
        " id int, upper_text text, glued varchar(200), json_escaped json, json_key json,"
        " jsonb_key jsonb, raw bytea, comp contact, comp_arr contact[], hs hstore,"
        " hs_arr hstore[], tsv tsvector, tsv_arr tsvector[], txt_arr text[], dom mailaddr,"
        " enum_val who, num bigint, ci citext, fixed char(40), doc xml, short_tok text,"
        " accents text, json_in_text text)",
        "INSERT INTO forms (id) VALUES (1)",
        f"UPDATE forms SET upper_text = 'contact {EMAIL.upper()} today'",
        f"UPDATE forms SET glued = 'report_{lower}_2024.csv'",
        f'UPDATE forms SET json_escaped = \'{{"who": "{escaped}"}}\'',
        f"UPDATE forms SET json_key = '{{\"{escaped}\": 1}}'",
        f'UPDATE forms SET jsonb_key = \'{{"{lower}": {{"x": 1}}}}\'',
        f"UPDATE forms SET raw = convert_to('file of {NAME}', 'UTF8')",
        f"UPDATE forms SET comp = ROW('home', '{PHONE}')::contact",
        f"UPDATE forms SET comp_arr = ARRAY[ROW('a \"q\"', 'x {PHONE}')::contact]",
        f"UPDATE forms SET hs = 'owner=>\"{NAME}\"'",
        f"UPDATE forms SET hs_arr = ARRAY['k=>\"{SECRET}\"'::hstore]",
        f"UPDATE forms SET tsv = to_tsvector('simple', 'mail {lower}')",
        f"UPDATE forms SET tsv_arr = ARRAY[to_tsvector('simple', 'mail {lower}')]",
        f"UPDATE forms SET txt_arr = ARRAY['x', 'call {PHONE}']",
        f"UPDATE forms SET dom = '{EMAIL}'",
        f"UPDATE forms SET enum_val = '{NAME}'",
        f"UPDATE forms SET num = {DIGITS}",
        f"UPDATE forms SET ci = '{SECRET}'",
        f"UPDATE forms SET fixed = '{SECRET}'",
        f"UPDATE forms SET doc = '<p>{NAME}</p>'",
        f"UPDATE forms SET short_tok = 'code {SHORT.lower()}.'",
        f"UPDATE forms SET accents = '{NON_ASCII.upper()}'",
        f'UPDATE forms SET json_in_text = \'{{"to": "{escaped}"}}\'',
    )
    report = scan(target)
    expected = {
        "upper_text",
        "glued",
        "json_escaped",
        "json_key",
        "jsonb_key",
        "raw",
        "comp",
        "comp_arr",
        "hs",
        "hs_arr",
        "tsv",
        "tsv_arr",
        "txt_arr",
        "dom",
        "enum_val",
        "num",
        "ci",
        "fixed",
        "doc",
        "short_tok",
        "accents",
        "json_in_text",
    }
    data_hits = {k: v for k, v in report.hits.items() if k.startswith("public.")}
    assert set(data_hits) == {f"public.forms.{c}" for c in expected}
    assert all(count == 1 for count in data_hits.values())
    assert report.rows_scanned >= 2
    shown = str(report.document())
    for value in ORIGINALS[:7]:
        assert value.lower() not in shown.lower()


def test_the_catalog_is_searched_and_named_by_object(target: str) -> None:
    lower = EMAIL.lower()
    execute(
        target,
        "CREATE SCHEMA app",
        "CREATE TABLE app.t (id int PRIMARY KEY, note text)",
        f"COMMENT ON TABLE app.t IS 'owner {EMAIL}'",
        f"COMMENT ON COLUMN app.t.note IS 'ask {NAME}'",
        f"COMMENT ON SCHEMA app IS 'team of {NAME}'",
        f"ALTER TABLE app.t ADD COLUMN phone text DEFAULT '{PHONE}'",
        f"ALTER TABLE app.t ADD CONSTRAINT no_boss CHECK (note <> '{NAME}')",
        f"CREATE VIEW app.v AS SELECT id FROM app.t WHERE note <> '{lower}'",
        f"CREATE MATERIALIZED VIEW app.mv AS SELECT '{SECRET}'::text AS s",
        f"CREATE FUNCTION app.f() RETURNS text LANGUAGE sql AS $$ SELECT '{PHONE}' $$",
        f"CREATE PROCEDURE app.p() LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE '{EMAIL}'; END $$",
        "CREATE FUNCTION app.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        f"CREATE TRIGGER tg BEFORE INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.trg('{NAME}')",
        "ALTER TABLE app.t ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY pol ON app.t USING (note <> '{DIGITS}')",
        "CREATE FOREIGN DATA WRAPPER nowhere",
        f"CREATE SERVER srv FOREIGN DATA WRAPPER nowhere OPTIONS (host '{lower}')",
        f"CREATE USER MAPPING FOR CURRENT_USER SERVER srv OPTIONS (password '{SECRET}')",
        f"CREATE INDEX partial ON app.t (id) WHERE note <> '{NON_ASCII}'",
    )
    report = scan(target)
    kinds = {key.split(" ", 1)[0] for key in report.hits if not key.startswith("app.")}
    assert report.hits.get("app.mv.s") == 1
    # every object kind is named, and nothing else is
    assert kinds == {
        "comment",
        "default",
        "constraint",
        "view",
        "function",
        "trigger",
        "policy",
        "server",
        "user-mapping",
        "index",
    }, report.hits
    assert report.hits["comment on table app.t"] == 1
    assert report.hits["comment on column note of table app.t"] == 1
    assert report.hits["comment on schema app"] == 1
    assert report.hits["default of app.t.phone"] == 1
    assert report.hits["view app.v"] == 1
    assert report.hits["view app.mv"] == 1
    assert report.hits["function app.f()"] == 1
    assert report.hits["function app.p()"] == 1
    assert report.hits["trigger tg on app.t"] == 1
    assert report.hits["policy pol on app.t"] == 1
    assert report.hits["constraint no_boss on app.t"] == 1
    assert report.hits["server srv"] == 1
    assert report.hits["index app.partial"] == 1
    assert [k for k in report.hits if k.startswith("user-mapping")] != []
    for value in ORIGINALS[:7]:
        assert value.lower() not in str(report.document()).lower()


def test_a_clean_target_is_clean(target: str) -> None:
    execute(
        target,
        "CREATE TYPE contact AS (label text, phone text)",
        "CREATE TABLE people (id int PRIMARY KEY, name text, mail text, doc jsonb,"
        " c contact, raw bytea, tags text[], n bigint)",
        # pseudonyms, near misses, a generated value, short and tiny originals inside words
        "INSERT INTO people VALUES (1, 'Generated Name', 'user-1@example.com',"
        ' \'{"anna.rossi78@customer-one.com": "Bartholomew Quincy"}\','
        " ROW('home', '+1 555 0100 2234'), '\\xdeadbeef', ARRAY['Zed99', 'xZed9', 'ab'],"
        " 491555010022)",
        "COMMENT ON TABLE people IS 'sanitized copy'",
        "CREATE VIEW v AS SELECT name FROM people WHERE name <> 'Generated Name'",
    )
    report = scan(target)
    assert report.clean, report.hits
    assert report.hits == {}
    assert report.ambiguous == 2  # the generated value's folded and compact forms
    assert report.columns_scanned >= 8


def test_large_objects_are_searched(target: str) -> None:
    execute(target, f"SELECT lo_from_bytea(0, convert_to('memo for {NAME}', 'UTF8'))")
    report = scan(target)
    assert [k for k in report.hits if k.startswith("large-object")] != [], report.hits


def test_long_originals_and_many_of_them_are_found(target: str) -> None:
    long_value = "Dear customer, " + "x" * 200 + " regards Maria"
    many = [f"person{i:07d}@corp.example" for i in range(200_000)]
    execute(
        target,
        "CREATE TABLE notes (body text)",
        f"INSERT INTO notes VALUES ('{long_value.upper()}'), ('fyi PERSON0123456@CORP.EXAMPLE')",
        "INSERT INTO notes SELECT 'person' || lpad(g::text, 7, '0') || '@corp.example.org'"
        " FROM generate_series(200000, 260000) g",
    )
    report = scan(target, [long_value, *many])
    assert report.hits == {"public.notes.body": 2}
    assert report.originals >= 190_000


def test_sanitize_fails_on_hidden_originals_and_names_where(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    """End to end: an e-mail upper-cased and glued into a kept column, and quoted in a
    comment that travels with the schema, fail the run with exit 3, named, never shown."""
    src = envs.dsn(envs.src_name)
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    (victim,) = rows(src, 'SELECT email FROM "user" WHERE id = 7')[0]
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(
            "UPDATE product SET version = %s WHERE id = 1", [f"report_{victim.upper()}_2024.csv"]
        )
        conn.execute(
            sql.SQL("COMMENT ON TABLE product IS {}").format(sql.Literal(f"owner: {victim}"))
        )
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--json")
    assert result.code == 3, result.stderr
    assert "public.product.version: 1" in result.stderr
    assert "comment on table public.product: 1" in result.stderr
    assert victim.lower() not in (result.stderr + result.stdout).lower()
    # built aside and dropped: the target database never received a row
    dst = envs.dsts["staging"]
    published = envs.pg.query("postgres", "SELECT 1 FROM pg_database WHERE datname = %s", [dst])
    leftovers = envs.pg.query(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{dst}__drkit%"]
    )
    assert not published and not leftovers


def test_row_level_security_that_could_hide_rows_is_refused(
    target: str, pg_server: PgServer
) -> None:
    role = "scan_" + uuid.uuid4().hex[:8]
    execute(
        target,
        f"CREATE ROLE {role} LOGIN PASSWORD 'scan-role-pw'",
        "CREATE TABLE secret (note text)",
        f"INSERT INTO secret VALUES ('{EMAIL}')",
        "ALTER TABLE secret ENABLE ROW LEVEL SECURITY",
        f"GRANT SELECT ON secret TO {role}",
    )
    try:
        index = LeakIndex()
        index.add_many([EMAIL])
        url = psycopg.conninfo.make_conninfo(target, user=role, password="scan-role-pw")
        with (
            psycopg.connect(url, autocommit=True) as conn,
            pytest.raises(SafetyRefused, match=r"public\.secret has row-level security"),
        ):
            scan_database(conn, index.searcher(set()))
    finally:
        execute(target, "DROP TABLE secret", f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_pending_originals_stay_bounded_while_another_thread_flushes() -> None:
    """With ``--jobs 2`` one table's thread flushes while the other keeps adding.  A
    non-blocking flush that just gives up let the list grow with the table (sanitize's
    memory rose with database size); past a bound the adder must wait its turn."""
    import threading
    import time

    from drkit.sanitize.scan import leakscan

    index = LeakIndex()
    batches: list[int] = []
    real_add = index._filter.add

    def slow_add(forms: list[bytes]) -> None:
        batches.append(len(forms) // 2)  # each original: its folded and its compact form
        time.sleep(0.05)  # a flush far slower than the other thread's appends
        real_add(forms)

    index._filter.add = slow_add  # type: ignore[method-assign]
    per_thread = 400 * 1000  # whole chunks of 1000, six times the batch

    def feed(tag: str) -> None:
        for start in range(0, per_thread, 1000):
            index.add_many(f"{tag}-original-{i:08d}" for i in range(start, start + 1000))

    threads = [threading.Thread(target=feed, args=(t,)) for t in ("alpha", "bravo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    searcher = index.searcher(set())
    # each thread may add one chunk of its own past the bound before it waits
    assert max(batches) <= leakscan.MAX_PENDING + 2 * 1000
    # nothing was lost on the way: every value of both threads reached the filter
    assert sum(batches) == 2 * per_thread
    edges = {f"{t}-original-{i:08d}".encode() for t in ("alpha", "bravo") for i in (0, 1)}
    edges |= {f"{t}-original-{per_thread - 1:08d}".encode() for t in ("alpha", "bravo")}
    found, _ = searcher.filter.confirm(edges, set())
    assert found == edges


def test_the_scan_document_is_the_reports_own_kinds_and_counts_only() -> None:
    """``sanitize scan --json`` is what the scan's report says, with the draft named only
    when one was written; a scan that found nothing still writes every key."""
    from drkit.documents import dump
    from drkit.sanitize import Report

    report = Report("prod", "staging", "rules.yaml", "live", "scan-only")
    assert dump(report.scan_document()) == {
        "ok": True,
        "src": "prod",
        "rules": "rules.yaml",
        "columns": {},
        "originals": {},
        "rows_scanned": 0,
        "draft": None,
    }
    report.leak = LeakReport(
        rows_scanned=7, hits={"public.u.email": 2}, pii={"public.m.b": {"phone": 1}}
    )
    found = dump(report.scan_document(draft=Path("draft.yaml")))
    assert found["columns"] == {"public.m.b": {"phone": 1}}
    assert found["originals"] == {"public.u.email": 2}
    assert found["rows_scanned"] == 7 and found["draft"] == "draft.yaml"


_REPEATS = ["Marco Rossi", " Marco Rossi ", "anna%40corp.example", "+39 347 123 4567", "10.0.0.5"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(_REPEATS) | st.text(st.characters(blacklist_characters="\x00")),
        max_size=60,
    )
)
def test_repeated_originals_reach_the_filter_in_every_form(values: list[str]) -> None:
    """Originals repeat (a first name in every other row): the index spells each one
    once, but the filter is still handed every form of every original, across batches
    and past the bound of what it remembers."""
    from drkit.sanitize.scan import leakscan

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(leakscan, "_BATCH", 7)
        patch.setattr(leakscan, "_RECENT", 5)
        index = LeakIndex()
        handed: set[bytes] = set()
        real_add = index._filter.add

        def spy(forms: list[bytes]) -> None:
            handed.update(forms)
            real_add(forms)

        index._filter.add = spy  # type: ignore[method-assign]
        for value in values:
            index.add(value)
        index.searcher(set())
    assert handed == set(leakscan.canonical_forms(values))
