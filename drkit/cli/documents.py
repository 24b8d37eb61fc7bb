"""The published shape of every ``--json`` document (see ARCHITECTURE.md, Command line).

One pydantic model per command's document (:data:`DOCUMENTS`), plus :class:`Failure`.
A document core code produces is the model it returns, defined next to that code
(``KeepDocument`` in :mod:`drkit.backup.keep`, ``StatusDocument`` in :mod:`drkit.status`,
...) and only registered here; the models still defined here are those of documents the
command line assembles itself.  :mod:`drkit.docgen` turns them into
``docs/schemas/output/*.json`` and ``tests/cli/test_json_contract.py`` validates real
outputs against those files.

Rules of the contract:

- every document has ``ok``; the shapes are versioned by :data:`SCHEMA_VERSION`, in
  each published schema (not in the documents: a failure is exactly
  ``{"ok": false, "error": {...}}``), raised only when a key is removed or changes
  meaning; adding a key is not a breaking change, so every object allows keys it does
  not list;
- a failing command's document has ``ok: false`` and ``error: {code, message}`` (a
  drill's own ``error`` is a string: why it could not run); a command that fails
  before it has anything to report writes just the :class:`Failure` document;
- timestamps are RFC 3339 in UTC with ``Z`` (``schedule show`` lists next runs in the
  policy's time zone, with its offset);
- sizes are bytes and durations seconds, and every key holding one says its unit
  (``size_bytes``, ``duration_seconds``, ``phases_seconds``); the older keys without
  it (``size``, ``duration``, ``seconds``, ``phases``...) stay beside them, with the
  same values, until a version 2 removes them.
"""

from __future__ import annotations

from typing import Any, Literal

from drkit.backup.keep import KeepDocument
from drkit.backup.order import SKEW_BOUND
from drkit.backup.prune import DeleteDocument, PruneDocument
from drkit.backup.verify import VerifyDocument
from drkit.demo.document import DemoDocument
from drkit.documents import Document, ErrorInfo, Shape, Timestamp
from drkit.documents import described as _field
from drkit.drill.report import DrillDocument
from drkit.preflight import CheckDocument
from drkit.restore.documents import PitrDocument, RestoreDocument, TableRestoreDocument
from drkit.restore.walsearch import WalSearchDocument
from drkit.sanitize.check import SanitizeCheckDocument
from drkit.sanitize.draft import SanitizeInitDocument
from drkit.sanitize.report import SanitizeDocument, SanitizeScanDocument
from drkit.schedule.timing import ScheduleShowDocument
from drkit.status import StatusDocument
from drkit.wal.documents import WalPushDocument

#: the version of the documents' shapes, published in each schema file
SCHEMA_VERSION = 1


class Failure(Document):
    """What a command that failed writes when it has nothing else to report."""

    ok: Literal[False] = _field("always false")
    error: ErrorInfo = _field("why the command failed")


# -- policy check / check / archive-command ------------------------------------------


class PolicyResult(Shape):
    ok: bool = _field("the policy is valid")
    policy: dict[str, Any] | None = _field(
        "the resolved policy, secrets masked (when valid)", default=None
    )
    error: str | None = _field("why the policy is invalid", default=None)


class RulesResult(Shape):
    ok: bool = _field("the rules file is valid")
    error: str = _field("why it is invalid (empty when valid)")


class PolicyCheckDocument(Document):
    """`drkit policy check [ENV] --json`"""

    policies: dict[str, PolicyResult] = _field("each environment's policy by its name")
    rules: dict[str, RulesResult] = _field("each sanitize rules file by its path")


class ArchiveCommandDocument(Document):
    """`drkit archive-command ENV --json`"""

    environment: str
    os_user: str = _field("the OS user the lines are for (the server's)")
    archive_mode: Literal["on"]
    archive_command: str = _field("the archive_command value, unquoted")
    restore_command: str = _field("the restore_command value, unquoted")
    env_file: str | None = _field(
        "the env file both lines name (0600, the server's OS user's): the variables the "
        "policy needs, resolved where archive-command ran; null when it needs none",
        default=None,
    )
    env_variables: list[str] = _field(
        "the names the env file sets or unsets (never their values)", default_factory=list
    )


# -- backups -----------------------------------------------------------------------


class BackupSummary(Shape):
    id: str = _field("the backup ID (what restore and verify take)")
    kind: Literal["logical", "physical"]
    environment: str
    databases: list[str] = _field("the databases it holds")
    started_at: Timestamp
    finished_at: Timestamp
    consistent_at: Timestamp | None = _field("the point the backup restores to")
    duration_seconds: float = _field("seconds the backup took")
    size_bytes: int = _field("bytes stored in the repository (compressed, encrypted)")
    raw_size_bytes: int = _field("bytes before compression and encryption")
    duration: float = _field(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
    size: int = _field("the same as size_bytes (kept for version 1; prefer size_bytes)")
    raw_size: int = _field("the same as raw_size_bytes (kept for version 1; prefer raw_size_bytes)")
    tables: int | None = _field("tables dumped (logical)", default=None)
    rows: int | None = _field("rows counted at dump time (logical)", default=None)
    wal_start: str | None = _field("start WAL location (physical)", default=None)
    wal_stop: str | None = _field("stop WAL location (physical)", default=None)
    timeline: int | None = _field("timeline of the base backup (physical)", default=None)
    incremental: bool | None = _field(
        "an incremental base backup (physical, PostgreSQL 17+)", default=None
    )
    parent: str | None = _field(
        "the backup an incremental is relative to; restoring it needs the whole chain",
        default=None,
    )
    consistent_lsn: str | None = _field(
        "the WAL position the backup is consistent at, as the server said (logical: its "
        "snapshot; physical: its stop point); with consistent_timeline and "
        "system_identifier it orders backups (null: ordered by the server's time)",
        default=None,
    )
    consistent_timeline: int | None = _field("the timeline of consistent_lsn", default=None)
    system_identifier: str | None = _field(
        "the cluster's system identifier (pg_control_system())", default=None
    )
    clock_skew_seconds: float | None = _field(
        "the database server's clock minus drkit's host clock while the backup ran "
        "(negative: the host was ahead); null when unknown",
        default=None,
    )
    clock_skewed: bool = _field(
        f"true when clock_skew_seconds is beyond {SKEW_BOUND.total_seconds():g} s either way: "
        "the id, started_at and "
        "finished_at come from a wrong host clock (the order of backups never reads them)",
        default=False,
    )


class BackupDocument(Document, BackupSummary):
    """`drkit backup ENV [--physical] --json`: the backup just taken"""


class BackupRow(BackupSummary):
    tiers: list[str] = _field(
        "the retention tiers it currently satisfies (a keep by hand reads 'kept by hand ...')"
    )
    kept_until: str | None = _field(
        "kept by hand (drkit keep): the RFC 3339 time the keep ends, or 'forever' (until "
        "released); null when nobody keeps it",
        default=None,
    )


class RestorePointRow(Shape):
    name: str = _field("what --target-name takes")
    environment: str
    created_at: Timestamp = _field("the server's clock when it was created")
    lsn: str = _field("the end of the restore point's WAL record: where recovery to it pauses")
    timeline: int
    system_identifier: str = _field("the cluster it was created on (pg_control_system())")
    segment: str = _field("the WAL segment holding it, archived before it was recorded")
    next_xid: int | None = _field("the first transaction ID not yet assigned then")


class BackupsDocument(Document):
    """`drkit backups ENV --json`: newest first, in the server's order (WAL position
    within a cluster, then the server's time), never by id or host time"""

    environment: str
    repository: str = _field("the repository location, credentials masked")
    backups: list[BackupRow]
    restore_points: list[RestorePointRow] = _field(
        "the restore points drkit restore-point recorded, oldest first", default_factory=list
    )


class RestorePointDocument(Document, RestorePointRow):
    """`drkit restore-point ENV NAME --json`: the restore point created, archived and
    recorded"""


class CopyRun(Shape):
    """What one run did to one copy (``copies.NAME``)."""

    name: str = _field("the copy's name in the policy")
    location: str = _field("where the copy lives (the environment's prefix in it)")
    ok: bool = _field("false: this copy failed (error says why); the others still ran")
    copied_objects: int = _field("objects copied, each read back and its sha256 compared")
    copied_bytes: int = _field("bytes copied")
    present_objects: int = _field("objects the copy already held (not sent again)")
    updated_records: int = _field("records rewritten in place (timeline, keep records)")
    published: list[str] = _field("backups whose manifest this run wrote in the copy")
    skipped: list[str] = _field("backups the copy's own retention leaves out (not copied)")
    error: str | None = _field("why this copy failed")


class CopyDocument(Document):
    """`drkit copy ENV [--repo NAME] --json` (one failed copy fails the command)"""

    environment: str
    copies: list[CopyRun]


# -- WAL -----------------------------------------------------------------------------


class WalFetchDocument(Document):
    """`drkit wal-fetch ENV NAME PATH --json` (exit 1 when it is not archived)"""

    name: str
    fetched: bool


class WalReceiveDocument(Document):
    """`drkit wal-receive ENV [--drop-slot] --json`: what the run stored, or the slot dropped"""

    environment: str
    slot: str = _field("the physical replication slot, drkit_ENV")
    dropped: bool = _field("--drop-slot: whether a slot existed and was removed")
    created_slot: bool = _field("whether this run created the slot")
    segments_stored: int = _field("finished segments stored (or found stored identical)")
    partials_stored: int = _field("copies of the segment being received stored under stream/")
    last_partial: str | None = _field("the newest partial copy stored, <segment>.<end>.partial")
    duration_seconds: float = _field("seconds the run took")


class PromoteTimelineDocument(Document):
    """`drkit promote-timeline ENV [TLI] --json`"""

    environment: str
    timeline: int = _field("the timeline now recorded as production's")
    recorded_at: Timestamp
    source: str = _field("who recorded it")
    previous: int | None = _field("the timeline recorded before")


#: each published document: file stem -> its model
DOCUMENTS: dict[str, type[Document]] = {
    "policy-check": PolicyCheckDocument,
    "check": CheckDocument,
    "archive-command": ArchiveCommandDocument,
    "backup": BackupDocument,
    "backups": BackupsDocument,
    "verify": VerifyDocument,
    "prune": PruneDocument,
    "keep": KeepDocument,
    "delete": DeleteDocument,
    "copy": CopyDocument,
    "restore": RestoreDocument,
    "restore-point-in-time": PitrDocument,
    "restore-tables": TableRestoreDocument,
    "restore-point": RestorePointDocument,
    "wal-search": WalSearchDocument,
    "wal-push": WalPushDocument,
    "wal-fetch": WalFetchDocument,
    "promote-timeline": PromoteTimelineDocument,
    "wal-receive": WalReceiveDocument,
    "sanitize": SanitizeDocument,
    "sanitize-check": SanitizeCheckDocument,
    "sanitize-scan": SanitizeScanDocument,
    "sanitize-init": SanitizeInitDocument,
    "drill": DrillDocument,
    "status": StatusDocument,
    "schedule-show": ScheduleShowDocument,
    "demo": DemoDocument,
}
