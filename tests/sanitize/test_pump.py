"""The pump writes blocks from a thread: every block, in order, and a failed write fails
the copy (never a silently shorter table)."""

from __future__ import annotations

import threading

import pytest

from drkit.sanitize.pump import pump
from drkit.sanitize.strategies import Compiler, Fake, Keep, Pseudonymizer
from drkit.sanitize.transform import RowTransformer
from drkit.streams import WriteBehind

SALT = b"pump-test-salt-0123"


def rows(n: int) -> list[bytes]:
    return [b"%d\tperson %d\n" % (i, i) for i in range(n)]


def test_every_block_written_in_order_by_another_thread() -> None:
    seen: list[bytes] = []
    threads: set[int] = set()

    def write(block: bytes) -> None:
        threads.add(threading.get_ident())
        seen.append(block)

    compiler = Compiler(Pseudonymizer(SALT, pool_size=64))
    transformer = RowTransformer([("id", Keep()), ("name", Fake(provider="name"))], compiler)
    source = rows(60_000)  # several 1 MiB blocks
    count = pump(iter(source), write, transformer, "public.t", None)
    assert count == len(source)
    assert threads and threading.get_ident() not in threads
    out = b"".join(seen).split(b"\n")[:-1]
    assert [line.split(b"\t")[0] for line in out] == [str(i).encode() for i in range(len(source))]
    expected = transformer.block(b"".join(source))
    assert b"".join(seen) == expected


def test_a_failed_write_fails_the_pump() -> None:
    calls = 0

    def write(block: bytes) -> None:
        nonlocal calls
        calls += 1
        raise OSError("server went away")

    compiler = Compiler(Pseudonymizer(SALT, pool_size=64))
    transformer = RowTransformer([("id", Keep()), ("name", Keep())], compiler)
    with pytest.raises(OSError, match="server went away"):
        pump(iter(rows(60_000)), write, transformer, "public.t", None)
    assert calls == 1  # nothing written after the failure


def test_a_failed_read_abandons_the_writer() -> None:
    written: list[bytes] = []

    def source() -> object:
        yield from rows(40_000)
        raise ValueError("source broke")

    compiler = Compiler(Pseudonymizer(SALT, pool_size=64))
    transformer = RowTransformer([("id", Keep()), ("name", Keep())], compiler)
    before = threading.active_count()
    with pytest.raises(ValueError, match="source broke"):
        pump(source(), written.append, transformer, "public.t", None)  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_write_behind_close_raises_the_last_error() -> None:
    def write(block: bytes) -> None:
        if block == b"bad":
            raise RuntimeError("bad block")

    behind = WriteBehind(write)
    behind.write(b"good")
    behind.write(b"bad")
    with pytest.raises(RuntimeError, match="bad block"):
        behind.close()


def test_chunks_cut_anywhere_give_the_blocks_of_whole_lines() -> None:
    """COPY chunks cut mid-line, a line longer than a block, a last line without its
    newline: every line reaches the strategies whole, once, in order."""
    import random

    compiler = Compiler(Pseudonymizer(SALT, pool_size=64))
    transformer = RowTransformer([("id", Keep()), ("name", Fake(provider="name"))], compiler)
    lines = [b"%d\tperson %d" % (i, i) for i in range(30_000)]
    lines[7_000] = b"7000\t" + b"x" * (3 << 20)  # longer than a block
    text = b"\n".join(lines)  # no newline after the last line
    rng = random.Random(7)
    chunks, at = [], 0
    while at < len(text):
        step = rng.choice([1, 17, 4096, 70_000, 1 << 20])
        chunks.append(memoryview(text[at : at + step]))
        at += step
    seen: list[bytes] = []
    count = pump(iter(chunks), seen.append, transformer, "public.t", None)
    assert count == len(lines)
    assert b"".join(seen) == transformer.block(text + b"\n")
    assert all(block.endswith(b"\n") for block in seen)
