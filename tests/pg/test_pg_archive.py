"""drkit.pg.archive: the data offsets of a pipe-written custom-format dump.

The reference is pg_dump itself: dumping to a file it seeks back and writes the offsets;
dumping to a pipe it cannot.  Filling them in must give exactly pg_dump's own bytes,
on rows and large objects built to look like the block ends the parser searches for.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drkit.pg.archive import OffsetFinder, set_data_offsets
from drkit.pg.binaries import find_client
from drkit.pg.connect import server_major
from drkit.pg.conninfo import for_subprocess
from tests.fix_pg import PgServer, pg_versions

# a fake end of block and the header of the next one, with every dump id it could name
FAKE_BLOCK = b"\0\0\0\0\0\x01\0" + bytes(range(256)) * 4
HOSTILE = """
CREATE TABLE "we ird"."t.1" (id int PRIMARY KEY, t text, b bytea);
INSERT INTO "we ird"."t.1"
SELECT i, repeat(chr(1 + i % 120), CASE WHEN i % 3 = 0 THEN 256 - 10 ELSE i END),
       decode(repeat('00', i % 40), 'hex')
FROM generate_series(1, 3000) i;
INSERT INTO "we ird"."t.1" VALUES (100000, repeat('x', 65536 - 12), '\\x0000000000'),
                                   (100001, E'tab\\there\\nnewline\\\\back', NULL);
CREATE TABLE empty_one (id int);
CREATE TABLE after_empty (v text);
INSERT INTO after_empty SELECT 'row ' || i FROM generate_series(1, 500) i;
CREATE SEQUENCE seq_one START 42;
"""


@pytest.fixture
def hostile_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    name = f"a_{uuid.uuid4().hex[:10]}"
    pg_server.create_database(name)
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "we ird"')
        conn.execute(HOSTILE)
        for payload in (FAKE_BLOCK, bytes(20000), FAKE_BLOCK * 30):  # across 16 KiB chunks
            conn.execute("SELECT lo_from_bytea(0, %s)", [payload])
    yield name, pg_server.dsn(name)
    pg_server.drop_database(name)


def pg_dump_of(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return find_client("pg_dump", server_major(conn))


def dump(dsn: str, target: Path, *, to_pipe: bool, extra: tuple[str, ...] = ("-Z0",)) -> Path:
    conninfo, env = for_subprocess(dsn)
    args = [pg_dump_of(dsn), "-Fc", *extra, "-d", conninfo]
    if to_pipe:
        with open(target, "wb") as out:  # through a pipe, as a streaming backup reads it
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 16):
                out.write(chunk)
            assert proc.wait() == 0
    else:
        subprocess.run([*args, "-f", str(target)], env=env, check=True)
    return target


def header_end(data: bytes) -> int:
    """Where the creation date ends (dumps made seconds apart differ only before it)."""
    int_size = data[8]
    compression = 1 if (data[5], data[6]) >= (1, 15) else 1 + int_size
    return 11 + compression + 7 * (1 + int_size)


@pg_versions()
def test_offsets_are_the_ones_pg_dump_writes_to_a_file(
    hostile_db: tuple[str, str], pg_server: PgServer, tmp_path: Path
) -> None:
    _name, dsn = hostile_db
    piped = dump(dsn, tmp_path / "piped.dump", to_pipe=True)
    reference = dump(dsn, tmp_path / "file.dump", to_pipe=False).read_bytes()
    before = piped.read_bytes()
    assert before != reference  # the pipe's TOC lacks the offsets

    assert set_data_offsets(piped) >= 4  # three tables, the sequence has none, the blobs
    after = piped.read_bytes()
    start = header_end(reference)
    assert len(after) == len(reference) and after[start:] == reference[start:]
    assert set_data_offsets(piped) == 0  # nothing left to set
    assert piped.read_bytes() == after

    # and pg_restore -j 2 reads it back whole
    target = f"b_{uuid.uuid4().hex[:10]}"
    pg_server.create_database(target)
    try:
        conninfo, env = for_subprocess(pg_server.dsn(target))
        pg_restore = str(Path(pg_dump_of(dsn)).with_name("pg_restore"))
        subprocess.run([pg_restore, "-j", "2", "-d", conninfo, str(piped)], env=env, check=True)
        query = (
            "SELECT (SELECT md5(string_agg(t || coalesce(b::text, 'n'), ',' ORDER BY id)) "
            'FROM "we ird"."t.1"), (SELECT count(*) FROM after_empty), '
            "(SELECT md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)) "
            "FROM pg_largeobject_metadata)"
        )
        assert pg_server.query(target, query) == pg_server.query(_name, query)
    finally:
        pg_server.drop_database(target)


def unprovable(dsn: str, tmp_path: Path, piped: bytes) -> dict[str, bytes]:
    """Archives whose offsets cannot be proven, by what is wrong with them."""
    return {
        # compressed data is binary: its block ends cannot be found by their zeros
        "compressed": dump(dsn, tmp_path / "gz.dump", to_pipe=True, extra=("-Z1",)).read_bytes(),
        "cut in the data": piped[: len(piped) - 7],
        "cut in the TOC": piped[:200],
        "a byte more": piped + b"\x01",
        "not an archive": b"PGDMX" + piped[5:],
        "plain SQL": b"--\n-- PostgreSQL database dump\n--\n",
        "empty": b"",
    }


def test_archives_it_cannot_prove_are_left_alone(
    hostile_db: tuple[str, str], tmp_path: Path
) -> None:
    _name, dsn = hostile_db
    piped = dump(dsn, tmp_path / "piped.dump", to_pipe=True).read_bytes()
    cases = unprovable(dsn, tmp_path, piped)
    cases["offsets already set"] = dump(dsn, tmp_path / "f.dump", to_pipe=False).read_bytes()
    for case, data in cases.items():
        path = tmp_path / "case.dump"
        path.write_bytes(data)
        assert set_data_offsets(path) == 0, case
        assert path.read_bytes() == data, case


def found_while_writing(data: bytes, path: Path, piece: int) -> int | None:
    """What :class:`OffsetFinder` sets in ``path`` when fed ``data`` ``piece`` bytes at a
    time, as the restore's fetch writes it."""
    path.write_bytes(data)
    finder = OffsetFinder()
    for start in range(0, len(data), piece):
        finder.feed(data[start : start + piece])
    return finder.apply(path)


def test_offsets_found_while_writing_are_the_same(
    hostile_db: tuple[str, str], tmp_path: Path
) -> None:
    """Fed in pieces cut anywhere (inside integers, block headers, terminators, large
    objects), the streaming finder writes exactly what set_data_offsets writes."""
    _name, dsn = hostile_db
    piped = dump(dsn, tmp_path / "piped.dump", to_pipe=True).read_bytes()
    reference = tmp_path / "reference.dump"
    reference.write_bytes(piped)
    expected = set_data_offsets(reference)
    assert expected >= 4
    for piece in (13, 4099, 65536, len(piped)):
        target = tmp_path / f"streamed-{piece}.dump"
        assert found_while_writing(piped, target, piece) == expected, piece
        assert target.read_bytes() == reference.read_bytes(), piece


def test_archives_it_cannot_prove_while_writing_are_left_alone(
    hostile_db: tuple[str, str], tmp_path: Path
) -> None:
    _name, dsn = hostile_db
    piped = dump(dsn, tmp_path / "piped.dump", to_pipe=True).read_bytes()
    cases = unprovable(dsn, tmp_path, piped)
    for case, data in cases.items():
        path = tmp_path / "case.dump"
        assert found_while_writing(data, path, 65536) is None, case
        assert path.read_bytes() == data, case
    # offsets already set by pg_dump itself: nothing to write
    written = dump(dsn, tmp_path / "f.dump", to_pipe=False).read_bytes()
    assert found_while_writing(written, tmp_path / "case.dump", 4099) == 0
    assert (tmp_path / "case.dump").read_bytes() == written
