"""``drkit demo --json``: what each step of the sandbox run did, described once.

Each step puts its part on the :class:`~drkit.demo.sandbox.Sandbox` as it finishes
(:class:`DemoBackup`, :class:`DemoDrill`, ...); :func:`drkit.demo.run_demo` returns the
whole, :class:`DemoDocument`, which the CLI writes.  The sanitize step's part is the
sanitize run's own document.
"""

from __future__ import annotations

from typing import Literal

from drkit.documents import Document, Shape, Timestamp, described
from drkit.sanitize import SanitizeDocument


class DemoPostgresql(Shape):
    major: int | None
    bin_dir: str = described("the directory of its programs")


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


class DemoWalSearch(Shape):
    xid: int = described("the accidental DELETE's transaction, as wal-search found it")
    committed_at: Timestamp
    operations: dict[str, int]
    restore_flags: str = described("what the recovery then restored to")
    segments: int = described("WAL segments searched")


class DemoPitr(Shape):
    backup_id: str
    target: str
    reached_at: Timestamp | None
    timeline: int | None
    archive_mode: str
    orders_live: int
    orders_recovered: int
    wal_search: DemoWalSearch | None = described(
        "the accident found with wal-search, which the recovery stops just before", default=None
    )
    ok: bool


class DemoDocument(Document):
    """`drkit demo --json`: what each step of the sandbox run did"""

    sample_rows: int
    duration_seconds: float = described("seconds the demo took")
    duration: float = described(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
    backup: DemoBackup
    verify: DemoVerify
    restore: DemoRestore
    backups_listed: list[str]
    drill: DemoDrill
    sanitize: SanitizeDocument = described("the sanitize run's own document")
    pitr: DemoPitr
    postgresql: DemoPostgresql = described("the throwaway server the demo ran")
