"""The data offsets of a custom-format archive (``pg_dump -Fc``) that was written to a pipe.

pg_dump writes an archive's table of contents first.  Writing to a file, it seeks back
at the end and fills in where each table's data block starts; writing to a pipe (as a
streaming backup does) it cannot, and every TOC entry says "offset not set".  A
``pg_restore -j N`` of such an archive then has each worker skip through every data
chunk (one per row with ``-Z0``) before the block it wants, and cannot order the jobs
largest first: on the sample database that made ``--jobs 2`` 1.3-1.6 times slower
than the same restore of a ``pg_dump -f`` archive.

:func:`set_data_offsets` writes the offsets into a local copy of the archive, in place
(each offset field has a fixed size, as when pg_dump rewrites its TOC itself), so that
``pg_restore`` seeks straight to each block; :class:`OffsetFinder` finds the same offsets
while the copy is being written, which spares reading it once more.  Neither changes
anything it cannot prove:

- only archive versions 1.12-1.16 (pg_dump 9.0-18) of the custom format, uncompressed
  (``-Z0``, what drkit dumps with), whose TOC parses to its end;
- a TABLE DATA block's end is the first run of ``1 + intSize`` zero bytes after its
  header: the chunk holding zero length.  Every other chunk is a non-zero length (at
  most ``intSize`` zero bytes, the sign byte included) followed by COPY text, which
  holds no NUL byte (type output functions return C strings);
- large-object blocks hold binary data, so they are walked chunk by chunk (16 KiB each);
- every block must belong to a TOC entry with data, once, and the blocks must end
  exactly at the end of the file.

Anything else leaves the file as it was (pg_restore still reads it, only slower).  A
wrong offset could not restore wrong data silently either: pg_restore checks the
block id it finds at an offset against the entry's (``found unexpected block ID``).
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLK_DATA = 1
BLK_BLOBS = 3
K_OFFSET_POS_NOT_SET = 1
K_OFFSET_POS_SET = 2
K_OFFSET_NO_DATA = 3
OLDEST = (1, 12)  # pg_dump 9.0
NEWEST = (1, 16)  # pg_dump 17 and 18
WINDOW = 16 * 1024 * 1024  # what the search for a block's end maps at a time


class _Unsupported(Exception):
    """The archive is not one whose offsets can be proven (the reason says why)."""


class _CutOff(_Unsupported):
    """The bytes end before what is being read (more may come, when streaming)."""


@dataclass
class _Entry:
    field: int  # where its offset field (flag byte + offSize bytes) starts
    flag: int


class _Reader:
    """ReadByte / ReadInt / ReadStr of pg_backup_archiver.c over a buffer."""

    def __init__(self, buf: mmap.mmap | bytes | bytearray, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.int_size = 4
        self.end = len(buf)

    def need(self, n: int) -> None:
        if n < 0:
            raise _Unsupported(f"negative length at byte {self.pos}")
        if self.pos + n > self.end:
            raise _CutOff(f"cut off at byte {self.pos}")

    def byte(self) -> int:
        self.need(1)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def int_(self) -> int:
        self.need(1 + self.int_size)
        sign = self.buf[self.pos]
        value = int.from_bytes(self.buf[self.pos + 1 : self.pos + 1 + self.int_size], "little")
        self.pos += 1 + self.int_size
        return -value if sign else value

    def str_(self) -> bytes | None:
        length = self.int_()
        if length < 0:
            return None
        self.need(length)
        value = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return value


def set_data_offsets(path: Path) -> int:
    """Fill in the unset data offsets of the custom-format archive ``path`` (see the
    module docstring); returns how many were set, 0 when none was or could be."""
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size < len(MAGIC):
            return 0
        try:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                offsets, off_size = _find_offsets(buf)
        except (_Unsupported, OSError, ValueError) as exc:  # OSError: a file system without mmap
            log.info("%s: data offsets left unset: %s", path.name, exc)
            return 0
        _write_offsets(f.fileno(), offsets, off_size)
    log.debug("%s: %d data offsets set", path.name, len(offsets))
    return len(offsets)


def _write_offsets(fd: int, offsets: list[tuple[int, int]], off_size: int) -> None:
    for field, offset in offsets:
        os.pwrite(fd, bytes([K_OFFSET_POS_SET]) + offset.to_bytes(off_size, "little"), field)


def _find_offsets(buf: mmap.mmap) -> tuple[list[tuple[int, int]], int]:
    """[(offset field position, data block position)] for the entries whose offset is
    unset, and the archive's offset size."""
    r = _Reader(buf)
    entries, off_size = _read_head(r)
    if all(e.flag != K_OFFSET_POS_NOT_SET for e in entries.values()):
        raise _Unsupported("no unset offset")
    return _walk_blocks(r, entries), off_size


def _read_head(r: _Reader) -> tuple[dict[int, _Entry], int]:
    """Read the header and the TOC from ``r.buf``'s start: (entries, offset size); ``r``
    is left after the TOC, with the archive's integer size."""
    if bytes(r.buf[: len(MAGIC)]) != MAGIC:
        if len(r.buf) < len(MAGIC) and bytes(r.buf) == MAGIC[: len(r.buf)]:
            raise _CutOff("cut off in the magic")
        raise _Unsupported("not a custom-format archive")
    r.pos = len(MAGIC)
    version = (r.byte(), r.byte())
    r.byte()  # revision
    if not OLDEST <= version <= NEWEST:
        raise _Unsupported(f"archive version {version[0]}.{version[1]}")
    r.int_size = r.byte()
    off_size = r.byte()
    if not 1 <= r.int_size <= 8 or not 1 <= off_size <= 8:
        raise _Unsupported(f"integer size {r.int_size}, offset size {off_size}")
    if r.byte() != FORMAT_CUSTOM:
        raise _Unsupported("not the custom format")
    compressed = r.byte() if version >= (1, 15) else r.int_()  # algorithm / level
    if compressed != 0:
        raise _Unsupported("compressed data")
    for _ in range(7):  # creation date: sec, min, hour, mday, mon, year, isdst
        r.int_()
    for _ in range(3):  # database name, server and pg_dump versions
        r.str_()
    return _read_toc(r, version, off_size), off_size


def _read_toc(r: _Reader, version: tuple[int, int], off_size: int) -> dict[int, _Entry]:
    entries: dict[int, _Entry] = {}
    count = r.int_()
    if count < 0:
        raise _Unsupported("negative TOC size")
    for _ in range(count):
        dump_id = r.int_()
        r.int_()  # had a data dumper
        for _ in range(4):  # table oid, oid, tag, desc
            r.str_()
        r.int_()  # section
        # defn, drop and copy statements, namespace, tablespace, then (1.14) table AM
        for _ in range(6 if version >= (1, 14) else 5):
            r.str_()
        if version >= (1, 16):
            r.int_()  # relkind
        r.str_()  # owner
        r.str_()  # "false": with oids
        while r.str_() is not None:  # dependencies, up to a NULL string
            pass
        field = r.pos
        flag = r.byte()
        r.need(off_size)
        r.pos += off_size
        if flag not in (K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET, K_OFFSET_NO_DATA):
            raise _Unsupported(f"offset flag {flag}")
        if dump_id <= 0 or dump_id in entries:
            raise _Unsupported(f"TOC entry id {dump_id}")
        entries[dump_id] = _Entry(field, flag)
    return entries


def _walk_blocks(r: _Reader, entries: dict[int, _Entry]) -> list[tuple[int, int]]:
    terminator = bytes(1 + r.int_size)  # a zero chunk length: sign byte and value
    found: dict[int, int] = {}
    while r.pos < r.end:
        start = r.pos
        kind = r.byte()
        dump_id = r.int_()
        _block_start(entries, found, kind, dump_id, start)
        if kind == BLK_DATA:
            assert isinstance(r.buf, mmap.mmap)
            end = _find(r.buf, terminator, r.pos)
            if end < 0:
                raise _Unsupported(f"data block {dump_id} has no end")
            r.pos = end + len(terminator)
        else:  # BLK_BLOBS
            while r.int_() != 0:  # large object oid; 0 ends the block
                _skip_chunks(r)
    return _unset(entries, found)


def _block_start(
    entries: dict[int, _Entry], found: dict[int, int], kind: int, dump_id: int, at: int
) -> None:
    """Record that the data block of ``dump_id`` starts at byte ``at``, unless the TOC
    has no data for it, it was seen before, or it is of a kind never walked."""
    entry = entries.get(dump_id)
    if entry is None or entry.flag == K_OFFSET_NO_DATA or dump_id in found:
        raise _Unsupported(f"data block for TOC entry {dump_id} at byte {at}")
    if kind not in (BLK_DATA, BLK_BLOBS):
        raise _Unsupported(f"block type {kind} at byte {at}")
    found[dump_id] = at


def _unset(entries: dict[int, _Entry], found: dict[int, int]) -> list[tuple[int, int]]:
    """[(offset field position, block position)] of the blocks whose offset is unset."""
    return [
        (entries[dump_id].field, pos)
        for dump_id, pos in found.items()
        if entries[dump_id].flag == K_OFFSET_POS_NOT_SET
    ]


def _find(buf: mmap.mmap, needle: bytes, start: int) -> int:
    """``buf.find(needle, start)`` a window at a time, handing back the pages it has read:
    a mapped page counts in the process's RSS, which must not grow with the archive."""
    release = getattr(mmap, "MADV_DONTNEED", None)
    pos = start
    while pos < len(buf):
        stop = min(len(buf), pos + WINDOW)
        hit = buf.find(needle, pos, stop + len(needle) - 1)  # a match across the edge too
        low, high = pos - pos % mmap.PAGESIZE, stop - stop % mmap.PAGESIZE
        if release is not None and high > low:
            buf.madvise(release, low, high - low)  # read again from the page cache if need be
        if hit >= 0:
            return hit
        pos = stop
    return -1


def _skip_chunks(r: _Reader) -> None:
    while (length := r.int_()) != 0:
        if length < 0:
            raise _Unsupported(f"chunk length {length} at byte {r.pos}")
        r.need(length)
        r.pos += length


class OffsetFinder:
    """The data offsets of a custom-format archive, found while the archive is written
    front to back (:meth:`feed` each piece as it is written), by the same rules as
    :func:`set_data_offsets` — which then need not read the whole file once more.

    It holds the TOC until it parses, then only the bytes of a block header or the last
    few of a search: its memory does not grow with the archive."""

    _FIRST_TRY = 4096

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # the archive position of self._buf[0]
        self._state = "toc"
        self._next_try = self._FIRST_TRY
        self._entries: dict[int, _Entry] = {}
        self._found: dict[int, int] = {}
        self._int_size = 4
        self._off_size = 8
        self._skip = 0
        self._failure: str | None = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the archive, in order."""
        if self._failure is not None or not data:
            return
        self._buf += data
        try:
            self._advance(final=False)
        except _Unsupported as exc:
            self._fail(str(exc))

    def apply(self, path: Path) -> int | None:
        """After the last :meth:`feed`: write the offsets found into ``path`` (the
        archive fed); how many were set (0: none unset), or None when this archive's
        offsets could not be proven while streaming (the reason is logged)."""
        if self._failure is None:
            try:
                self._advance(final=True)
                if self._state != "head" or self._buf:
                    raise _Unsupported(f"the archive ends inside a block ({self._state})")
            except _Unsupported as exc:
                self._fail(str(exc))
        if self._failure is not None:
            log.info("%s: data offsets not found while writing: %s", path.name, self._failure)
            return None
        offsets = _unset(self._entries, self._found)
        if offsets:
            fd = os.open(path, os.O_WRONLY)
            try:
                _write_offsets(fd, offsets, self._off_size)
            finally:
                os.close(fd)
        log.debug("%s: %d data offsets set while writing", path.name, len(offsets))
        return len(offsets)

    def _fail(self, reason: str) -> None:
        self._failure = reason
        self._buf = bytearray()

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._base += n

    def _int(self, at: int = 0) -> int:
        r = _Reader(self._buf, at)
        r.int_size = self._int_size
        return r.int_()

    def _advance(self, *, final: bool) -> None:
        while True:
            word = 1 + self._int_size  # a sign byte and the value
            if self._state == "toc":
                if len(self._buf) < self._next_try and not final:
                    return
                r = _Reader(self._buf)
                try:
                    self._entries, self._off_size = _read_head(r)
                except _CutOff:
                    if final:
                        raise
                    self._next_try = 2 * len(self._buf)  # parse again when twice as long
                    return
                self._int_size = r.int_size
                self._consume(r.pos)
                self._state = "head"
            elif self._state == "head":
                if len(self._buf) < 1 + 1 + self._int_size:
                    return
                kind, dump_id = self._buf[0], self._int(1)
                _block_start(self._entries, self._found, kind, dump_id, self._base)
                self._consume(1 + word)
                self._state = "data" if kind == BLK_DATA else "blob"
            elif self._state == "data":  # up to the first zero chunk length (see the module doc)
                terminator = bytes(word)
                end = self._buf.find(terminator)
                if end < 0:  # keep what could start a terminator cut by this piece's end
                    self._consume(max(0, len(self._buf) - (word - 1)))
                    return
                self._consume(end + word)
                self._state = "head"
            elif self._state == "blob":  # a large object's oid; 0 ends the block
                if len(self._buf) < word:
                    return
                oid = self._int()
                self._consume(word)
                self._state = "head" if oid == 0 else "chunk"
            elif self._state == "chunk":
                if len(self._buf) < word:
                    return
                length = self._int()
                if length < 0:
                    raise _Unsupported(f"chunk length {length} at byte {self._base}")
                self._consume(word)
                self._skip = length
                self._state = "skip" if length else "blob"
            else:  # "skip": a large object's chunk of data
                n = min(self._skip, len(self._buf))
                self._consume(n)
                self._skip -= n
                if self._skip:
                    return
                self._state = "chunk"
