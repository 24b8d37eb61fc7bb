"""The SentriKat sample at the sizes the cost curves need (``python -m benchmarks``: 4 GB,
about 21 M rows): every value fits its column and unique ones stay unique.

Loading 21 M rows takes minutes, so the generator's own statements run here for a few
row numbers at the edges instead — where a number gains a digit, and the last one.
The 4 GB run of the benchmarks died on ``CVE-2025-100000`` made twice: ``lpad`` cut
the seven digits of row 1000009 to six.
"""

from __future__ import annotations

import uuid

import psycopg

from benchmarks.__main__ import rows_for
from drkit.demo.sample import SCHEMA, TABLES, SampleSize, sample_statements
from tests.fix_pg import PgServer

#: per table: (the generate_series the statement draws its rows from, the rows to make)
EDGES = {
    "user": ("generate_series(1, %(users)s)", [1, 99_999, 100_000, 270_000, 999_999]),
    "product": ("generate_series(1, %(products)s)", [1, 999_999, 1_000_000]),
    "vulnerability": (
        "generate_series(1, %(vulns)s)",
        [1, 100_000, 999_999, 1_000_000, 1_000_009, 10_000_000],
    ),
    "agent": ("generate_series(1, %(agents)s)", [1, 99_999, 1_000_000]),
}


def test_the_largest_sample_makes_unique_values_that_fit(pg_server: PgServer) -> None:
    size = SampleSize.for_rows(rows_for(4.0))
    assert size.users > 2_000_000 and size.vulnerabilities > 2_000_000
    name = f"sample_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    try:
        with psycopg.connect(pg_server.dsn(name)) as conn:
            conn.execute(SCHEMA)
            statements = dict(zip(TABLES, sample_statements(size), strict=True))  # in that order
            sql, params = statements["organization"]
            conn.execute(sql, params)  # every organization: the others reference them
            for table, (series, edges) in EDGES.items():
                sql, params = statements[table]
                assert series in sql, f"the {table} statement no longer draws from {series}"
                last = {"user": size.users, "product": size.products}.get(
                    table, size.vulnerabilities if table == "vulnerability" else size.agents
                )
                rows = sorted({*edges, last - 1, last})
                conn.execute(
                    sql.replace(series, "unnest(%(rows)s::int[])"), {**params, "rows": rows}
                )
                found = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                assert found is not None and found[0] == len(rows), table
    finally:
        pg_server.drop_database(name)
