"""Streaming stages: compression, hashing, byte counting — each a file-like reader.

Stages compose by wrapping readers: ``HashingReader(compress(dump_stdout))`` is what a
backup uploads.  Every stage reads a bounded chunk at a time, so memory stays flat
whatever the size of the data.  Encryption (age) plugs in as one more stage in
:mod:`drkit.crypto`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, cast

from drkit.errors import CheckFailed

if TYPE_CHECKING:
    import zstandard

CHUNK = 1024 * 1024
COMPRESSION_SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}


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


class HashingReader:
    """Passes bytes through while counting them and computing their sha256."""

    def __init__(self, source: BinaryIO, on_bytes: Callable[[int], None] | None = None) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.count = 0
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self._on_bytes is not None:
                self._on_bytes(len(data))
        return data

    def readable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
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
    caller must not change a block it handed over (no reused buffers).
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


class ChecksumReader:
    """Passes bytes through and, at their end, raises CheckFailed unless their sha256 is
    ``expected`` (for objects with no checksum of their own: uncompressed, unencrypted)."""

    def __init__(self, source: BinaryIO, expected: str, name: str) -> None:
        self._source = source
        self._expected = expected
        self._name = name
        self._hash = hashlib.sha256()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._hash.update(data)
        elif not self._done and size != 0:
            self._done = True
            if self._hash.hexdigest() != self._expected:
                raise CheckFailed(
                    f"{self._name}: sha256 mismatch with the checksum stored beside it "
                    "(the object is corrupt)"
                )
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._source.close()


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
    """Decompress one or more concatenated zstd frames; a cut-off frame is an error."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    try:
        while chunk := source.read(CHUNK):
            while chunk:
                in_frame = True
                out = dobj.decompress(chunk)
                if out:
                    yield out
                if dobj.eof:
                    chunk = dobj.unused_data
                    dobj = dctx.decompressobj()
                    in_frame = False
                else:
                    chunk = b""
        if in_frame:
            raise CheckFailed(f"{name}: truncated zstd stream (the object is incomplete)")
    except zstandard.ZstdError as exc:
        raise CheckFailed(f"{name}: corrupt zstd data ({exc})") from None


def _gunzip_chunks(source: BinaryIO, name: str) -> Iterator[bytes]:
    dobj = zlib.decompressobj(31)
    try:
        while chunk := source.read(CHUNK):
            out = dobj.decompress(chunk)
            if out:
                yield out
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
