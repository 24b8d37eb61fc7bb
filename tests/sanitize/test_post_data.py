"""The copy's DDL after its rows is SRC's, entry for entry: keys, exclusion and
deferrable constraints, partial and partitioned indexes (a partition's attached to its
parent's), comments on indexes, foreign keys, and the indexes of a table whose rows
are not copied."""

from __future__ import annotations

from pathlib import Path

from tests.fix_cli import DrkitRunner, Env
from tests.sanitize.helpers import (
    assert_constraints_hold,
    execute,
    rows,
    rules_doc,
    sanitize,
    write_rules,
)

#: SRC's DDL beyond the sample: a partitioned table with a key and an index (its
#: partitions' indexes attach to the parent's), an exclusion constraint, a deferrable
#: unique key, a partial index with a comment, a foreign key, and a table
#: whose rows are not copied (its indexes come all the same)
EXTRA_DDL = (
    "CREATE TABLE reading (id int, taken date NOT NULL, value int,"
    " PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken)",
    "CREATE TABLE reading_2025 PARTITION OF reading"
    " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE TABLE reading_2026 PARTITION OF reading"
    " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "CREATE INDEX reading_value ON reading (value)",
    "INSERT INTO reading SELECT g, DATE '2025-06-01' + g % 400, g % 7"
    " FROM generate_series(1, 2000) g",
    "CREATE TABLE booking (id int PRIMARY KEY, room int NOT NULL, during tsrange NOT NULL,"
    " EXCLUDE USING gist (during WITH &&))",
    "INSERT INTO booking SELECT g, g % 5, tsrange(TIMESTAMP '2026-01-01' + g * interval '1 h',"
    " TIMESTAMP '2026-01-01' + (g + 1) * interval '1 h') FROM generate_series(1, 500) g",
    "CREATE TABLE slot (code text, rank int,"
    " CONSTRAINT slot_code_key UNIQUE (code) DEFERRABLE INITIALLY DEFERRED)",
    "INSERT INTO slot SELECT 'c' || g, g FROM generate_series(1, 300) g",
    "CREATE INDEX slot_rank ON slot (rank DESC NULLS LAST) WHERE rank > 10",
    "COMMENT ON INDEX slot_rank IS 'the ranked slots'",
    "CREATE TABLE booking_note (booking_id int REFERENCES booking (id), slot text, note text)",
    "INSERT INTO booking_note SELECT g, 'c' || g, 'n' FROM generate_series(1, 200) g",
    "CREATE TABLE archive_only (id int PRIMARY KEY, at date)",
    "CREATE INDEX archive_only_at ON archive_only (at)",
    "INSERT INTO archive_only SELECT g, DATE '2020-01-01' + g FROM generate_series(1, 50) g",
)

DDL_QUERIES = (
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), condeferrable,"
    " condeferred, convalidated FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace AND contype <> 'n'",
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "SELECT i.indexrelid::regclass::text, i.indisvalid, i.indisready,"
    " obj_description(i.indexrelid, 'pg_class'),"
    " (SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = i.indexrelid)"
    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE c.relnamespace = 'public'::regnamespace",
)


def _ddl(dsn: str) -> list[set[tuple[object, ...]]]:
    return [set(rows(dsn, query)) for query in DDL_QUERIES]


def test_every_index_and_key_of_src_reaches_the_copy(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    src = envs.dsn(envs.src_name)
    execute(src, *EXTRA_DDL)
    doc = rules_doc()
    for table in ("reading_2025", "reading_2026", "booking", "slot", "booking_note"):
        doc["tables"][table] = {"copy": True}
    doc["tables"]["archive_only"] = {"rows": "none"}
    rules = write_rules(tmp_path / "rules.yaml", doc)
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--jobs", "2")
    assert result.code == 0, result.stderr
    dst = envs.dsn(envs.dsts["staging"])
    assert _ddl(dst) == _ddl(src)
    assert_constraints_hold(dst)
    assert rows(dst, "SELECT count(*) FROM reading") == [(2000,)]
    assert rows(dst, "SELECT count(*) FROM archive_only") == [(0,)]
    # the exclusion constraint and the deferred key hold in the copy
    assert rows(
        dst,
        "SELECT count(*) FROM booking a JOIN booking b ON a.id < b.id AND a.during && b.during",
    ) == [(0,)]
