"""Streaming stages: round trips, corruption and truncation detection, bounded reads."""

from __future__ import annotations

import io
import os

import pytest

from drkit.errors import CheckFailed
from drkit.streams import HashingReader, compress, decompress, drain


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
    from drkit.config import RepositoryConfig
    from drkit.storage.factory import open_backend

    monkeypatch.setattr(s3, "PART_SIZE", 5 * 1024 * 1024)
    bucket = s3_server.create_bucket()
    backend = open_backend(
        RepositoryConfig(url=f"s3://{bucket}/p", endpoint_url=s3_server.endpoint)
    )
    data = os.urandom(11 * 1024 * 1024 + 17)
    calls: list[int] = []
    original = backend.client.upload_part

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(kwargs["Body"].read()))
        kwargs["Body"].seek(0)
        return original(**kwargs)

    monkeypatch.setattr(backend.client, "upload_part", spy)
    backend.put_stream("k", Trickle(data))  # type: ignore[arg-type]
    assert backend.get_bytes("k") == data
    assert sorted(calls) == [1024 * 1024 + 17, 5 * 1024 * 1024, 5 * 1024 * 1024]
