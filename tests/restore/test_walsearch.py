"""``drkit wal-search`` against real archived WAL.

Every transaction the test commits records its own ID (``pg_current_xact_id()``); the
search must name exactly those, with their operations and row counts, for DELETE,
UPDATE, TRUNCATE and DROP, through rewrites (ALTER TABLE ... TYPE, VACUUM FULL) and
across a timeline switch, and the flags it prints must restore to just before the
transaction.  Noise on another table must never show.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from drkit.catalog import list_backups
from drkit.restore.walsearch import choose_anchor
from tests.fix_cli import DrkitRunner, valid
from tests.wal_support import (
    Archived,
    archived_cluster,
    file_repo_block,
    has_wal,
    repo_of,
    restored_dsn,
    shared_dir,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def file_archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


def commit(arch: Archived, *statements: str, dsn: str | None = None) -> int:
    """Run ``statements`` in one transaction; returns its ID."""
    with psycopg.connect(dsn or arch.dsn(), autocommit=False) as conn:
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def search(run_drkit: DrkitRunner, arch: Archived, *args: str) -> Any:
    return run_drkit(
        "wal-search", arch.env, "--table", "public.t", *args, policy_dir=arch.policy_dir
    )


def found(result: Any) -> dict[int, dict[str, int]]:
    assert result.code == 0, result.stderr
    return {t["xid"]: t["operations"] for t in result.json()["transactions"]}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_wal_search_follows_the_table(file_archived: Archived, run_drkit: DrkitRunner) -> None:
    arch = file_archived
    arch.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    arch.execute("CREATE TABLE u (id int PRIMARY KEY)")
    arch.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g")
    backup = run_drkit("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr

    ins = commit(arch, "INSERT INTO t VALUES (11, 'a'), (12, 'b')")
    commit(arch, "INSERT INTO u SELECT generate_series(1, 50)")  # noise: another table
    delete = commit(arch, "DELETE FROM t WHERE id <= 3")
    update = commit(arch, "UPDATE t SET v = 'y' WHERE id > 10")
    saved = commit(arch, "SAVEPOINT s", "DELETE FROM t WHERE id = 4", "RELEASE SAVEPOINT s")
    commit(arch, "SAVEPOINT s", "DELETE FROM t WHERE id = 5", "ROLLBACK TO SAVEPOINT s")
    with psycopg.connect(arch.dsn()) as conn:  # aborted: never listed
        conn.execute("DELETE FROM t WHERE id = 6")
        conn.rollback()
    truncate = commit(arch, "TRUNCATE t", "INSERT INTO t VALUES (1, 'p')")
    copied = commit(arch, "INSERT INTO t SELECT g, 'q' FROM generate_series(2, 6) g")
    with psycopg.connect(arch.dsn()) as conn:  # COPY: heap MULTI_INSERT records
        with conn.cursor().copy("COPY t (id, v) FROM STDIN") as copy:
            for key in range(100, 110):
                copy.write_row((key, "c"))
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        conn.commit()
    assert row is not None
    bulk = int(row[0])
    alter = commit(arch, "ALTER TABLE t ALTER COLUMN v TYPE varchar(20)")
    after_alter = commit(arch, "DELETE FROM t WHERE id = 1")
    arch.execute("VACUUM FULL t")
    after_vacuum = commit(arch, "UPDATE t SET v = 'z' WHERE id = 2")
    commit(arch, "TRUNCATE u")  # another table's rewrite: never the table's
    after_u = commit(arch, "DELETE FROM t WHERE id = 3")
    arch.switch_and_wait(has_wal(arch))

    result = search(run_drkit, arch, "--json")
    doc = valid("wal-search", result)
    got = found(result)
    rewrites = [x for x, ops in got.items() if ops == {"rewrite": 1}]
    assert got == {
        ins: {"insert": 2},
        delete: {"delete": 3},
        update: {"update": 2},
        saved: {"delete": 1},
        truncate: {"insert": 1, "truncate": 1},
        copied: {"insert": 5},
        bulk: {"insert": 10},
        alter: {"rewrite": 1},
        after_alter: {"delete": 1},
        rewrites[-1]: {"rewrite": 1},  # VACUUM FULL: its own transaction
        after_vacuum: {"update": 1},
        after_u: {"delete": 1},
    }
    assert len(rewrites) == 2 and alter < rewrites[-1] < after_vacuum
    assert doc["database"] == "postgres" and doc["dropped_by"] is None
    assert len(doc["relfilenodes"]) == 4  # the catalog's, then TRUNCATE, ALTER, VACUUM FULL
    row = next(t for t in doc["transactions"] if t["xid"] == delete)
    assert row["restore_flags"] == f"--target-xid {delete} --exclusive"
    assert row["timeline"] == 1 and row["first_lsn"] <= row["commit_lsn"]

    only = found(search(run_drkit, arch, "--op", "delete", "--json"))
    assert sorted(only) == [delete, saved, after_alter, after_u]
    human = search(run_drkit, arch, "--op", "truncate")
    assert human.code == 0, human.stderr
    assert f"--target-xid {truncate} --exclusive" in human.stdout

    # the printed flags restore to just before the DELETE: all 12 rows, as the new primary
    pgdata = arch.new_pgdata()
    restored = run_drkit(
        "restore",
        arch.env,
        *row["restore_flags"].split(),
        "--pgdata",
        str(pgdata),
        "--archive-mode",
        "preserve",
        "--json",
        policy_dir=arch.policy_dir,
        timeout=600,
    )
    assert restored.code == 0, restored.stderr
    dsn2 = restored_dsn(arch, restored.json()["port"])
    assert arch.execute("SELECT count(*), max(v) FROM t", dsn2) == [(12, "x")]

    # timeline 2: the search follows production's new timeline, through the switch, and
    # leaves out what timeline 1 did after it
    on_two = commit(arch, "DELETE FROM t WHERE id > 8", dsn=dsn2)
    dropped = commit(arch, "DROP TABLE t", dsn=dsn2)
    arch.switch_and_wait(has_wal(arch), dsn2)
    assert repo_of(arch).get_json("timeline.json")["timeline"] == 2
    result = search(run_drkit, arch, "--json")
    assert found(result) == {ins: {"insert": 2}, on_two: {"delete": 4}, dropped: {"drop": 1}}
    doc = result.json()
    assert doc["timeline"] == 2 and doc["dropped_by"] == dropped
    timelines = {t["xid"]: t["timeline"] for t in doc["transactions"]}
    assert timelines == {ins: 1, on_two: 2, dropped: 2}
    assert found(search(run_drkit, arch, "--op", "drop", "--json")) == {dropped: {"drop": 1}}


def test_wal_search_refuses_what_it_cannot_know(
    file_archived: Archived, run_drkit: DrkitRunner
) -> None:
    arch = file_archived
    arch.execute("CREATE TABLE t (id int PRIMARY KEY)")
    arch.execute("CREATE TABLE u (id int PRIMARY KEY)")
    backup = run_drkit("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr

    missing = run_drkit(
        "wal-search", arch.env, "--table", "public.nope", policy_dir=arch.policy_dir
    )
    assert missing.code == 3 and "public.nope" in one_line(missing.stderr)
    bare = run_drkit("wal-search", arch.env, "--table", "t", policy_dir=arch.policy_dir)
    assert bare.code == 2 and "schema.name" in one_line(bare.stderr)
    naive = search(run_drkit, arch, "--since", "2026-01-01 10:00:00")
    assert naive.code == 2, naive.stderr
    early = search(run_drkit, arch, "--since", "2000-01-01T00:00:00Z")  # before any catalog
    assert early.code == 3 and "cannot be searched" in one_line(early.stderr)

    # one TRUNCATE of two tables: which new file is the table's is not knowable here,
    # even when the other table's file is no longer the one the catalog recorded
    arch.execute("VACUUM FULL u")
    both = commit(arch, "TRUNCATE u, t")
    arch.switch_and_wait(has_wal(arch))
    ambiguous = search(run_drkit, arch)
    assert ambiguous.code == 3
    assert f"transaction {both}" in one_line(ambiguous.stderr)

    # a backup taken before drkit recorded a relation catalog cannot anchor a search
    manifests = list_backups(repo_of(arch), "physical")
    for manifest in manifests:
        manifest.extra.pop("relations")
    with pytest.raises(Exception, match="records a relation catalog"):
        choose_anchor(manifests, None)


#: pg_waldump lines of PostgreSQL 16+ (their "key: value" descriptions), as PostgreSQL 18
#: printed them: a DELETE, an UPDATE, a TRUNCATE whose new heap is written in the same
#: transaction, a COPY (MULTI_INSERT), a subtransaction's DELETE, an aborted DELETE, then DROP TABLE
PG18_LINES = [
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        755, lsn: 0/016F3800, prev 0/016F37D8, desc: DELETE xmax: 755, off: 1, infobits: [KEYS_UPDATED], flags: 0x00, blkref #0: rel 1663/5/16384 blk 0",
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        755, lsn: 0/016F3838, prev 0/016F3800, desc: DELETE xmax: 755, off: 2, infobits: [KEYS_UPDATED], flags: 0x00, blkref #0: rel 1663/5/16384 blk 0",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        755, lsn: 0/016F38A8, prev 0/016F3870, desc: COMMIT 2026-12-07 05:18:53.308627 UTC",
    "rmgr: Heap        len (rec/tot):     69/    69, tx:        756, lsn: 0/016F38D0, prev 0/016F38A8, desc: HOT_UPDATE old_xmax: 756, old_off: 9, old_infobits: [], flags: 0x20, new_xmax: 0, new_off: 11, blkref #0: rel 1663/5/16384 blk 0",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        756, lsn: 0/016F3960, prev 0/016F3918, desc: COMMIT 2026-12-07 05:18:53.318955 UTC",
    "rmgr: Storage     len (rec/tot):     42/    42, tx:        757, lsn: 0/016F39B8, prev 0/016F3988, desc: CREATE base/5/16392",
    "rmgr: Storage     len (rec/tot):     42/    42, tx:        757, lsn: 0/016F3B58, prev 0/016F3B28, desc: CREATE base/5/16393",
    "rmgr: Heap        len (rec/tot):     61/    61, tx:        757, lsn: 0/016F4000, prev 0/016F3B58, desc: INSERT+INIT off: 1, flags: 0x00, blkref #0: rel 1663/5/16392 blk 0",
    "rmgr: Transaction len (rec/tot):    361/   361, tx:        757, lsn: 0/016F4130, prev 0/016F40A0, desc: COMMIT 2026-12-07 05:18:53.327770 UTC; rels: base/5/16390 base/5/16384; inval msgs: catcache 57",
    "rmgr: Heap2       len (rec/tot):    300/   300, tx:        758, lsn: 0/016F4200, prev 0/016F4130, desc: MULTI_INSERT+INIT ntuples: 10, flags: 0x02, blkref #0: rel 1663/5/16392 blk 1",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        758, lsn: 0/016F4300, prev 0/016F4200, desc: COMMIT 2026-12-07 05:18:53.328000 UTC",
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        760, lsn: 0/016F5028, prev 0/016F4FE8, desc: DELETE xmax: 760, off: 6, infobits: [KEYS_UPDATED], flags: 0x00, blkref #0: rel 1663/5/16392 blk 0",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        759, lsn: 0/016F5100, prev 0/016F5028, desc: COMMIT 2026-12-07 05:18:53.330000 UTC; subxacts: 760",
    "rmgr: Heap        len (rec/tot):     54/    54, tx:        761, lsn: 0/016F5200, prev 0/016F5100, desc: DELETE xmax: 761, off: 7, infobits: [KEYS_UPDATED], flags: 0x00, blkref #0: rel 1663/5/16392 blk 0",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:        761, lsn: 0/016F5300, prev 0/016F5200, desc: ABORT 2026-12-07 05:18:53.331000 UTC",
    "rmgr: Transaction len (rec/tot):    685/   685, tx:        762, lsn: 0/016F5400, prev 0/016F5300, desc: COMMIT 2026-12-07 05:18:53.332000 UTC; rels: base/5/16392 base/5/16393; dropped stats: 2/5/16389 2/5/16384; inval msgs: catcache 32",
]


def test_follower_reads_postgresql_16_descriptions() -> None:
    from drkit.restore.walsearch import Follower, Relation, TableRef

    ref = TableRef("app", 5, Relation(16384, 16384, "public.t", "r", 0), "0/16F0000", frozenset())
    follower = Follower(ref, 750, lambda lsn: 1)
    for line in PG18_LINES:
        follower.feed(line)
    assert {f.xid: f.operations for f in follower.found} == {
        755: {"delete": 2},
        756: {"update": 1},
        757: {"insert": 1, "truncate": 1},
        758: {"insert": 10},
        759: {"delete": 1},
        762: {"drop": 1},
    }
    assert follower.files == [(16384, None), (16392, 757)] and follower.dropped_by == 762


def test_the_document_is_what_the_follower_found_every_key_written() -> None:
    """``wal-search --json`` is the search's own document: a null (no drop, a file from
    the catalog) is written, never left out as a default nobody set."""
    from drkit.documents import dump
    from drkit.restore.walsearch import (
        Follower,
        Relation,
        SearchResult,
        TableRef,
        WalSearchDocument,
    )

    ref = TableRef("app", 5, Relation(16384, 16384, "public.t", "r", 0), "0/16F0000", frozenset())
    follower = Follower(ref, 750, lambda lsn: 1)
    for line in PG18_LINES[:3]:  # two rows deleted, committed; nothing dropped
        follower.feed(line)
    result = SearchResult("prod", "public.t", "app", "B1", 1, "0/16F0000", "0/2000000", 1)
    result.transactions, result.files = follower.found, follower.files
    document = result.document()
    assert isinstance(document, WalSearchDocument)
    doc = dump(document)
    assert doc["environment"] == "prod" and doc["dropped_by"] is None
    assert doc["relfilenodes"] == [{"relfilenode": 16384, "since_xid": None}]
    (found,) = doc["transactions"]
    assert found["committed_at"].endswith("Z") and found["operations"] == {"delete": 2}
    assert found["restore_flags"] == f"--target-xid {found['xid']} --exclusive"
    assert set(found) == {
        "xid",
        "committed_at",
        "timeline",
        "first_lsn",
        "commit_lsn",
        "operations",
        "relfilenode",
        "restore_flags",
    }
