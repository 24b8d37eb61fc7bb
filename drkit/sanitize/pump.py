"""The pump: how a row travels from a source into the build database.

Every source serves COPY text (a live ``COPY (SELECT ...) TO STDOUT``, or the lines of a
backup's data section) and the pump hands whole lines, through the table's strategies,
to a ``COPY ... FROM STDIN`` (or to nothing, when the rows are only read for their
originals or for the e-mail map), in this thread or through worker processes
(:mod:`drkit.sanitize.workers`).  Raw values of masked columns exist only in the run's
memory and its workers', never in a file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Protocol

from drkit.streams import WriteBehind

ProgressFn = Callable[[str, int], None]  # (table, rows just copied)
_BATCH = 1 << 20


class Blocks(Protocol):
    """What a block of whole lines becomes, in this thread: a table's strategies
    (:class:`~drkit.sanitize.transform.RowTransformer`), the originals pass
    (:class:`~drkit.sanitize.transform.RowOriginals`)."""

    @property
    def passthrough(self) -> bool: ...

    def block(self, data: bytes) -> bytes: ...


#: a block's result: (the block to write, None for the block as read; what the
#: computation reports of it, for the gate)
Result = tuple[bytes | None, object]


class Stage(Protocol):
    """Blocks computed elsewhere (worker processes, :mod:`drkit.sanitize.workers`):
    :meth:`put` hands one over and returns the results that are ready, :meth:`drain`
    the rest; both (block, result) in the order the blocks were put."""

    def put(self, block: bytes) -> list[tuple[bytes, Result]]: ...

    def drain(self) -> list[tuple[bytes, Result]]: ...


class InProcess:
    """A :class:`Stage` computed in this thread by ``fn``: each block's result at once."""

    def __init__(self, fn: Callable[[bytes], Result]) -> None:
        self._fn = fn

    def put(self, block: bytes) -> list[tuple[bytes, Result]]:
        return [(block, self._fn(block))]

    def drain(self) -> list[tuple[bytes, Result]]:
        return []


def _stage(transformer: Blocks | Stage) -> Stage:
    if not hasattr(transformer, "block"):
        return transformer
    blocks: Blocks = transformer  # type: ignore[assignment]
    if blocks.passthrough:
        return InProcess(lambda block: (None, None))
    return InProcess(lambda block: (blocks.block(block), None))


def pump(
    out: Iterable[bytes | bytearray | memoryview],
    write: Callable[[bytes], object] | None,
    transformer: Blocks | Stage,
    key: str,
    on_progress: ProgressFn | None,
    gate: Callable[[bytes, object], bool] | None = None,
) -> int:
    """Stream COPY text from ``out`` through ``transformer`` into ``write``; returns rows.

    ``out`` may be cut anywhere (COPY chunks, or one line at a time); blocks of about
    1 MiB of whole lines go through the strategies, in this thread (:class:`Blocks`) or
    in worker processes (a :class:`Stage`: several blocks under way at once, their
    results taken in order).  ``write`` None: read only (the originals still reach the
    leak index through the transformer, or through a :class:`RowOriginals` in the
    originals pass).  ``gate``: shown each block as it is to be written, with what its
    computation reported, before it is written; a block it refuses is not written, nor
    is any after it (the blocks are still read and shown: the scan counts every hit).
    Blocks are written by a thread (:class:`WriteBehind`) while the next ones are read
    and transformed.
    """
    stage = _stage(transformer)
    with contextlib.ExitStack() as stack:
        if write is not None:
            write = stack.enter_context(WriteBehind(write)).write
        rows = 0
        pending = bytearray()  # whole lines and a partial one (chunks appended in place)
        shut = False

        def deliver(done: list[tuple[bytes, Result]]) -> None:
            nonlocal shut
            for block, (out, report) in done:
                if out is not None:
                    block = out
                if gate is not None and not gate(block, report):
                    shut = True
                if write is not None and not shut:
                    write(block)
                if on_progress is not None:
                    on_progress(key, block.count(b"\n"))

        def flush(final: bool) -> None:
            nonlocal rows
            cut = len(pending) if final else pending.rfind(b"\n") + 1
            if not cut:
                return
            block = bytes(pending[:cut])
            del pending[:cut]
            if not block.endswith(b"\n"):  # a last line without its newline
                block += b"\n"
            rows += block.count(b"\n")
            deliver(stage.put(block))

        extend = pending.extend
        size = 0  # bytes since the last flush (a long line is not searched again per chunk)
        for chunk in out:
            extend(chunk)
            size += len(chunk)
            if size >= _BATCH:
                flush(False)
                size = 0
        flush(True)
        deliver(stage.drain())
        return rows
