"""The live source's reads (``psql`` writing COPY text into a pipe the run reads): every
row of a read, byte for byte as the server's COPY gives it, in the run's snapshot, or an
error that names the table; never fewer rows and never a read that ends early."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drkit.errors import DatabaseError
from drkit.pg import PipeProcess
from drkit.sanitize.plan import TablePlan
from drkit.sanitize.sources.base import Read
from drkit.sanitize.sources.live import LiveSource, _chunks, open_live
from drkit.sanitize.subset import Selection
from tests.fix_pg import PgServer
from tests.sanitize.helpers import execute, other_role, role_url  # noqa: F401  (the fixture)

#: values COPY text escapes or that are long: a tab, a newline, a backslash, NUL-free
#: binary-looking text, non-ASCII, a value larger than the pipe, and NULL
_VALUES = ["a\tb", "line\nbreak", "back\\slash", "\\N", "żółw ＠ 😀", "x" * (3 << 20), None]


def _read(source: LiveSource, table: str, columns: list[str]) -> Read:
    return Read(TablePlan(source.schema().tables[table], "copy", []), columns, Selection())


def _server_copy(url: str, query: str) -> bytes:
    with psycopg.connect(url) as conn, conn.cursor().copy(query) as copy:
        return b"".join(bytes(chunk) for chunk in copy)


def _joined(chunks: Iterator[bytes] | object) -> bytes:
    return b"".join(bytes(c) for c in chunks)  # type: ignore[attr-defined]


def test_a_read_gives_the_servers_copy_text_byte_for_byte(database: tuple[str, str]) -> None:
    _, url = database
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s)", list(enumerate(_VALUES)))
            cur.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(10, 200009) g")
    expected = _server_copy(url, "COPY (SELECT id, v FROM t) TO STDOUT")
    with open_live(url, "prod", ddl=False) as source:
        read = _read(source, "public.t", ["id", "v"])
        with source._copy_out(read) as chunks:
            got = _joined(chunks)
    assert got == expected
    assert got.count(b"\n") == len(_VALUES) + 200_000


def test_no_statement_of_a_read_reaches_psqls_argument_list(database: tuple[str, str]) -> None:
    """Every local user may read a process's arguments (``ps``, /proc/PID/cmdline): the
    table, the columns, a row filter's literals and the snapshot go to psql's stdin."""
    _, url = database
    execute(
        url,
        "CREATE TABLE t_named_xq7 (secret_col_zk2 text)",
        "INSERT INTO t_named_xq7 SELECT 'v' || g FROM generate_series(1, 400000) g",
    )
    with open_live(url, "prod", ddl=False) as source:
        read = _read(source, "public.t_named_xq7", ["secret_col_zk2"])
        with source._copy_out(read) as chunks:
            children = [
                Path(f"/proc/{pid}/cmdline").read_bytes()
                for pid in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
                .read_text()
                .split()
            ]
            argv = b"\0".join(c for c in children if b"psql" in c)
            got = _joined(chunks)
    assert argv, "psql was not running during the read"
    for secret in (b"t_named_xq7", b"secret_col_zk2", b"SNAPSHOT", source._snapshot.encode()):
        assert secret not in argv
    assert got.count(b"\n") == 400_000


def test_a_read_sees_the_runs_snapshot_not_rows_committed_since(
    database: tuple[str, str],
) -> None:
    _, url = database
    execute(url, "CREATE TABLE t (id int)", "INSERT INTO t SELECT generate_series(1, 5)")
    with open_live(url, "prod", ddl=False) as source:
        read = _read(source, "public.t", ["id"])
        execute(url, "INSERT INTO t SELECT generate_series(6, 10)")
        with source._copy_out(read) as chunks:
            got = _joined(chunks)
    assert got == b"1\n2\n3\n4\n5\n"


def test_a_read_the_role_may_not_make_fails_naming_the_table_never_empty(
    pg_server: PgServer,
    database: tuple[str, str],
    other_role: tuple[str, str],  # noqa: F811
) -> None:
    name, url = database
    role, pw = other_role
    execute(url, "CREATE TABLE secret_t (id int)", "INSERT INTO secret_t VALUES (1)")
    with open_live(role_url(pg_server, role, pw, name), "prod", ddl=False) as source:
        read = _read(source, "public.secret_t", ["id"])
        with pytest.raises(DatabaseError) as raised, source._copy_out(read) as chunks:
            _joined(chunks)
    message = str(raised.value)
    assert message.startswith("reading public.secret_t from ")
    assert message.endswith(": permission denied for table secret_t"), message
    assert pw not in message


def test_a_read_cut_short_fails_after_its_rows_never_ends_early() -> None:
    """A reader that dies mid-stream (a lost connection, a killed psql) gave some rows:
    they come, then the error, never the end of the read."""
    script = "printf '1\\tone\\n2\\ttw'; echo 'psql: error: connection lost' >&2; exit 2"
    process = PipeProcess(["sh", "-c", script], stdout=subprocess.PIPE, what="psql")
    with process:
        got = []
        with pytest.raises(DatabaseError, match=r"^reading t: connection lost$"):
            for chunk in _chunks(process, "reading t"):
                got.append(chunk)
    assert b"".join(got) == b"1\tone\n2\ttw"


def test_a_read_that_ends_well_gives_every_chunk_then_ends() -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' 'x'; printf '\\n'"
    with PipeProcess(["sh", "-c", script], stdout=subprocess.PIPE, what="psql") as process:
        got = b"".join(_chunks(process, "reading t"))
    assert got == b"x" * 3_000_000 + b"\n"
