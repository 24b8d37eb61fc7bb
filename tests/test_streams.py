"""Streaming stages: round trips, corruption and truncation detection, bounded reads."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from drkit.errors import CheckFailed
from drkit.streams import GatedReader, HashingReader, compress, decompress, drain


@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "none"])
def test_round_trip(algorithm: str) -> None:
    data = os.urandom(300_000) + b"abc" * 1_000_000
    packed = compress(io.BytesIO(data), algorithm, 3).read()
    if algorithm != "none":
        assert len(packed) < len(data)
    assert decompress(io.BytesIO(packed), algorithm).read() == data


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_truncated_and_corrupt_streams_fail(algorithm: str) -> None:
    data = os.urandom(100_000) + b"xyz" * 500_000
    packed = compress(io.BytesIO(data), algorithm, 3).read()
    with pytest.raises(CheckFailed, match=r"truncated|corrupt"):
        drain(decompress(io.BytesIO(packed[: len(packed) // 2]), algorithm, name="obj"))
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(CheckFailed, match="obj"):
        drain(decompress(io.BytesIO(bytes(broken)), algorithm, name="obj"))


def test_concatenated_zstd_frames() -> None:
    a = compress(io.BytesIO(b"a" * 10_000), "zstd", 3).read()
    b = compress(io.BytesIO(b"b" * 10_000), "zstd", 3).read()
    assert decompress(io.BytesIO(a + b), "zstd").read() == b"a" * 10_000 + b"b" * 10_000


def test_hashing_reader_counts_and_hashes() -> None:
    import hashlib

    data = os.urandom(3_000_000)
    reader = HashingReader(io.BytesIO(data))
    assert drain(reader) == len(data)  # type: ignore[arg-type]
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()


class Trickle:
    """A pipe-like stream: every read returns at most 1,000 bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(1000, size) if size and size > 0 else 1000)


def test_read_full_fills_short_reads() -> None:
    from drkit.streams import read_full

    stream = Trickle(b"x" * 5500)
    assert len(read_full(stream, 4096)) == 4096  # type: ignore[arg-type]
    assert len(read_full(stream, 4096)) == 1404  # type: ignore[arg-type]
    assert read_full(stream, 4096) == b""  # type: ignore[arg-type]


def test_s3_upload_of_a_short_reading_stream_uses_full_parts(s3_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Parts of a multipart upload must be full-size even when the source trickles."""
    import drkit.storage.s3 as s3
    from drkit.storage import RepositoryConfig, open_backend

    monkeypatch.setattr(s3, "PART_SIZE", 5 * 1024 * 1024)
    bucket = s3_server.create_bucket()
    backend = open_backend(
        RepositoryConfig(url=f"s3://{bucket}/p", endpoint_url=s3_server.endpoint)
    )
    data = os.urandom(11 * 1024 * 1024 + 17)
    calls: list[int] = []
    original = backend.upload_client.upload_part  # backups go up through it

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(kwargs["Body"].read()))
        kwargs["Body"].seek(0)
        return original(**kwargs)

    monkeypatch.setattr(backend.upload_client, "upload_part", spy)
    backend.put_stream("k", Trickle(data))  # type: ignore[arg-type]
    assert backend.get_bytes("k") == data
    assert sorted(calls) == [1024 * 1024 + 17, 5 * 1024 * 1024, 5 * 1024 * 1024]


def test_zstd_compression_memory_stays_small() -> None:
    """zstd's default multithreaded jobs at level 3 hold ~40 MiB more for one stream (an
    S3 backup went over 120 MB with them); drkit's hold a few MiB."""
    import subprocess
    import sys

    script = """
import os, resource
from drkit.streams import compress, drain
block = os.urandom(4 << 20).hex().encode()
class Text:
    left = 256
    def read(self, size=-1):
        if self.left <= 0:
            return b""
        self.left -= 1
        i = self.left * 7919 % (7 << 20)
        return block[i : i + (1 << 20)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
drain(compress(Text(), "zstd", 3))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    grown_kib = int(out.strip())
    assert grown_kib < 16 * 1024, f"compressing 256 MiB grew the process by {grown_kib} KiB"


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_decompression_memory_is_bounded_whatever_the_ratio(algorithm: str) -> None:
    """A few KiB of zstd can expand to tens of MiB (a table of zeros, a repeated value):
    decoding must hand the output on in bounded pieces, never as one allocation."""
    import tracemalloc

    size = 256 * 1024 * 1024
    packed = compress(_Zeros(size), algorithm, 3).read()  # type: ignore[arg-type]
    assert len(packed) < size // 200  # deflate stops near 1000:1, zstd goes far beyond
    reader = decompress(io.BytesIO(packed), algorithm, name="zeros")
    tracemalloc.start()
    try:
        total = drain(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 32 * 1024 * 1024, f"decoding held {peak >> 20} MiB at once"


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = min(self.left, size if size and size > 0 else 1 << 20)
        self.left -= n
        return bytes(n)


def test_a_zstd_stream_cut_anywhere_inside_a_frame_is_refused() -> None:
    """Every cut of a two-frame stream that is not at a frame's end: in a frame header, a
    block header, a block, the checksum."""
    import zstandard

    first = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(
        os.urandom(5000) + b"z" * 300_000
    )
    second = compress(io.BytesIO(b"tail" * 50_000), "zstd", 3).read()
    whole = first + second
    assert decompress(io.BytesIO(whole), "zstd").read().endswith(b"tail")
    ends = {len(first), len(whole)}
    cuts = sorted({*range(1, 40), *range(len(first) - 8, len(first) + 12), len(whole) - 1})
    cuts += list(range(40, len(whole), 997))
    for cut in cuts:
        if cut in ends:
            continue
        with pytest.raises(CheckFailed, match=r"truncated|corrupt"):
            drain(decompress(io.BytesIO(whole[:cut]), "zstd", name="obj"))


def test_skippable_zstd_frames_are_passed_over_and_checked_whole() -> None:
    import zstandard

    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    frame = zstandard.ZstdCompressor().compress(b"data" * 1000)
    assert decompress(io.BytesIO(skippable + frame), "zstd").read() == b"data" * 1000
    for cut in (6, 10, len(skippable) + 3):
        with pytest.raises(CheckFailed, match=r"truncated|corrupt"):
            drain(decompress(io.BytesIO((skippable + frame)[:cut]), "zstd", name="obj"))


class _Counting(io.RawIOBase):
    """A source that records how many readers are inside a read at once."""

    inside = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with _Counting.lock:
            _Counting.inside += 1
            _Counting.most = max(_Counting.most, _Counting.inside)
        time.sleep(0.002)
        with _Counting.lock:
            _Counting.inside -= 1
        return self._data.read(size)


def test_gated_readers_read_at_most_as_many_at_a_time_as_there_are_slots() -> None:
    """The WAL worker's CPU stage: each reader holds a slot from its first read to its
    end, so 6 concurrent uploads compress at most 2 at a time, and a reader at its end
    (its upload under way) holds none."""
    slots = threading.BoundedSemaphore(2)
    data = os.urandom(64 * 1024)
    got: list[bytes] = []

    def one() -> None:
        gated = GatedReader(_Counting(data), slots)  # type: ignore[arg-type]
        parts = []
        while chunk := gated.read(4096):
            parts.append(chunk)
        got.append(b"".join(parts))

    workers = [threading.Thread(target=one) for _ in range(6)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert got == [data] * 6
    assert _Counting.most == 2  # contended, and never more than the slots
    # every reader ended: both slots are free again
    assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
    slots.release()
    slots.release()

    # a reader that fails, or is given up before its end, gives its slot back
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            raise OSError("I/O error")

    failing = GatedReader(Broken(), slots)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        failing.read(10)
    early = GatedReader(io.BytesIO(data), slots)
    assert early.read(10) == data[:10]
    early.release()
    early.release()  # once only
    assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
    assert not slots.acquire(blocking=False)
