"""A backup's data section streams by once: a table's rows can be read only while the
stream is at them.  Taken out of order they must refuse to be read, never give no rows
(a sanitize from a backup would copy the table empty and exit 0)."""

from __future__ import annotations

import io

import pytest

from drkit.sanitize.sources.archive import DataSection

SECTION = b"""SET statement_timeout = 0;
COPY public.a (id, name) FROM stdin;
1\tann
2\tbob
\\.
SELECT pg_catalog.setval('public.a_id_seq', 2, true);
COPY public.b (id) FROM stdin;
10
11
12
\\.
"""


def test_rows_read_in_stream_order_are_every_row() -> None:
    got = {
        f"{b.schema}.{b.table}": list(rows) for b, rows in DataSection().blocks(io.BytesIO(SECTION))
    }
    assert got == {"public.a": [b"1\tann\n", b"2\tbob\n"], "public.b": [b"10\n", b"11\n", b"12\n"]}


def test_a_consumer_that_stops_halfway_leaves_the_next_block_whole() -> None:
    section = DataSection()
    got = {}
    for block, rows in section.blocks(io.BytesIO(SECTION)):
        first = next(iter(rows))
        got[block.table] = first
    assert got == {"a": b"1\tann\n", "b": b"10\n"}
    assert section.sequences == [("public.a_id_seq", 2, True)]


def test_rows_taken_after_the_stream_moved_on_refuse_to_be_read() -> None:
    taken = list(DataSection().blocks(io.BytesIO(SECTION)))  # every block taken first
    for block, rows in taken:
        with pytest.raises(
            RuntimeError, match=f"rows of public.{block.table} were taken out of order"
        ):
            list(rows)
