"""Tables restored from a physical backup into the live database, against real WAL.

After the base backup (and a logical one), rows of ``orders`` are deleted and updated, one customer is
deleted, and ``notes`` is updated.  Each restore is checked by the rows it brings back,
by the live table's content and oid (untouched unless ``--force`` replaced it), and by
no scratch cluster being left: no directory in drkit's spool directory, no process, no
scratch database.  Each recovery goes to ``--immediate`` (the base backup's end).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drkit.errors import SafetyRefused, UsageError
from drkit.restore.documents import TableRestoreDocument
from drkit.restore.tables import free_name, guard_destinations, parse_choice
from tests.fix_cli import DrkitRunner
from tests.wal_support import Archived, archived_cluster, file_repo_block, has_wal, shared_dir

pytestmark = pytest.mark.slow

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    ref text NOT NULL UNIQUE,
    customer_id int NOT NULL REFERENCES customers (id),
    total int NOT NULL CHECK (total >= 0)
);
CREATE INDEX orders_total_idx ON orders (total);
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 3) g;
INSERT INTO orders (ref, customer_id, total) SELECT 'r' || g, 1 + g % 3, g FROM generate_series(1, 10) g;
INSERT INTO notes SELECT g, 'before' FROM generate_series(1, 4) g;
CREATE TABLE parted (id int) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
INSERT INTO parted VALUES (1), (2);
"""

ACCIDENT = """
DELETE FROM orders WHERE id > 6 OR customer_id = 3;
UPDATE orders SET total = 0;
DELETE FROM customers WHERE id = 3;
UPDATE notes SET body = 'after';
CREATE TABLE other (x int);
CREATE INDEX orders_before_pkey ON other (x);
"""


@pytest.fixture
def archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


def rows(arch: Archived, table: str) -> list[tuple[Any, ...]]:
    return arch.execute(f"SELECT * FROM {table} ORDER BY 1")


def oid(arch: Archived, table: str) -> int:
    return int(arch.execute(f"SELECT '{table}'::regclass::oid")[0][0])


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def scratch_left(spool: Path) -> list[str]:
    """Scratch directories in the spool, and processes running from one."""
    left = [p.name for p in spool.iterdir()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(spool) in cmdline and "postgres" in cmdline:
                left.append(cmdline)
    return left


def test_table_restore_physical_and_logical(archived: Archived, run_drkit: DrkitRunner) -> None:
    arch = archived
    arch.execute(SCHEMA)
    backup = run_drkit("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    dumped = run_drkit("backup", arch.env, policy_dir=arch.policy_dir)
    assert dumped.code == 0, dumped.stderr
    arch.execute(ACCIDENT)
    arch.switch_and_wait(has_wal(arch))
    spool = arch.root / "spool"
    spool.mkdir(mode=0o755)
    live = arch.dsn()

    def restore(*args: str) -> Any:
        return run_drkit(
            "restore", arch.env, "--immediate", "--target-db", live, *args,
            policy_dir=arch.policy_dir, env={"DRKIT_TMPDIR": str(spool)}, timeout=600,
        )  # fmt: skip

    orders_oid, orders_now = oid(arch, "orders"), rows(arch, "orders")
    assert len(orders_now) == 4

    # refusals, each before any recovery, in one line; a logical backup's the same
    refused = restore("--table", "public.orders")
    assert refused.code == 4 and "--force" in one_line(refused.stderr)
    logical = run_drkit(
        "restore", arch.env, "latest", "--table", "public.orders", "--target-db", live,
        policy_dir=arch.policy_dir,
    )  # fmt: skip
    assert logical.code == 4 and one_line(logical.stderr) == one_line(refused.stderr)
    several = restore("--table", "public.orders", "--table", "notes", "--as", "x")
    assert several.code == 2 and "one at a time" in one_line(several.stderr)
    for force in (False, True):  # --as never names a live table, --force or not
        with pytest.raises(SafetyRefused, match="never replaces") as refusal:
            guard_destinations(
                live, parse_choice(["orders"], "notes", force), [("public", "orders")]
            )
        assert refusal.value.exit_code == 4 and "\n" not in str(refusal.value)
    with pytest.raises(UsageError, match="give the table"):
        parse_choice([], "x", False)
    with pytest.raises(UsageError, match="63 bytes"):  # PostgreSQL would cut it short
        parse_choice(["orders"], "o" * 64, False)
    assert scratch_left(spool) == []

    # --as: next to the live table, with the target's rows, indexes and constraints
    result = restore("--table", "public.orders", "--as", "orders_before", "--json")
    assert result.code == 0, result.stderr
    doc = TableRestoreDocument.model_validate(result.json()).model_dump()
    assert doc["tables"] == [
        {"source": "public.orders", "table": "public.orders_before", "rows": 10}
    ]
    assert doc["dropped_foreign_keys"] == ["orders_customer_id_fkey -> public.customers"]
    assert doc["scratch_cluster"] == "removed" and scratch_left(spool) == []
    restored = rows(arch, "orders_before")
    assert [r[0] for r in restored] == list(range(1, 11))
    assert [r[3] for r in restored] == list(range(1, 11))  # the totals before the UPDATE
    assert oid(arch, "orders") == orders_oid and rows(arch, "orders") == orders_now
    indexes = {
        str(r[0])
        for r in arch.execute(
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = 'orders_before'::regclass"
        )
    }
    # orders_before_pkey is a live index's name: the copy's primary key takes the next
    assert indexes == {"orders_before_pkey_1", "orders_before_ref_key", "orders_before_total_idx"}
    checks = arch.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'orders_before'::regclass "
        "AND contype = 'c'"
    )
    assert [r[0] for r in checks] == ["orders_before_total_check"]
    seq = arch.execute("SELECT pg_get_serial_sequence('orders_before', 'id')")[0][0]
    assert seq == "public.orders_before_id_seq"
    assert arch.execute("SELECT pg_get_serial_sequence('orders', 'id')")[0][0] == (
        "public.orders_id_seq"
    )

    # the logical path: the same --as, the same copy
    result = run_drkit(
        "restore", arch.env, "latest", "--table", "orders", "--as", "orders_dumped",
        "--target-db", live, "--json", policy_dir=arch.policy_dir,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    (database,) = result.json()["databases"]
    assert database["restored"] == [
        {"source": "public.orders", "table": "public.orders_dumped", "rows": 10}
    ]
    assert database["dropped_foreign_keys"] == doc["dropped_foreign_keys"]
    assert rows(arch, "orders_dumped") == restored
    assert oid(arch, "orders") == orders_oid and rows(arch, "orders") == orders_now
    assert arch.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'orders_dumped'::regclass"
    ) == [(3,)]
    # a partitioned table's rows are in its partitions, which pg_dump -t leaves out:
    # refused in the scratch database, which is dropped all the same
    result = run_drkit(
        "restore", arch.env, "latest", "--table", "parted", "--as", "parted_dumped",
        "--target-db", live, policy_dir=arch.policy_dir,
    )  # fmt: skip
    assert result.code == 2 and "partitions" in one_line(result.stderr)
    assert arch.execute("SELECT to_regclass('parted_dumped')") == [(None,)]
    assert arch.execute("SELECT count(*) FROM pg_database WHERE datname LIKE '%drkit%'") == [(0,)]

    # --force over orders keeps its foreign key, which customer 3's orders break: the
    # whole restore rolls back, notes (restored with it) included
    notes_oid = oid(arch, "notes")
    result = restore("--table", "public.notes", "--table", "public.orders", "--force")
    assert result.code == 1, result.stderr
    assert "orders_customer_id_fkey" in one_line(result.stderr)
    assert oid(arch, "orders") == orders_oid and rows(arch, "orders") == orders_now
    assert oid(arch, "notes") == notes_oid
    assert {r[1] for r in rows(arch, "notes")} == {"after"}
    assert scratch_left(spool) == []

    # --force without --as: notes replaced, as of the restore point
    result = restore("--table", "notes", "--force", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["replaced"] is True
    assert {r[1] for r in rows(arch, "notes")} == {"before"} and len(rows(arch, "notes")) == 4
    assert oid(arch, "notes") != notes_oid
    assert scratch_left(spool) == []

    # SIGTERM while the scratch server runs: torn down, nothing published, exit 130
    command = [
        sys.executable, "-m", "drkit", "--policy-dir", str(arch.policy_dir), "restore",
        arch.env, "--immediate", "--target-db", live, "--table", "notes", "--as", "notes_term",
    ]  # fmt: skip
    env = {**os.environ, "DRKIT_TMPDIR": str(spool)}
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as proc:
        while not list(spool.glob("*/data/postmaster.pid")) and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert scratch_left(spool) == []
    assert arch.execute("SELECT to_regclass('notes_term')") == [(None,)]


def test_free_names_fit_and_never_collide() -> None:
    taken = {("public", "orders_old_pkey"), ("public", "orders_old_pkey_1")}
    assert free_name("orders_pkey", "orders", "orders_old", "public", taken) == "orders_old_pkey_2"
    assert free_name("ix_total", "orders", "orders_old", "public", taken) == "orders_old_ix_total"
    long = "x" * 60
    first = free_name(f"{long}_pkey", long, long + "_é", "s", taken)
    assert len(first.encode()) <= 63 and first.startswith(long)
    second = free_name(f"{long}_pkey", long, long + "_é", "s", taken)
    assert second != first and len(second.encode()) <= 63 and second.endswith("_1")


def test_the_document_is_the_restores_own_every_key_written() -> None:
    """``restore --table --json`` is what the table restore returns: the record of each
    table is the document's own, and a recovery that reached no transaction writes
    ``reached_at: null`` rather than leaving the key out."""
    from drkit.documents import dump
    from drkit.restore.documents import RestoredTable
    from drkit.restore.tables import TableRestoreResult

    result = TableRestoreResult("B1", "latest", None, "app", "h:5432/app", replaced=True)
    result.tables.append(RestoredTable(source="public.a", table="public.a", rows=3))
    result.scratch = "cleanup failed"
    doc = dump(result.document(duration=1.25))
    assert isinstance(result.document(duration=1.25), TableRestoreDocument)
    assert doc == {
        "ok": True,
        "backup_id": "B1",
        "target": "latest",
        "reached_at": None,
        "database": "app",
        "target_db": "h:5432/app",
        "replaced": True,
        "tables": [{"source": "public.a", "table": "public.a", "rows": 3}],
        "dropped_foreign_keys": [],
        "scratch_cluster": "cleanup failed",
        "duration_seconds": 1.25,
    }
