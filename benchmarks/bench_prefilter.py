"""The in-flight scan's per-block byte work on real COPY text: milliseconds per 1 MiB block.

    python -m benchmarks.bench_prefilter --dsn postgresql://.../prod1000000 \\
        --table vulnerability --table sync_log --rounds 15

Each table's first ~1 MiB of ``COPY ... TO STDOUT`` text in key order (whole lines, the same
block every time: a plain scan may start anywhere) is read once.  Two
layouts are timed, steady state (one call first, which compiles the loops or loads them
from numba's cache, timed apart), the figure the median of ``--rounds`` calls:

- ``lean``: every column kept and decoded (a table with nothing to mask): the block's
  folded text squeezed (``compact_apart``) and its marked fields (``marked_fields``);
- ``general``: the last column masked, the others kept, the text ones decoded, and the
  last decoded column's addresses drkit's own pseudonyms: the kept columns selected,
  the decoded ones blanked and squeezed, and the marked fields.

Nothing here asserts a time; the Bloom-filter search of the same blocks
(``LeakFilter.candidates``) is not part of these figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

BLOCK = 1 << 20


def copy_block(dsn: str, table: str) -> tuple[bytes, list[str], list[str]]:
    """About a MiB of whole COPY lines of ``table``, its columns' names and its text ones'."""
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT attname, atttypid::regtype::text FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        ).fetchall()
        out = bytearray()
        query = sql.SQL("COPY (SELECT * FROM {} ORDER BY 1 LIMIT 20000) TO STDOUT").format(
            sql.Identifier(table)
        )
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                if len(out) < BLOCK + (1 << 16):
                    out += chunk
    block = bytes(out[: out.rfind(b"\n", 0, BLOCK) + 1])
    texts = [name for name, kind in columns if kind in ("text", "jsonb", "json")]
    return block, [name for name, _ in columns], texts


def median_ms(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(the first call's seconds, the median of ``rounds`` more in milliseconds)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times) * 1000


def measure_table(dsn: str, table: str, rounds: int) -> None:
    from drkit.sanitize.scan.inflight import marked_fields, select_columns
    from drkit.sanitize.scan.leakscan import COMPACT, compact_apart, fold_bytes

    block, names, text_columns = copy_block(dsn, table)
    width = len(names)
    data = np.frombuffer(block, dtype=np.uint8)
    decoded = np.zeros(width + 1, dtype=bool)
    decoded[[names.index(c) for c in text_columns]] = True
    every = np.ones(width + 1, dtype=bool)
    kept = np.zeros(width + 1, dtype=bool)
    kept[: width - 1] = True
    decoded_kept = decoded & kept
    addressed = decoded_kept.copy()
    if decoded_kept.any():
        addressed[np.flatnonzero(decoded_kept)[-1]] = False

    def lean() -> npt.NDArray[np.int64]:
        compact_apart(fold_bytes(block))
        return marked_fields(data, width, every, decoded, decoded)

    def general() -> npt.NDArray[np.int64]:
        select_columns(data, width, kept, False)
        squeezed = select_columns(data, width, decoded_kept, True).tobytes()
        compact_apart(fold_bytes(squeezed), COMPACT + b"\0")
        return marked_fields(data, width, decoded_kept, decoded_kept, addressed)

    rows = block.count(b"\n")
    for name, fn in (("lean", lean), ("general", general)):
        first, ms = median_ms(fn, rounds)
        print(
            f"{table} ({len(block)} bytes, {rows} rows) {name}: {ms:.1f} ms per block"
            f" (median of {rounds}; first call {first:.2f} s), {len(fn())} fields marked"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--table", action="append", required=True)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    start = time.perf_counter()
    import drkit.sanitize.scan.inflight  # noqa: F401  (numba and the scan, loaded once)

    print(f"import: {time.perf_counter() - start:.2f} s")
    for table in args.table:
        measure_table(args.dsn, table, args.rounds)


if __name__ == "__main__":
    main()
