"""The originals pass's hand-over alone: real originals into ``LeakIndex.add``.

    python benchmarks/bench_originals.py --dsn postgresql://.../prod1000000 --rounds 5

The values are those a sanitize run with the shipped rules hands the leak index in its
originals pass, in the order it hands them (row by row): the ``user`` table's masked
columns and the ``agent`` table's, read with one ``COPY`` each.  Each round fills a new
:class:`~drkit.sanitize.scan.leakscan.LeakIndex` one value at a time, as the strategies'
sink does, and flushes it; the person names also go to a ``NameIndex``, as the run's
``observe`` hook sends them.  Printed (JSON): the values, the forms held, the first round
(which compiles the filter's loops or loads them from numba's cache) and the median and
minimum of the steady rounds, and ``canonical_forms`` alone over the distinct values in
batches of the index's size.  Run as a script (not ``-m``) so that ``PYTHONPATH`` can put
another tree's ``drkit`` first, to compare two versions on the same data.  Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import psycopg

from drkit.sanitize.scan.inflight import NameIndex
from drkit.sanitize.scan.leakscan import LeakIndex, canonical_forms

# the shipped rules' (prod-to-staging.yaml) masked columns, in table order
MASKED = {
    "user": ["email", "username", "password_hash", "full_name", "phone", "last_login_ip"],
    "agent": ["api_key", "last_seen_ip"],
}
NAMES = {"full_name"}
BATCH = 1 << 16


def originals(dsn: str) -> tuple[list[str], list[str]]:
    """(every original value row by row, the person names among them)."""
    values: list[str] = []
    names: list[str] = []
    with psycopg.connect(dsn) as conn:
        for table, columns in MASKED.items():
            select = ", ".join(f'"{c}"::text' for c in columns)
            rows = conn.execute(f'SELECT {select} FROM "{table}" ORDER BY 1').fetchall()
            for row in rows:
                for column, value in zip(columns, row, strict=True):
                    if value is not None:
                        values.append(value)
                        if column in NAMES:
                            names.append(value)
    return values, names


def fill(values: list[str], names: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    index = LeakIndex()
    add = index.add
    for value in values:
        add(value)
    people = NameIndex()
    add_name = people.add
    for name in names:
        add_name(name)
    index.searcher(set())
    people.freeze()
    return time.perf_counter() - start, len(index)


def forms_only(values: list[str]) -> float:
    unique = list(dict.fromkeys(values))
    start = time.perf_counter()
    for i in range(0, len(unique), BATCH):
        canonical_forms(unique[i : i + BATCH])
    return time.perf_counter() - start


def measure(dsn: str, rounds: int) -> dict[str, Any]:
    values, names = originals(dsn)
    first, forms = fill(values, names)
    steady = [fill(values, names)[0] for _ in range(rounds)]
    canonical = [forms_only(values) for _ in range(rounds)]
    return {
        "values": len(values),
        "names": len(names),
        "forms": forms,
        "first_round_s": round(first, 3),
        "add_median_s": round(statistics.median(steady), 3),
        "add_min_s": round(min(steady), 3),
        "canonical_forms_median_s": round(statistics.median(canonical), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("DRKIT_BENCH_DSN"), required=False)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or DRKIT_BENCH_DSN) names the sample database")
    print(json.dumps(measure(args.dsn, args.rounds), indent=2))


if __name__ == "__main__":
    main()
