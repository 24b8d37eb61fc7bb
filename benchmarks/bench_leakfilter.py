"""The leak filter's search alone: ``LeakFilter.candidates`` on a block of real COPY text.

    python -m benchmarks.bench_leakfilter --dsn postgresql://.../prod1000000 --rounds 9 \\
        --table vulnerability --table sync_log --table product_vulnerability
    python -m benchmarks.bench_leakfilter --synthetic 1300000          # no database

The filter holds the originals of the database's masked columns (the shipped rules'
``user``, ``agent`` and ``organization`` columns that are not kept), added as the sanitize
run adds them (``LeakIndex.add_many``: every canonical form), then frozen; or, with
``--synthetic N``, the forms of N made-up e-mail addresses, names and phone numbers.  The
searched block is ``--block-mib`` of each ``--table``'s COPY text, case-folded as the scan
folds it (``fold_bytes``): tables differ (digits, JSON, free text), so each is timed apart.

Printed (JSON): the forms held, how long adding them took, the first search (which
compiles the loops, or loads them from numba's cache), then the median of ``--rounds``
steady-state searches of each block (CPU seconds of the searching thread), in the full mode and in the names' ``word_starts``
mode, with the number of candidates each returns.  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from drkit.sanitize.scan.leakscan import LeakIndex, Searcher, fold_bytes

# the shipped rules' masked columns (prod-to-staging.yaml): their values are the originals
MASKED = {
    "user": ["email", "username", "password_hash", "full_name", "phone", "last_login_ip"],
    "agent": ["api_key", "last_seen_ip"],
    "organization": ["smtp_password", "webhook_url"],
}


def originals(dsn: str) -> list[str]:
    values: list[str] = []
    with psycopg.connect(dsn) as conn:
        for table, columns in MASKED.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
                sql.Identifier(table),
            )
            for row in conn.execute(query):
                values.extend(v for v in row if v)
    return values


def synthetic(count: int) -> list[str]:
    values: list[str] = []
    for i in range(count // 3 + 1):
        values.append(f"person.{i:07d}@mail-{i % 97}.example.org")
        values.append(f"Given{i % 5003} Family{i:07d}")
        values.append(f"+1 555 {i % 10_000_000:07d}")
    return values[:count]


def block_of(dsn: str | None, table: str, mib: float) -> bytes:
    size = int(mib * (1 << 20))
    if dsn is None:
        line = b"cve-2024-0001\thigh\t7.5\ta remote attacker may run code via crafted input\n"
        return fold_bytes((line * (size // len(line) + 1))[:size])
    out = bytearray()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        # in key order: a plain scan may start mid-table (synchronised scans)
        copy_sql = sql.SQL("COPY (SELECT * FROM {} ORDER BY 1) TO STDOUT").format(
            sql.Identifier(table)
        )
        with cur.copy(copy_sql) as copy:
            for chunk in copy:  # read to the end: a COPY cut short leaves the connection busy
                if len(out) < size:
                    out += chunk
    cut = out.rfind(b"\n", 0, size) + 1 or size  # whole lines, as the scan's blocks are
    return fold_bytes(bytes(out[:cut]))


def timed(searcher: Searcher, block: bytes, rounds: int, word_starts: bool) -> dict[str, Any]:
    seconds = []
    found = 0
    for _ in range(rounds):  # CPU time of this thread: other work on the machine adds none
        start = time.thread_time()
        found = len(searcher.filter.candidates(block, word_starts=word_starts))
        seconds.append(time.thread_time() - start)
    median = statistics.median(seconds)
    return {
        "median_s": round(median, 4),
        "min_s": round(min(seconds), 4),
        "mib_per_s": round(len(block) / (1 << 20) / median, 1),
        "candidates": found,
    }


def measure_leakfilter(
    dsn: str | None, tables: list[str], mib: float, rounds: int, count: int
) -> dict[str, Any]:
    values = originals(dsn) if dsn else synthetic(count)
    index = LeakIndex()
    start = time.perf_counter()
    for i in range(0, len(values), 10_000):  # the batches a run's originals pass hands over
        index.add_many(values[i : i + 10_000])
    searcher = index.searcher(set())
    added = time.perf_counter() - start
    blocks = {table: block_of(dsn, table, mib) for table in tables}
    start = time.perf_counter()
    searcher.filter.candidates(blocks[tables[0]][:4096])
    first = time.perf_counter() - start
    return {
        "values": len(values),
        "forms": searcher.originals,
        "add_s": round(added, 2),
        "first_call_s": round(first, 2),
        "tables": {
            table: {
                "block_bytes": len(block),
                "full": timed(searcher, block, rounds, word_starts=False),
                "word_starts": timed(searcher, block, rounds, word_starts=True),
            }
            for table, block in blocks.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("DRKIT_BENCH_DSN"))
    parser.add_argument(
        "--table", action="append", help="repeat for several tables (default: vulnerability)"
    )
    parser.add_argument("--block-mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--synthetic", type=int, default=1_300_000, metavar="N")
    args = parser.parse_args()
    tables = args.table or ["vulnerability"]
    result = measure_leakfilter(args.dsn, tables, args.block_mib, args.rounds, args.synthetic)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
