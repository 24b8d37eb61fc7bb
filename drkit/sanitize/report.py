"""What a sanitize run takes and gives back: its options, its report, and the failure
that carries the report (a leak found).

Nothing here runs anything; :mod:`drkit.sanitize.pipeline` fills a :class:`Report` step
by step.  Its ``document()`` is the ``--json`` document of ``drkit sanitize`` and its
``scan_document()`` that of ``drkit sanitize scan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from drkit.documents import Document, Shape, described
from drkit.errors import CheckFailed
from drkit.progress import OnProgress
from drkit.sanitize.scan import LeakReport, LeakScan

ProgressFn = OnProgress  # phases "copy"/"read", one item per table, in rows


@dataclass
class Options:
    rules_path: Path | None = None
    from_backup: str | None = None
    dry_run: bool = False
    jobs: int = 1
    force: bool = False
    scan_only: bool = False
    keep_old: bool = False
    #: ``sanitize scan``: SRC's rows as a run would copy them, searched, nothing written
    scan_source: bool = False


@dataclass
class TableReport:
    table: str
    action: str  # copy | mask | schema-only
    rows: int | None
    selection: str
    strategies: dict[str, str]
    seconds: float = 0.0

    def document(self) -> SanitizedTable:
        seconds = round(self.seconds, 3)
        return SanitizedTable(
            table=self.table,
            action=self.action,
            rows=self.rows,
            selection=self.selection,
            strategies=self.strategies,
            seconds=seconds,
            duration_seconds=seconds,
        )


@dataclass
class Report:
    src: str
    dst: str
    rules: str
    source: str  # "live" or "backup <id>"
    mode: str  # run | dry-run | scan-only
    tables: list[TableReport] = field(default_factory=list)
    unlisted_tables: list[str] = field(default_factory=list)
    unlisted_columns: list[str] = field(default_factory=list)
    pii_kept: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    leak: LeakReport | None = None
    target_tables: int = 0
    pinned: dict[str, list[str]] = field(default_factory=dict)  # copy: true tables pinned now

    @property
    def rows(self) -> int:
        return sum(t.rows or 0 for t in self.tables)

    def document(self) -> SanitizeDocument:
        phases = {k: round(v, 3) for k, v in self.phases.items()}
        return SanitizeDocument(
            ok=True,
            src=self.src,
            dst=self.dst,
            rules=self.rules,
            source=self.source,
            mode=self.mode,
            rows=self.rows,
            tables=[t.document() for t in self.tables],
            unlisted_tables=self.unlisted_tables,
            unlisted_columns=self.unlisted_columns,
            pii_kept=self.pii_kept,
            phases=phases,
            phases_seconds=phases,
            leak_scan=self.leak.document() if self.leak else None,
            target_tables=self.target_tables,
            pinned=self.pinned,
        )

    def scan_document(self, draft: Path | None = None) -> SanitizeScanDocument:
        """``sanitize scan``'s document: what a run would refuse (kinds and counts, never
        values); ``draft``: where the draft of rules for it was written, if it was."""
        leak = self.leak
        return SanitizeScanDocument(
            ok=True,
            src=self.src,
            rules=self.rules,
            columns=dict(leak.pii) if leak else {},
            originals=dict(leak.hits) if leak else {},
            rows_scanned=leak.rows_scanned if leak else 0,
            draft=str(draft) if draft is not None else None,
        )


class LeakFound(CheckFailed):
    """The leak scan found originals in DST (exit 3); carries the report."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


# -- the --json documents --------------------------------------------------------


class SanitizedTable(Shape):
    table: str = described("schema.table")
    action: str = described("copy | mask | schema-only")
    rows: int | None = described("rows copied (none in a dry run)")
    selection: str = described("which rows: all, a where clause or a subset")
    strategies: dict[str, str] = described("column -> strategy")
    duration_seconds: float = described("seconds the table took")
    seconds: float = described(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )


class SanitizeDocument(Document):
    """`drkit sanitize SRC DST [--dry-run|--scan-only] --json` (exit 3 on a leak)"""

    src: str
    dst: str
    rules: str = described("the rules file")
    source: str = described("live, or backup <id>")
    mode: Literal["run", "dry-run", "scan-only"]
    rows: int = described("rows copied")
    tables: list[SanitizedTable]
    unlisted_tables: list[str]
    unlisted_columns: list[str]
    pii_kept: list[str] = described("columns kept as is that look like personal data")
    phases_seconds: dict[str, float] = described("seconds per phase")
    phases: dict[str, float] = described(
        "the same as phases_seconds (kept for version 1; prefer phases_seconds)"
    )
    leak_scan: LeakScan | None
    target_tables: int = described("tables the target database held before")
    pinned: dict[str, list[str]] = described(
        "copy: true tables pinned to their columns by this run (after a clean scan)",
        default_factory=dict,
    )


class SanitizeScanDocument(Document):
    """`drkit sanitize scan SRC --rules R [--write-draft FILE] --json` (exit 3 when a run
    would be refused)"""

    src: str
    rules: str = described("the rules file")
    columns: dict[str, dict[str, int]] = described(
        "personal data by content in what a run would copy unmasked: schema.table.column "
        "(or catalog object) -> kind -> rows or objects"
    )
    originals: dict[str, int] = described("schema.table.column -> originals of masked columns")
    rows_scanned: int = described("rows searched")
    draft: str | None = described("where the draft of rules was written")
