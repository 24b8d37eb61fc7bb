"""The ``--json`` documents of ``drkit restore``, as pydantic models (:mod:`drkit.documents`):
what :meth:`drkit.restore.logical.RestoreResult.document`,
:meth:`drkit.restore.pitr.PitrResult.document` and
:meth:`drkit.restore.tables.TableRestoreResult.document` return, and what the published
schemas say.  :class:`RestoredTable` is also the record a table restore keeps of each table.
"""

from __future__ import annotations

from typing import Literal

from drkit.documents import Document, Shape, Timestamp, described


class RestoredTable(Shape):
    source: str = described("schema.table in the backup")
    table: str = described("schema.table it was restored as in the target database")
    rows: int = described("rows restored (counted in the target database after the commit)")


class RestoredDatabase(Shape):
    database: str = described("the database in the backup")
    target: str = described("host:port/database restored into (no password)")
    backup_id: str = described("the backup it came from")
    tables: int
    rows: int
    mismatches: list[str] = described("tables whose row count differs from the manifest")
    restored: list[RestoredTable] = described(
        "--table: each table restored, under the name it was restored as", default_factory=list
    )
    dropped_foreign_keys: list[str] = described(
        "--table: foreign keys left out, as 'constraint -> schema.table referenced'",
        default_factory=list,
    )


class RestoreDocument(Document):
    """`drkit restore ENV [ID|latest] --json` (logical)"""

    backup_id: str
    databases: list[RestoredDatabase]
    duration_seconds: float = described("seconds the restore took")
    duration: float = described(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )


class TableRestoreDocument(Document):
    """`drkit restore ENV <target> --table S.T --target-db URL [--as NEWNAME] --json`
    (tables from a physical backup, recovered in a scratch cluster)"""

    backup_id: str = described("the base backup recovered from")
    target: str = described("the recovery target asked for, as in restore-point-in-time")
    reached_at: Timestamp | None = described("the last transaction the scratch recovery replayed")
    database: str = described("the database of the backup the tables came from")
    target_db: str = described("host:port/database restored into (no password)")
    replaced: bool = described("--force without --as: the live tables were replaced")
    tables: list[RestoredTable]
    dropped_foreign_keys: list[str] = described(
        "foreign keys left out, as 'constraint -> schema.table referenced'"
    )
    scratch_cluster: Literal["removed", "cleanup failed"] = described(
        "the scratch cluster after the restore"
    )
    duration_seconds: float = described("seconds the restore took")


class Window(Shape):
    start: Timestamp | None = described("oldest point reachable")
    end: Timestamp | None = described("newest point reachable")
    last_wal: str | None
    timeline: int | None
    missing: str | None = described("first missing WAL segment, when newer ones exist")


class Gap(Shape):
    timeline: int
    last_segment: str | None = described("the last segment recovered, before the gap")
    end: Timestamp | None = described("when that segment was archived")
    first_missing: str | None
    gap: bool
    segments_beyond_gap: int = described("archived segments past the gap: left out")
    newest_segment: str | None = described("the newest of them")
    newest_archived_at: Timestamp | None = described(
        "when it was archived: the newest point the archive holds, left out"
    )


class PitrDocument(Document):
    """`drkit restore ENV --point-in-time TS|latest --pgdata DIR --json`"""

    backup_id: str = described("the base backup recovered from")
    chain: list[str] | None = described(
        "the base backups combined for it, full first (more than one when it is incremental)",
        default=None,
    )
    target: str = described(
        "the target asked for: an RFC 3339 timestamp, latest, immediate, or kind:value "
        "(xid:745, lsn:0/3000028, name:before-migration; ' (exclusive)' appended for "
        "--exclusive)"
    )
    target_kind: Literal["time", "latest", "xid", "lsn", "name", "immediate"] = described(
        "the kind of target", default="time"
    )
    continued: bool = described(
        "--continue: a paused server was moved on in the same data directory, nothing unpacked",
        default=False,
    )
    pgdata: str
    port: int
    action: Literal["promote", "pause", "shutdown"]
    started: bool = described("the recovered server was started")
    state: str = described("prepared | promoted | paused | shut down")
    reached_at: Timestamp | None = described(
        "the last transaction replayed (read from the recovered server)"
    )
    timeline: int | None = described("the recovered server's timeline")
    lsn: str | None = described("where replay ended, read from the recovered server")
    end_lsn: str | None = described(
        "where replay had to end: the last whole WAL record of the last planned segment "
        "(latest, or a time after the last commit the archive holds)",
        default=None,
    )
    window: Window
    log_file: str | None
    phases_seconds: dict[str, float] = described("seconds per phase")
    phases: dict[str, float] = described(
        "the same as phases_seconds (kept for version 1; prefer phases_seconds)"
    )
    followed_timeline: int | None
    timeline_source: str | None
    production_timeline: int | None
    other_timelines: list[int]
    archive_mode: Literal["off", "preserve"]
    stopped_at_gap: Gap | None = described("where recovery stopped under --allow-gap")
