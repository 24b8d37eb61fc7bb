"""The ``--json`` documents of the WAL commands, as pydantic models (:mod:`drkit.documents`).

Apart from :mod:`drkit.wal.push`, so that the archive_command path, which never writes
one, does not import pydantic: :meth:`drkit.wal.push.PushReport.document` imports this
module when a document is asked for.
"""

from __future__ import annotations

from typing import Literal

from drkit.documents import Document, described


class WalPushDocument(Document):
    """`drkit wal-push ENV PATH --json`"""

    name: str = described("the WAL file archived")
    status: Literal["stored", "exists", "acked"] = described(
        "stored now; exists: stored before, identical content; acked: async mode, the worker had stored it"
    )
    stored_size_bytes: int = described("bytes stored")
    raw_size_bytes: int = described("bytes of the WAL file")
    archived_ahead: list[str] = described("ready files archived ahead of the server")
    ahead_failed: dict[str, str] = described("ready files that could not be, and why")
    duration_seconds: float = described("seconds the push took")
    stored_size: int = described(
        "the same as stored_size_bytes (kept for version 1; prefer stored_size_bytes)"
    )
    raw_size: int = described(
        "the same as raw_size_bytes (kept for version 1; prefer raw_size_bytes)"
    )
    seconds: float = described(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
