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

from typing import Literal

from drkit.backup import (
    BackupDocument,
    BackupsDocument,
    CopyDocument,
    DeleteDocument,
    KeepDocument,
    PruneDocument,
    RestorePointDocument,
    VerifyDocument,
)
from drkit.demo import DemoDocument
from drkit.documents import Document, ErrorInfo
from drkit.documents import described as _field
from drkit.drill import DrillDocument
from drkit.policycheck import PolicyCheckDocument
from drkit.preflight import CheckDocument
from drkit.restore import PitrDocument, RestoreDocument, TableRestoreDocument, WalSearchDocument
from drkit.sanitize import (
    SanitizeCheckDocument,
    SanitizeDocument,
    SanitizeInitDocument,
    SanitizeScanDocument,
)
from drkit.schedule import ScheduleShowDocument
from drkit.status import StatusDocument
from drkit.wal import (
    ArchiveCommandDocument,
    PromoteTimelineDocument,
    WalFetchDocument,
    WalPushDocument,
    WalReceiveDocument,
)

#: the version of the documents' shapes, published in each schema file
SCHEMA_VERSION = 1


class Failure(Document):
    """What a command that failed writes when it has nothing else to report."""

    ok: Literal[False] = _field("always false")
    error: ErrorInfo = _field("why the command failed")


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
