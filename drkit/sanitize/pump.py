"""The pump: how a row travels from a source into the build database.

Both sources feed it COPY text (a live ``COPY (SELECT ...) TO STDOUT``, or the lines of a
backup's data section) and it hands whole lines, through the table's strategies, to a
``COPY ... FROM STDIN``.  Raw values of masked columns exist only in this process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

from drkit.sanitize.transform import RowTransformer

ProgressFn = Callable[[str, int], None]  # (table, rows just copied)
_BATCH = 1 << 20
_DEPTH = 2  # blocks waiting for the writer: memory stays a few MiB whatever the table


class WriteBehind:
    """``write`` called by a thread, in order, while the caller prepares the next block.

    At most ``_DEPTH`` blocks wait; :meth:`close` returns once every block is written
    and raises what the writer raised (a failed write stops the writing: the blocks
    after it are dropped, and the caller's copy fails).
    """

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_DEPTH)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="drkit-copy-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None and not self._stop:
                try:
                    self._write(block)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def write(self, block: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        """Wait until every block is written; raise the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """The caller failed: drop what is left and let the thread end (a write under
        way finishes, or fails when the caller closes the connection)."""
        self._stop = True
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put_nowait(None)  # only this thread puts: after the drain there is room
        self._thread.join(timeout=5)


def pump(
    out: Iterable[bytes | bytearray | memoryview],
    write: Callable[[bytes], object] | None,
    transformer: RowTransformer,
    key: str,
    on_progress: ProgressFn | None,
) -> int:
    """Stream COPY text from ``out`` through ``transformer`` into ``write``; returns rows.

    ``out`` may be cut anywhere (COPY chunks, or one line at a time); blocks of about
    1 MiB of whole lines go through the strategies.  ``write`` None: read only (the
    originals still reach the leak index through the transformer).  Blocks are written by
    a thread (:class:`WriteBehind`) while the next ones are read and transformed.
    """
    if write is None:
        return _pump(out, None, transformer, key, on_progress)
    behind = WriteBehind(write)
    try:
        rows = _pump(out, behind.write, transformer, key, on_progress)
    except BaseException:
        behind.abandon()
        raise
    behind.close()
    return rows


def _pump(
    out: Iterable[bytes | bytearray | memoryview],
    write: Callable[[bytes], object] | None,
    transformer: RowTransformer,
    key: str,
    on_progress: ProgressFn | None,
) -> int:
    rows = 0
    pending: list[bytes] = []
    size = 0
    carry = b""
    passthrough = transformer.passthrough

    def flush(final: bool) -> None:
        nonlocal carry, rows
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
        if write is not None:
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
