"""Streaming stages: compression, hashing, byte counting — each a file-like reader.

Stages compose by wrapping readers: ``HashingReader(compress(dump_stdout))`` is what a
backup uploads.  Every stage reads a bounded chunk at a time, so memory stays flat
whatever the size of the data.  Encryption (age) plugs in as one more stage in
:mod:`drkit.crypto`.

A stage that only watches the bytes go by is a :class:`Tap`: counting them, hashing
them, checking their digest at the end, metering progress, following zstd frames.
"""

from __future__ import annotations

import hashlib
import os
import queue
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from drkit.errors import CheckFailed

if TYPE_CHECKING:
    import zstandard

CHUNK = 1024 * 1024


class IterReader:
    """A readable stream over an iterator of byte chunks.

    ``read(n)`` returns at most ``n`` bytes from the current chunk (a short read, as
    pipes give), never copying the rest of a large chunk; callers loop until b"".
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf[self._pos :], *self._chunks]
            self._buf, self._pos, self._eof = b"", 0, True
            return b"".join(parts)
        while self._pos >= len(self._buf):
            if self._eof:
                return b""
            try:
                self._buf, self._pos = next(self._chunks), 0
            except StopIteration:
                self._buf, self._pos, self._eof = b"", 0, True
                return b""
        data = self._buf[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def read_full(source: BinaryIO, size: int) -> bytes:
    """Read exactly ``size`` bytes, or fewer only at EOF (pipes return short reads)."""
    first = source.read(size)
    if len(first) == size or not first:
        return first
    parts = [first]
    have = len(first)
    while have < size:
        more = source.read(size - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


class Tap:
    """Passes a stream's bytes through unchanged, showing each chunk to ``see`` and the
    end of the stream, once, to ``end`` (which may raise: a check that failed).

    The one pass-through reader: what watches a stream is a pair of callbacks on it.
    ``close`` closes the source unless ``close_source`` is false (the caller owns it)."""

    def __init__(
        self,
        source: BinaryIO,
        see: Callable[[bytes], object] | None = None,
        end: Callable[[], object] | None = None,
        *,
        close_source: bool = True,
    ) -> None:
        self._source = source
        self._see = see
        self._end = end
        self._close_source = close_source
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            if self._see is not None:
                self._see(data)
        elif size != 0 and not self._ended:
            self._ended = True
            if self._end is not None:
                self._end()
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._close_source:
            self._source.close()


class CountingReader(Tap):
    """Passes bytes through, counting them (:attr:`count`) and telling ``on_bytes`` how
    many each read brought."""

    def __init__(
        self,
        source: BinaryIO,
        on_bytes: Callable[[int], object] | None = None,
        *,
        close_source: bool = True,
    ) -> None:
        super().__init__(source, self._counted, close_source=close_source)
        self.count = 0
        self._on_bytes = on_bytes

    def _counted(self, data: bytes) -> None:
        self.count += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))


class HashingReader(CountingReader):
    """Passes bytes through while counting them and computing their sha256."""

    def __init__(self, source: BinaryIO, on_bytes: Callable[[int], object] | None = None) -> None:
        super().__init__(source, on_bytes)
        self._see = self._hashed
        self._hash = hashlib.sha256()

    def _hashed(self, data: bytes) -> None:
        self._hash.update(data)
        self._counted(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class GatedReader:
    """Holds one of ``slots`` from its first read to its end: the stages that pull from
    it (compression, hashing: CPU) then run at most as many at a time as there are
    slots, while what follows the last read (an upload: waiting) holds none.  An error
    or :meth:`release` gives the slot back too."""

    def __init__(self, source: BinaryIO, slots: threading.Semaphore) -> None:
        self._source = source
        self._slots = slots
        self._held = False
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        if not self._held and not self._ended:
            self._slots.acquire()
            self._held = True
        try:
            data = self._source.read(size)
        except BaseException:
            self.release()
            raise
        if not data and size != 0:
            self.release()
        return data

    def readable(self) -> bool:
        return True

    def release(self) -> None:
        """Give the slot back (at the end, or when the reading stops early)."""
        self._ended = True
        if self._held:
            self._held = False
            self._slots.release()

    def close(self) -> None:
        self.release()
        self._source.close()


class ReadDigest:
    """The sha256 of the bytes a store reads from ``stream`` to its end.

    A :class:`HashingReader` not yet read from already hashes exactly those bytes, so its
    digest is lent instead of a second pass over them; any other stream is hashed here
    (``update`` with every chunk read)."""

    def __init__(self, stream: object) -> None:
        self._reader = stream if isinstance(stream, HashingReader) and stream.count == 0 else None
        self._hash = None if self._reader is not None else hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)

    def hexdigest(self) -> str:
        """Valid once the stream was read to its end."""
        if self._reader is not None:
            return self._reader.hexdigest()
        assert self._hash is not None
        return self._hash.hexdigest()


#: blocks waiting for a WriteBehind's thread: memory stays a few chunks whatever the size
WRITE_BEHIND_DEPTH = 2


class WriteBehind:
    """``write`` called by a thread, in order, while the caller prepares the next block.

    At most ``WRITE_BEHIND_DEPTH`` blocks wait; :meth:`close` returns once every block is
    written and raises what the writer raised (a failed write stops the writing: the
    blocks after it are dropped, and the caller's copy fails).  Blocks are ``bytes``: the
    caller must not change a block it handed over (no reused buffers).  As a context
    manager it closes on a normal exit and abandons on an exception.
    """

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=WRITE_BEHIND_DEPTH)
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

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


class ReadAhead:
    """``read`` served from blocks a thread reads from ``source`` ahead of the caller.

    The mirror of :class:`WriteBehind`: the source (a decoder: download, decryption,
    decompression, checksum) runs beside what the caller does with the bytes (writing
    them to disk), as two processes of a pipe would.  At most ``WRITE_BEHIND_DEPTH``
    blocks wait.  An error of the source is raised to the caller where its stream
    reaches it.  As a context manager it stops the thread on the way out (a read under
    way finishes first); the source must outlive it.
    """

    def __init__(self, source: BinaryIO, block: int = CHUNK) -> None:
        self._source = source
        self._block = block
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(
            maxsize=WRITE_BEHIND_DEPTH
        )
        self._buffer = b""
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drkit-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and (block := self._source.read(self._block)):
                self._put(block)
            self._put(None)
        except BaseException as exc:  # handed to the caller's thread
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size < 0 or len(self._buffer) < size):
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if item is None:
                self._ended = True
            else:
                self._buffer = self._buffer + item if self._buffer else item
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChecksumReader(Tap):
    """Passes bytes through and, at their end, raises CheckFailed unless their sha256 is
    ``expected`` (for objects with no checksum of their own: uncompressed, unencrypted)."""

    def __init__(self, source: BinaryIO, expected: str, name: str) -> None:
        self._hash = hashlib.sha256()
        super().__init__(source, self._hash.update, self._check)
        self._expected = expected
        self._name = name

    def _check(self) -> None:
        if self._hash.hexdigest() != self._expected:
            raise CheckFailed(
                f"{self._name}: sha256 mismatch with the checksum stored beside it "
                "(the object is corrupt)"
            )


#: zstd's multithreaded job size.  Its default at level 3 (8 MiB jobs, several in flight
#: with their output buffers) holds about 50 MiB for one stream; 1 MiB jobs hold about
#: 12 MiB for the same speed and a ratio within 0.1 %.
ZSTD_JOB_SIZE = 1024 * 1024


def _zstd_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def zstd_compressor(level: int, threads: int | None = None) -> zstandard.ZstdCompressor:
    """The compressor every zstd stage uses: ``zstd -T2`` at ``level``, checksummed, with
    jobs of ZSTD_JOB_SIZE (memory stays flat whatever the size).  ``threads``: zstd's
    worker threads (None: up to 2; 0 or 1: compress in the calling thread)."""
    import zstandard

    threads = _zstd_threads() if threads is None else threads
    if threads < 2:
        return zstandard.ZstdCompressor(level=level, write_checksum=True)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, job_size=ZSTD_JOB_SIZE, write_checksum=True
    )
    return zstandard.ZstdCompressor(compression_params=params)


def compress(
    source: BinaryIO, algorithm: str, level: int, *, threads: int | None = None
) -> BinaryIO:
    """A reader yielding ``source`` compressed with ``algorithm``; ``threads`` are zstd's
    worker threads (None: up to 2; 0: compress in the calling thread)."""
    if algorithm == "none":
        return source
    if algorithm == "zstd":
        cctx = zstd_compressor(level, threads)
        return cast(BinaryIO, cctx.stream_reader(source, read_size=CHUNK, closefd=False))
    if algorithm == "gzip":
        return cast(BinaryIO, IterReader(_gzip_chunks(source, level)))
    raise ValueError(f"unknown compression {algorithm!r}")


def _gzip_chunks(source: BinaryIO, level: int) -> Iterator[bytes]:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    while chunk := source.read(CHUNK):
        out = comp.compress(chunk)
        if out:
            yield out
    yield comp.flush()


def decompress(source: BinaryIO, algorithm: str, *, name: str = "object") -> BinaryIO:
    """A reader yielding ``source`` decompressed; corrupt input raises CheckFailed."""
    if algorithm == "none":
        return source
    if algorithm == "zstd":
        return cast(BinaryIO, IterReader(_zstd_chunks(source, name)))
    if algorithm == "gzip":
        return cast(BinaryIO, IterReader(_gunzip_chunks(source, name)))
    raise ValueError(f"unknown compression {algorithm!r}")


def _zstd_chunks(source: BinaryIO, name: str) -> Iterator[bytes]:
    """Decompress one or more concatenated zstd frames, CHUNK bytes at most at a time; a
    cut-off frame is an error.

    One ``decompressobj().decompress`` call returns everything its input holds, and a few
    KiB of zstd can hold gigabytes (a table of zeros), so the output comes from a stream
    reader whose reads are bounded.  That reader says nothing of a frame cut short, so
    :class:`ZstdFrames` follows the frame and block headers of the same bytes."""
    import zstandard

    frames = ZstdFrames(name)
    tapped = cast(BinaryIO, Tap(source, frames.feed))
    dctx = zstandard.ZstdDecompressor()
    try:
        with dctx.stream_reader(
            tapped, read_size=CHUNK, read_across_frames=True, closefd=False
        ) as reader:
            while out := reader.read(CHUNK):
                yield out
    except zstandard.ZstdError as exc:
        raise CheckFailed(f"{name}: corrupt zstd data ({exc})") from None
    frames.finish()


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class ZstdFrames:
    """Where a zstd stream's frames begin and end (RFC 8878), from their headers alone.

    Fed the compressed bytes in pieces cut anywhere; :meth:`finish` raises CheckFailed
    unless the stream ended exactly at the end of a frame (or held none).  Bytes that
    are not a frame are left to the decoder, which refuses them."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._head = b""  # bytes of the header under way (frame, block, skippable size)
        self._want = 4  # the header under way is this long
        self._state = "magic"
        self._skip = 0  # bytes to pass over (block contents, a checksum, a skippable frame)
        self._checksum = False
        self._broken = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._broken:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                if not self._skip and self._state == "trailer":
                    self._state, self._want = "magic", 4
                continue
            take = min(self._want - len(self._head), len(view))
            self._head += bytes(view[:take])
            view = view[take:]
            if len(self._head) == self._want:
                self._header()

    def _header(self) -> None:
        head, self._head = self._head, b""
        if self._state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == _ZSTD_MAGIC:
                self._state, self._want = "descriptor", 1
            elif magic in _SKIPPABLE:
                self._state, self._want = "skippable", 4
            else:
                self._broken = True  # not a frame: the decoder reports it
        elif self._state == "skippable":
            self._skip = int.from_bytes(head, "little")
            self._state, self._want = "trailer", 4
            if not self._skip:
                self._state = "magic"
        elif self._state == "descriptor":
            fhd = head[0]
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (0, 2, 4, 8)[fhd >> 6] or (1 if single else 0)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            if rest:
                self._state, self._want = "frame header", rest
            else:
                self._state, self._want = "block", 3
        elif self._state == "frame header":
            self._state, self._want = "block", 3
        elif self._state == "block":
            header = int.from_bytes(head, "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                self._broken = True  # reserved block type: the decoder refuses it
                return
            self._skip = 1 if kind == 1 else size
            if last:
                self._state = "trailer"
                self._want = 4
                if self._checksum:
                    self._skip += 4
                if not self._skip:
                    self._state = "magic"
            elif not self._skip:
                self._want = 3

    def finish(self) -> None:
        if self._broken:
            return
        if self._state != "magic" or self._head or self._skip:
            raise CheckFailed(f"{self._name}: truncated zstd stream (the object is incomplete)")


def _gunzip_chunks(source: BinaryIO, name: str) -> Iterator[bytes]:
    """gunzip, CHUNK bytes of output at most per step (deflate expands up to ~1000x)."""
    dobj = zlib.decompressobj(31)
    try:
        while chunk := source.read(CHUNK):
            data = chunk
            while data:
                out = dobj.decompress(data, CHUNK)
                if out:
                    yield out
                data = dobj.unconsumed_tail
        out = dobj.flush()
        if out:
            yield out
        if not dobj.eof:
            raise CheckFailed(f"{name}: truncated gzip stream (the object is incomplete)")
    except zlib.error as exc:
        raise CheckFailed(f"{name}: corrupt gzip data ({exc})") from None


def drain(source: BinaryIO) -> int:
    """Read a stream to its end, returning the byte count."""
    total = 0
    while chunk := source.read(CHUNK):
        total += len(chunk)
    return total


def copy_stream(source: BinaryIO, target: BinaryIO) -> int:
    total = 0
    while chunk := source.read(CHUNK):
        target.write(chunk)
        total += len(chunk)
    return total


#: where drkit spools data locally (see :func:`spool_dir`)
SPOOL_DIR_ENV = "DRKIT_TMPDIR"


def spool_dir() -> Path:
    """Where drkit spools data on local disk (dumps fetched for a parallel restore, a
    dump directory being uploaded, a drill's work directory): ``$DRKIT_TMPDIR``, else
    the system's temporary directory."""
    return Path(os.environ.get(SPOOL_DIR_ENV) or tempfile.gettempdir())
