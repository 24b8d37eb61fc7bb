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
batches of the index's size.  ``pass_median_s``: the whole originals pass of those two
tables as a run reads them, their COPY text in blocks of about 1 MiB through
``row_originals`` with the shipped rules' strategies (``--rules``) into a leak index and
a name index.  Run as a script (not ``-m``) so that ``PYTHONPATH`` can put
another tree's ``drkit`` first, to compare two versions on the same data.  Times are the
process's CPU seconds (the pass is one thread), so other work on the machine sways them
less than it sways wall time.  Nothing here asserts a time.
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

from drkit.sanitize.rules import load_rules
from drkit.sanitize.scan.inflight import NameIndex
from drkit.sanitize.scan.leakscan import LeakIndex, canonical_forms
from drkit.sanitize.strategies import Compiler, Pseudonymizer
from drkit.sanitize.transform import row_originals

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
    start = time.process_time()
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
    return time.process_time() - start, len(index)


def forms_only(values: list[str]) -> float:
    unique = list(dict.fromkeys(values))
    start = time.process_time()
    for i in range(0, len(unique), BATCH):
        canonical_forms(unique[i : i + BATCH])
    return time.process_time() - start


def copy_blocks(dsn: str, table: str, columns: list[str]) -> list[bytes]:
    """The table's COPY text of ``columns``, in blocks of whole lines of about 1 MiB."""
    blocks: list[bytes] = []
    pending = b""
    query = sql.SQL("COPY (SELECT {} FROM {} ORDER BY 1) TO STDOUT").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
    )
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:
            pending += bytes(chunk)
            if len(pending) >= 1 << 20:
                cut = pending.rfind(b"\n") + 1
                blocks.append(pending[:cut])
                pending = pending[cut:]
    if pending:
        blocks.append(pending)
    return blocks


def whole_pass(
    tables: list[tuple[list[tuple[str, Any]], list[bytes]]], rules: Any, pseudo: Pseudonymizer
) -> float:
    start = time.process_time()
    index, people = LeakIndex(), NameIndex()
    compiler = Compiler.for_rules(pseudo, rules.strategies(), index.add)
    for columns, blocks in tables:
        observe = {name: people.add for name, _ in columns if name in NAMES}
        reader = row_originals(columns, compiler, observe=observe)
        for block in blocks:
            reader.block(block)
    index.searcher(set())
    people.freeze()
    return time.process_time() - start


def measure(dsn: str, rounds: int, rules_path: str) -> dict[str, Any]:
    values, names = originals(dsn)
    first, forms = fill(values, names)
    steady = [fill(values, names)[0] for _ in range(rounds)]
    canonical = [forms_only(values) for _ in range(rounds)]
    rules = load_rules(rules_path, {"DRKIT_SANITIZE_SALT": "benchmark-salt-not-a-secret"})
    tables = []
    for table in MASKED:
        rule = rules.tables[f"public.{table}"]
        columns = list(rule.columns.items())
        tables.append((columns, copy_blocks(dsn, table, [name for name, _ in columns])))
    pseudo = Pseudonymizer(b"benchmark-salt-not-a-secret")
    whole_pass(tables, rules, pseudo)  # the fake pools are made, the loops loaded
    passes = [whole_pass(tables, rules, pseudo) for _ in range(rounds)]
    return {
        "values": len(values),
        "names": len(names),
        "forms": forms,
        "first_round_s": round(first, 3),
        "add_median_s": round(statistics.median(steady), 3),
        "add_min_s": round(min(steady), 3),
        "canonical_forms_median_s": round(statistics.median(canonical), 3),
        "pass_median_s": round(statistics.median(passes), 3),
        "pass_min_s": round(min(passes), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("DRKIT_BENCH_DSN"), required=False)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rules", default="sanitize_rules/prod-to-staging.yaml")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("--dsn (or DRKIT_BENCH_DSN) names the sample database")
    print(json.dumps(measure(args.dsn, args.rounds, args.rules), indent=2))


if __name__ == "__main__":
    main()
