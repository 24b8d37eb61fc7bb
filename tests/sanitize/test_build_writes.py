"""The build's writes: each table's rows go in frozen (``TRUNCATE ONLY`` then ``COPY ...
FREEZE`` in one transaction), so a second write of the same table would empty the
first's rows: it is refused, and the first's rows stand."""

from __future__ import annotations

import threading

import psycopg
import pytest

from drkit.sanitize.pipeline import _Run
from drkit.sanitize.plan import TablePlan
from drkit.sanitize.schema import Table
from tests.sanitize.helpers import execute


def _run_writing_to(url: str) -> _Run:
    run = object.__new__(_Run)  # only what copy_in reads
    run.write_dsn = url
    run._filled = set()
    run._filled_lock = threading.Lock()
    return run


def test_a_table_written_twice_is_refused_and_its_first_rows_stand(
    database: tuple[str, str],
) -> None:
    _, url = database
    # (pageinspect: to read the rows' frozen bits)
    execute(url, "CREATE TABLE t (id int, v text)", "CREATE EXTENSION pageinspect")
    run = _run_writing_to(url)
    tp = TablePlan(Table("public", "t", 0), "copy", [])
    with run.copy_in(tp, ["id", "v"], write=True) as write:
        assert write is not None
        write(b"1\tone\n2\ttwo\n")
    with (
        pytest.raises(RuntimeError, match="written twice"),
        run.copy_in(tp, ["id", "v"], write=True),
    ):
        raise AssertionError("a second write was opened")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
        frozen = conn.execute(
            "SELECT count(*) FROM heap_page_items(get_raw_page('t', 0))"
            " WHERE t_infomask & 768 = 768"  # HEAP_XMIN_FROZEN: committed and invalid bits
        ).fetchone()
    assert rows == [(1, "one"), (2, "two")]
    assert frozen == (2,)
