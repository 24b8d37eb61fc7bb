"""The pump: how a row travels from a source into the build database.

Every source serves COPY text (a live ``COPY (SELECT ...) TO STDOUT``, or the lines of a
backup's data section) and the pump hands whole lines, through the table's strategies,
to a ``COPY ... FROM STDIN`` (or to nothing, when the rows are only read for their
originals or for the e-mail map).  Raw values of masked columns exist only in this
process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from drkit.sanitize.transform import RowOriginals, RowTransformer
from drkit.streams import WriteBehind

ProgressFn = Callable[[str, int], None]  # (table, rows just copied)
_BATCH = 1 << 20


def pump(
    out: Iterable[bytes | bytearray | memoryview],
    write: Callable[[bytes], object] | None,
    transformer: RowTransformer | RowOriginals,
    key: str,
    on_progress: ProgressFn | None,
    gate: Callable[[bytes], bool] | None = None,
) -> int:
    """Stream COPY text from ``out`` through ``transformer`` into ``write``; returns rows.

    ``out`` may be cut anywhere (COPY chunks, or one line at a time); blocks of about
    1 MiB of whole lines go through the strategies.  ``write`` None: read only (the
    originals still reach the leak index through the transformer, or through a
    :class:`RowOriginals` in the originals pass).  ``gate``: shown each
    transformed block before it is written; a block it refuses is not written, nor is
    any after it (the blocks are still read and shown: the scan counts every hit).  Blocks are written by
    a thread (:class:`WriteBehind`) while the next ones are read and transformed.
    """
    with contextlib.ExitStack() as stack:
        if write is not None:
            write = stack.enter_context(WriteBehind(write)).write
        rows = 0
        pending: list[bytes] = []
        size = 0
        carry = b""
        passthrough = transformer.passthrough
        shut = False

        def flush(final: bool) -> None:
            nonlocal carry, rows, shut
            data = carry + b"".join(pending)
            cut = len(data) if final else data.rfind(b"\n") + 1
            block, carry = data[:cut], data[cut:]
            if not block:
                return
            if not block.endswith(b"\n"):  # a last line without its newline
                block += b"\n"
            count = block.count(b"\n")
            rows += count
            if not passthrough:
                block = transformer.block(block)
            if gate is not None and not gate(block):
                shut = True
            if write is not None and not shut:
                write(block)
            if on_progress is not None:
                on_progress(key, count)

        for chunk in out:
            pending.append(bytes(chunk))
            size += len(chunk)
            if size >= _BATCH:
                flush(False)
                pending.clear()
                size = 0
        flush(True)
        return rows
