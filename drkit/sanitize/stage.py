"""A masked table's sanitized rows, kept on local disk between the run's two passes.

The first pass sends every masked table through its strategies, which hands every
original to the leak index; only when *all* originals are known can a row be searched
for them, so the sanitized rows wait here (compressed, in an unlinked file under
``$DRKIT_TMPDIR``) until the second pass searches them and writes them to the build.
Memory stays one block; the disk holds the masked tables' sanitized text, compressed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import IO

import zstandard

_HEADER = 8


class Stage:
    """Blocks of COPY text written once, then read back in order (one thread at a time)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115 (closed by close())
            prefix="drkit-stage-", dir=os.environ.get("DRKIT_TMPDIR") or None
        )
        self._compress = zstandard.ZstdCompressor(level=1)
        self.rows = 0

    def write(self, block: bytes) -> None:
        data = self._compress.compress(block)
        self._file.write(len(data).to_bytes(_HEADER, "little"))
        self._file.write(data)

    def blocks(self) -> Iterator[bytes]:
        """The blocks as written (a second call reads them again)."""
        self._file.flush()
        self._file.seek(0)
        decompress = zstandard.ZstdDecompressor()
        while header := self._file.read(_HEADER):
            data = self._file.read(int.from_bytes(header, "little"))
            yield decompress.decompress(data)

    def close(self) -> None:
        self._file.close()
