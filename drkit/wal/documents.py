"""The ``--json`` documents of the WAL commands, as pydantic models (:mod:`drkit.documents`).

Apart from the modules that fill them (:mod:`.push`, :mod:`.commands`, :mod:`.receive`,
:mod:`.timelines`, :mod:`.entry`), so that the lines PostgreSQL runs, which never write
one, do not import pydantic: each ``document()`` imports this module when a document is
asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from drkit.documents import Document, Timestamp, described


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


class ArchiveCommandDocument(Document):
    """`drkit archive-command ENV --json`"""

    environment: str
    os_user: str = described("the OS user the lines are for (the server's)")
    archive_mode: Literal["on"]
    archive_command: str = described("the archive_command value, unquoted")
    restore_command: str = described("the restore_command value, unquoted")
    env_file: str | None = described(
        "the env file both lines name (0600, the server's OS user's): the variables the "
        "policy needs, resolved where archive-command ran; null when it needs none",
        default=None,
    )
    env_variables: list[str] = described(
        "the names the env file sets or unsets (never their values)", default_factory=list
    )


class WalFetchDocument(Document):
    """`drkit wal-fetch ENV NAME PATH --json` (exit 1 when it is not archived)"""

    name: str
    fetched: bool


def fetch_document(name: str, code: int) -> WalFetchDocument:
    """What ``wal-fetch`` did with ``name``, from the exit code of
    :func:`drkit.wal.entry.run_fetch` (the lean path, which writes no document)."""
    return WalFetchDocument(ok=code == 0, name=name, fetched=code == 0)


class WalReceiveDocument(Document):
    """`drkit wal-receive ENV [--drop-slot] --json`: what the run stored, or the slot dropped"""

    environment: str
    slot: str = described("the physical replication slot, drkit_ENV")
    dropped: bool = described("--drop-slot: whether a slot existed and was removed")
    created_slot: bool = described("whether this run created the slot")
    segments_stored: int = described("finished segments stored (or found stored identical)")
    partials_stored: int = described("copies of the segment being received stored under stream/")
    last_partial: str | None = described("the newest partial copy stored, <segment>.<end>.partial")
    duration_seconds: float = described("seconds the run took")
    spool: str | None = described(
        "the local directory pg_receivewal wrote into (not with --drop-slot)", default=None
    )
    segments: list[str] | None = described(
        "the finished segments stored, in order (not with --drop-slot)", default=None
    )


class PromoteTimelineDocument(Document):
    """`drkit promote-timeline ENV [TLI] --json`"""

    environment: str
    timeline: int = described("the timeline now recorded as production's")
    recorded_at: Timestamp
    source: str = described("who recorded it")
    previous: int | None = described("the timeline recorded before")


def promote_document(environment: str, record: dict[str, Any]) -> PromoteTimelineDocument:
    """``promote-timeline --json``, from the record :func:`drkit.wal.promote_timeline`
    stored (``timeline.json``: timeline, recorded_at, source, previous)."""
    return PromoteTimelineDocument.model_validate(
        {"ok": True, "environment": environment, **record}
    )
