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
