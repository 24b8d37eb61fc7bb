"""The published shape of every ``--json`` document (see ARCHITECTURE.md, Command line).

One pydantic model per command's document, plus :class:`Failure`.  They describe what
the commands write; :mod:`drkit.docgen` turns them into ``docs/schemas/output/*.json``
and ``tests/cli/test_json_contract.py`` validates real outputs against those files.

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

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drkit.backup.order import SKEW_BOUND

#: the version of the documents' shapes, published in each schema file
SCHEMA_VERSION = 1

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 timestamp in UTC (Z)",
    ),
]
LocalTimestamp = Annotated[
    str,
    Field(
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 timestamp with the offset of the policy's time zone",
    ),
]


def _field(description: str, **kwargs: Any) -> Any:
    return Field(description=description, **kwargs)


class Shape(BaseModel):
    """An object of a document: keys it does not list are allowed (added later)."""

    model_config = ConfigDict(extra="allow")


class ErrorInfo(Shape):
    code: int = _field("the exit code (docs/exit-codes.md)")
    message: str = _field("the one error line, secrets masked")


class Document(Shape):
    ok: bool = _field("true when the command succeeded (exit code 0)")
    error: ErrorInfo | None = _field("why the command failed (only when ok is false)", default=None)


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


class CheckLine(Shape):
    name: str = _field("what was checked")
    status: Literal["PASS", "FAIL", "WARN"] = _field(
        "the verdict; WARN: something to fix that breaks nothing (ok stays true)"
    )
    detail: str = _field("what was seen, or what to fix")


class CheckDocument(Document):
    """`drkit check ENV --json` (exit 3 when a check fails; a WARN alone exits 0)"""

    environment: str
    checks: list[CheckLine] = _field("one entry per check, in the order they ran")


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


class WalChecked(Shape):
    files: int = _field("WAL files read to their end and decoded (segments and history files)")
    damaged: int = _field("of those, the ones that failed a check")
    by: dict[str, int] = _field(
        "how their stored content was checked, with counts: sha256 file (uncompressed "
        "objects), zstd frame checksum, gzip CRC-32, age authentication; 'sha256 attribute' "
        "and 'size only' for uncompressed objects written before sha256 files"
    )


class Verdict(Shape):
    id: str = _field("the backup ID")
    kind: Literal["logical", "physical"]
    ok: bool = _field("every object and the WAL chain checked out")
    objects: int = _field("objects re-read")
    size_bytes: int = _field("bytes re-read (stored size of its objects)")
    bytes: int = _field("the same as size_bytes (kept for version 1; prefer size_bytes)")
    problems: list[str] = _field("what is wrong, one line each")
    wal_chain: Literal["complete", "gap", "damaged"] | None = _field(
        "physical backups only: every WAL file of the chain is there and reads back, one is "
        "missing (gap) or one fails its checks (damaged)",
        default=None,
    )
    recoverable_from: Timestamp | None = _field("physical backups only", default=None)
    recoverable_to: Timestamp | None = _field(
        "physical backups only: when the last WAL segment of the window was archived",
        default=None,
    )
    last_wal: str | None = _field(
        "last WAL segment of the chain (physical): before the first missing or damaged one",
        default=None,
    )
    wal_checked: WalChecked | None = _field(
        "physical backups only: the WAL files read, from the backup's start to last_wal",
        default=None,
    )
    wal_scope: Literal["point-in-time", "consistent point only"] | None = _field(
        "physical backups: whether the retention policy keeps the WAL after its consistent "
        "point (point-in-time) or only the WAL that makes it consistent (retention.wal); "
        "then recoverable_to is its consistent point",
        default=None,
    )
    wal_note: str | None = _field(
        "physical backups restorable to their consistent point only: why", default=None
    )
    chain: list[str] | None = _field(
        "incremental backups: the chain checked, full backup first", default=None
    )
    pg_verifybackup: str | None = _field(
        "incremental backups: pg_verifybackup on the combined chain", default=None
    )


class VerifyDocument(Document):
    """`drkit verify ENV [ID|latest|--all] --json` (exit 3 when a backup fails)"""

    backups: list[Verdict]


class PruneBackup(Shape):
    id: str
    kind: Literal["logical", "physical"]
    started_at: Timestamp
    size_bytes: int = _field("bytes stored")
    size: int = _field("the same as size_bytes (kept for version 1; prefer size_bytes)")
    action: Literal["KEEP", "DELETE"]
    reasons: list[str] = _field("the retention rules that keep it (or why it goes)")
    wal: Literal["point-in-time", "consistent point only"] | None = _field(
        "kept base backups: whether the WAL after its consistent point stays (point-in-time) "
        "or only the WAL that makes it consistent (retention.wal); null for the others",
        default=None,
    )
    kept_until: str | None = _field(
        "kept by hand: the time the keep ends, or 'forever'; null when nobody keeps it",
        default=None,
    )


class PruneOrphan(Shape):
    id: str = _field("a backup prefix with no manifest")
    objects: int
    size_bytes: int = _field("bytes stored")
    size: int = _field("the same as size_bytes (kept for version 1; prefer size_bytes)")
    last_modified: Timestamp
    action: Literal["KEEP", "DELETE"]
    reason: str


class PruneUnreadable(Shape):
    id: str
    error: str = _field("why its manifest could not be read (it is kept)")


class PruneWal(Shape):
    cutoff: str | None = _field(
        "WAL older than this segment is deleted (except the consistent_only backups' "
        "start..stop segments)"
    )
    delete: int = _field("WAL files deleted (or, in a dry run, to delete)")
    retention: str | None = _field(
        "retention.wal (null: WAL is kept from the oldest kept base backup on)", default=None
    )
    pitr_from: Timestamp | None = _field(
        "the oldest point the remaining WAL recovers to: pitr_from_backup's consistent point",
        default=None,
    )
    pitr_from_backup: str | None = _field(
        "the base backup point-in-time recovery starts from (the segment cutoff is its start)",
        default=None,
    )
    consistent_only: list[str] = _field(
        "kept base backups older than it: only the WAL that makes them consistent stays, so "
        "they restore to their consistent point only",
        default_factory=list,
    )
    locked: int = _field(
        "WAL files older than the cutoff left because the store has locked them (object "
        "lock); a later prune deletes them once their lock ends",
        default=0,
    )
    locked_until: Timestamp | None = _field(
        "when the latest of those locks ends (null: none is locked)", default=None
    )


class PruneDocument(Document):
    """`drkit prune ENV [--dry-run] --json`"""

    environment: str
    dry_run: bool
    timezone: str = _field("the time zone retention days are counted in")
    backups: list[PruneBackup]
    orphans: list[PruneOrphan]
    unreadable: list[PruneUnreadable]
    wal: PruneWal
    kept: int
    deleted: int
    oldest_restorable: Timestamp | None
    newest_restorable: Timestamp | None
    deleted_objects: int
    deleted_bytes: int = _field("bytes deleted")


class KeepDocument(Document):
    """`drkit keep ENV ID [--until DATE | --release] --json`"""

    environment: str
    id: str = _field("the backup")
    kind: Literal["logical", "physical"]
    kept: bool = _field("a person keeps it now (false after --release)")
    kept_until: str | None = _field(
        "the RFC 3339 time the keep ends, 'forever' (until released), or null (released)"
    )
    previous_until: str | None = _field(
        "the keep it replaced or released, in the same form (null: it was not kept)"
    )


class DeleteDocument(Document):
    """`drkit delete ENV ID --json` (exit 4, nothing deleted, when a guard refuses)"""

    environment: str
    id: str = _field("the backup deleted")
    kind: Literal["logical", "physical"]
    deleted_objects: int = _field("objects removed, its manifest first")
    deleted_bytes: int = _field("bytes removed")
    tiers: list[str] = _field("the retention tiers it satisfied (deleting by hand overrides them)")


# -- restore -------------------------------------------------------------------------


class RestoredDatabase(Shape):
    database: str = _field("the database in the backup")
    target: str = _field("host:port/database restored into (no password)")
    backup_id: str = _field("the backup it came from")
    tables: int
    rows: int
    mismatches: list[str] = _field("tables whose row count differs from the manifest")


class RestoreDocument(Document):
    """`drkit restore ENV [ID|latest] --json` (logical)"""

    backup_id: str
    databases: list[RestoredDatabase]
    duration_seconds: float = _field("seconds the restore took")
    duration: float = _field(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )


class Window(Shape):
    start: Timestamp | None = _field("oldest point reachable")
    end: Timestamp | None = _field("newest point reachable")
    last_wal: str | None
    timeline: int | None
    missing: str | None = _field("first missing WAL segment, when newer ones exist")


class Gap(Shape):
    timeline: int
    last_segment: str | None = _field("the last segment recovered, before the gap")
    end: Timestamp | None = _field("when that segment was archived")
    first_missing: str | None
    gap: bool
    segments_beyond_gap: int = _field("archived segments past the gap: left out")
    newest_segment: str | None = _field("the newest of them")
    newest_archived_at: Timestamp | None = _field(
        "when it was archived: the newest point the archive holds, left out"
    )


class PitrDocument(Document):
    """`drkit restore ENV --point-in-time TS|latest --pgdata DIR --json`"""

    backup_id: str = _field("the base backup recovered from")
    chain: list[str] | None = _field(
        "the base backups combined for it, full first (more than one when it is incremental)",
        default=None,
    )
    target: str = _field(
        "the target asked for: an RFC 3339 timestamp, latest, immediate, or kind:value "
        "(xid:745, lsn:0/3000028, name:before-migration; ' (exclusive)' appended for "
        "--exclusive)"
    )
    target_kind: Literal["time", "latest", "xid", "lsn", "name", "immediate"] = _field(
        "the kind of target", default="time"
    )
    continued: bool = _field(
        "--continue: a paused server was moved on in the same data directory, nothing unpacked",
        default=False,
    )
    pgdata: str
    port: int
    action: Literal["promote", "pause", "shutdown"]
    started: bool = _field("the recovered server was started")
    state: str = _field("prepared | promoted | paused | shut down")
    reached_at: Timestamp | None = _field(
        "the last transaction replayed (read from the recovered server)"
    )
    timeline: int | None = _field("the recovered server's timeline")
    lsn: str | None = _field("where replay ended, read from the recovered server")
    end_lsn: str | None = _field(
        "where replay had to end: the last whole WAL record of the last planned segment "
        "(latest, or a time after the last commit the archive holds)",
        default=None,
    )
    window: Window
    log_file: str | None
    phases_seconds: dict[str, float] = _field("seconds per phase")
    phases: dict[str, float] = _field(
        "the same as phases_seconds (kept for version 1; prefer phases_seconds)"
    )
    followed_timeline: int | None
    timeline_source: str | None
    production_timeline: int | None
    other_timelines: list[int]
    archive_mode: Literal["off", "preserve"]
    stopped_at_gap: Gap | None = _field("where recovery stopped under --allow-gap")


# -- WAL -----------------------------------------------------------------------------


class WalPushDocument(Document):
    """`drkit wal-push ENV PATH --json`"""

    name: str = _field("the WAL file archived")
    status: Literal["stored", "exists"]
    stored_size_bytes: int = _field("bytes stored")
    raw_size_bytes: int = _field("bytes of the WAL file")
    archived_ahead: list[str] = _field("ready files archived ahead of the server")
    ahead_failed: dict[str, str] = _field("ready files that could not be, and why")
    duration_seconds: float = _field("seconds the push took")
    stored_size: int = _field(
        "the same as stored_size_bytes (kept for version 1; prefer stored_size_bytes)"
    )
    raw_size: int = _field("the same as raw_size_bytes (kept for version 1; prefer raw_size_bytes)")
    seconds: float = _field(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )


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


# -- sanitize ------------------------------------------------------------------------


class SanitizedTable(Shape):
    table: str = _field("schema.table")
    action: str = _field("copy | mask | schema-only")
    rows: int | None = _field("rows copied (none in a dry run)")
    selection: str = _field("which rows: all, a where clause or a subset")
    strategies: dict[str, str] = _field("column -> strategy")
    duration_seconds: float = _field("seconds the table took")
    seconds: float = _field(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )


class LeakScan(Shape):
    clean: bool = _field("no original value was found in the copy")
    originals: int
    ambiguous: int
    columns_scanned: int
    rows_scanned: int
    bytes_scanned: int
    duration_seconds: float = _field("seconds the scan took")
    seconds: float = _field(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
    hits: dict[str, int] = _field("schema.table.column -> original values found")
    pii: dict[str, dict[str, int]] = _field(
        "personal data by content in what reaches DST unmasked: schema.table.column (or "
        "catalog object) -> kind (email, phone, iban, card, ip, name, secret, oversized, "
        "connection) -> rows or objects",
        default_factory=dict,
    )


class SanitizeDocument(Document):
    """`drkit sanitize SRC DST [--dry-run|--scan-only] --json` (exit 3 on a leak)"""

    src: str
    dst: str
    rules: str = _field("the rules file")
    source: str = _field("live, or backup <id>")
    mode: Literal["run", "dry-run", "scan-only"]
    rows: int = _field("rows copied")
    tables: list[SanitizedTable]
    unlisted_tables: list[str]
    unlisted_columns: list[str]
    pii_kept: list[str] = _field("columns kept as is that look like personal data")
    phases_seconds: dict[str, float] = _field("seconds per phase")
    phases: dict[str, float] = _field(
        "the same as phases_seconds (kept for version 1; prefer phases_seconds)"
    )
    leak_scan: LeakScan | None
    target_tables: int = _field("tables the target database held before")
    pinned: dict[str, list[str]] = _field(
        "copy: true tables pinned to their columns by this run (after a clean scan)",
        default_factory=dict,
    )


class SanitizeScanDocument(Document):
    """`drkit sanitize scan SRC --rules R [--write-draft FILE] --json` (exit 3 when a run
    would be refused)"""

    src: str
    rules: str = _field("the rules file")
    columns: dict[str, dict[str, int]] = _field(
        "personal data by content in what a run would copy unmasked: schema.table.column "
        "(or catalog object) -> kind -> rows or objects"
    )
    originals: dict[str, int] = _field("schema.table.column -> originals of masked columns")
    rows_scanned: int = _field("rows searched")
    draft: str | None = _field("where the draft of rules was written")


class CheckedTable(Shape):
    action: str
    listed: bool = _field("the table is in the rules")
    where: str | None
    strategies: dict[str, str]


class SanitizeCheckDocument(Document):
    """`drkit sanitize check SRC DST --json` (exit 3 when the rules miss something)"""

    rules: str
    src: str
    dst: str
    salt_set: bool
    tables: dict[str, CheckedTable] = _field("by schema.table")
    unlisted_tables: list[str]
    unlisted_columns: list[str]
    pii_kept: list[str]
    failures: list[str]
    pinned: dict[str, list[str]] = _field("copy: true tables pinned to their columns now")
    target: str = _field("what the run may do on DST's server (privileges proved)")
    leftovers: list[str] = _field("builds interrupted runs left next to DST, dropped now")


class SanitizeInitDocument(Document):
    """`drkit sanitize init SRC [--out FILE] --json`"""

    out: str | None = _field("where the draft was written")
    rules: str = _field("the drafted rules file (YAML)")


# -- drills, status, schedule, demo ----------------------------------------------------


class DrillBackup(Shape):
    id: str | None
    kind: Literal["logical", "physical"] | None
    selection: str
    databases: dict[str, str] = _field("database -> the backup it was restored from")
    consistent_at: Timestamp | None
    age_seconds: float | None = _field("seconds between the backup and the drill")
    server_version: str | None
    chain: list[str] | None = _field(
        "physical: the base backups combined, full first (more than one: an incremental)",
        default=None,
    )


class RecoveryPoint(Shape):
    target: str = _field("an RFC 3339 timestamp, or latest")
    reached: Timestamp | None


class Rto(Shape):
    total_seconds: float = _field("seconds from the drill's start until validated data")
    phases_seconds: dict[str, float] = _field("seconds per phase (they may overlap)")
    objective_seconds: float | None = _field("the RTO objective, seconds")
    total: float = _field("the same as total_seconds (kept for version 1; prefer total_seconds)")
    phases: dict[str, float] = _field(
        "the same as phases_seconds (kept for version 1; prefer phases_seconds)"
    )
    objective: float | None = _field(
        "the same as objective_seconds (kept for version 1; prefer objective_seconds)"
    )
    met: bool | None


class Rpo(Shape):
    achieved_seconds: float | None = _field("seconds of data the restore could not bring back")
    basis: str
    objective_seconds: float | None = _field("the RPO objective, seconds")
    achieved: float | None = _field(
        "the same as achieved_seconds (kept for version 1; prefer achieved_seconds)"
    )
    objective: float | None = _field(
        "the same as objective_seconds (kept for version 1; prefer objective_seconds)"
    )
    met: bool | None


class DrillCheck(Shape):
    name: str
    kind: str = _field("connect | restore | row_count | sql | amcheck | collation | objective")
    status: Literal["PASS", "FAIL", "NOT_RUN", "ERROR", "WARN"] = _field(
        "WARN: something to act on that fails nothing (counts as a pass)"
    )
    expected: Any
    observed: Any
    detail: str | None = None
    database: str | None = None
    backup_kind: str | None = _field(
        "in a drill of every kind: the kind of backup whose drill this check belongs to",
        default=None,
    )


class DrillKindReport(Shape):
    """One kind's drill in a drill of every kind: a drill report of its own (the shape
    of report.json, without ``ok``)"""

    error: str | None = _field("why this kind's drill could not run (verdict ERROR)")
    format: int
    id: str
    environment: str
    verdict: Literal["PASS", "FAIL", "ERROR"]
    started_at: Timestamp
    finished_at: Timestamp | None
    backup: DrillBackup
    recovery_point: RecoveryPoint
    rto: Rto
    rpo: Rpo
    checks: list[DrillCheck]
    summary: dict[str, int] = _field("checks per status")


class DrillDocument(Document):
    """`drkit drill ENV --json`: the drill report (also stored as report.json)"""

    error: str | None = _field("why the drill could not run (verdict ERROR)")  # type: ignore[assignment]
    format: int
    id: str
    environment: str
    verdict: Literal["PASS", "FAIL", "ERROR"]
    started_at: Timestamp
    finished_at: Timestamp | None
    backup: DrillBackup
    recovery_point: RecoveryPoint
    rto: Rto
    rpo: Rpo
    objectives: dict[str, float | None] = _field(
        "rto_seconds and rpo_seconds objectives (also as rto and rpo, kept for version 1)"
    )
    checks: list[DrillCheck]
    summary: dict[str, int] = _field("checks per status")
    versions: dict[str, str | None]
    cleanup: dict[str, Any]
    notes: list[str]
    kinds: dict[str, DrillKindReport] | None = _field(
        "a drill of every kind the policy takes (drkit drill ENV without --backup or "
        "--point-in-time): each kind's own report, with its own verdict; the measures "
        "above are the physical drill's when one ran",
        default=None,
    )


class StatusBackup(Shape):
    id: str
    finished_at: Timestamp
    consistent_at: Timestamp | None
    age_seconds: float | None
    size_bytes: int = _field("bytes stored")
    size: int = _field("the same as size_bytes (kept for version 1; prefer size_bytes)")
    clock_skewed: bool = _field(
        "taken while drkit's host clock disagreed with the server's (see drkit backups)",
        default=False,
    )


class StatusWalGap(Shape):
    first_missing: str = _field("the first WAL segment missing on the followed timeline")
    segments_beyond: int = _field("segments archived past it: replay cannot reach them")


class StatusWal(Shape):
    archiving: bool
    last_file: str | None = _field("the newest object in wal/ (whether reachable or not)")
    last_archived_at: Timestamp | None
    age_seconds: float | None
    followed_timeline: int | None = _field("the timeline restore latest follows")
    reachable_segment: str | None = _field(
        "the last segment restore latest reaches: before any gap, of this cluster"
    )
    reachable_at: Timestamp | None = _field(
        "when that segment was archived: the newest point WAL adds to the window"
    )
    gap: StatusWalGap | None = _field("null when the followed timeline has no gap")
    foreign_segments: list[str] = _field(
        "segments at the end of the archive that another cluster wrote, oldest first"
    )
    identity_unchecked: str | None = _field(
        "why the segments' cluster could not be read (encrypted without an identity, ...)"
    )
    unreachable: str | None = _field("why the WAL archive adds nothing to the window")


class StatusDatabase(Shape):
    last_backup_id: str | None
    newest_point: Timestamp | None
    rpo_exposure_seconds: float | None


class StatusWindow(Shape):
    oldest: Timestamp | None
    newest: Timestamp | None
    continuous_from: Timestamp | None


class StatusDrill(Shape):
    id: str | None
    verdict: str | None
    backup_id: str | None
    rto_seconds: float | None
    rpo_seconds: float | None
    finished_at: Timestamp | None
    age_seconds: float | None


class StatusStreaming(Shape):
    slot: str = _field("the physical replication slot, drkit_ENV")
    reached: bool = _field("whether the database server answered")
    exists: bool
    active: bool = _field("whether wal-receive streams from it now")
    lag_bytes: int | None = _field(
        "WAL not yet received while streaming, else held on the server for the slot"
    )
    lag_seconds: float | None = _field(
        "the server's write lag while streaming, else the age of the newest WAL streamed"
    )
    problem: str | None


class StatusDocument(Document):
    """`drkit status ENV --json` (exit 3 when an objective is breached)"""

    environment: str
    now: Timestamp
    status: Literal["OK", "ATTENTION"]
    breached: list[str]
    attention: list[str]
    objectives: dict[str, float | None] = _field("rpo_seconds and rto_seconds")
    backups: dict[str, StatusBackup] = _field("the newest backup of each kind")
    backup_count: int
    wal: StatusWal
    rpo_exposure_seconds: float | None
    rpo_worst_database: str | None
    databases: dict[str, StatusDatabase]
    recoverable_window: StatusWindow
    last_drill: StatusDrill | None
    streaming: StatusStreaming | None = _field(
        "with wal_streaming: the replication slot and its lag", default=None
    )
    clock_skewed_backups: list[str] = _field(
        "backups taken while drkit's host clock disagreed with the database server's by "
        f"more than {SKEW_BOUND.total_seconds():g} s, oldest first (an attention line names "
        "them): their ids and host times are wrong, their order is not",
        default_factory=list,
    )


class ScheduledJob(Shape):
    env: str
    job: str
    cron: str
    timezone: str
    next_runs: list[LocalTimestamp]
    period_seconds: int


class ScheduleShowDocument(Document):
    """`drkit schedule show [ENV...] --json`"""

    jobs: list[ScheduledJob]


class DemoBackup(Shape):
    id: str
    rows: int
    stored_bytes: int


class DemoVerify(Shape):
    ok: bool
    objects: int


class DemoRestore(Shape):
    database: str
    rows: int
    ok: bool


class DemoDrill(Shape):
    id: str
    verdict: Literal["PASS", "FAIL", "ERROR"]
    rto_seconds: float
    rpo_seconds: float | None
    checks: int


class DemoSanitize(Shape):
    src: str
    dst: str
    mode: Literal["run", "dry-run", "scan-only"]
    rows: int
    leak_scan: LeakScan | None


class DemoPitr(Shape):
    backup_id: str
    target: str
    reached_at: Timestamp | None
    timeline: int | None
    archive_mode: str
    orders_live: int
    orders_recovered: int
    ok: bool


class DemoDocument(Document):
    """`drkit demo --json`: what each step of the sandbox run did"""

    sample_rows: int
    duration_seconds: float = _field("seconds the demo took")
    duration: float = _field(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
    backup: DemoBackup
    verify: DemoVerify
    restore: DemoRestore
    backups_listed: list[str]
    drill: DemoDrill
    sanitize: DemoSanitize
    pitr: DemoPitr


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
    "restore": RestoreDocument,
    "restore-point-in-time": PitrDocument,
    "restore-point": RestorePointDocument,
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
