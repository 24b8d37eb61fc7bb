"""What a sanitize run takes and gives back: its options, its report, and the failure
that carries the report (a leak found).

Nothing here runs anything; :mod:`drkit.sanitize.pipeline` fills a :class:`Report` step
by step, and ``to_dict`` is the ``--json`` document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drkit.errors import CheckFailed
from drkit.progress import OnProgress
from drkit.sanitize.scan import LeakReport

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "action": self.action,
            "rows": self.rows,
            "selection": self.selection,
            "strategies": self.strategies,
            "seconds": round(self.seconds, 3),
            "duration_seconds": round(self.seconds, 3),
        }


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "rules": self.rules,
            "source": self.source,
            "mode": self.mode,
            "rows": self.rows,
            "tables": [t.to_dict() for t in self.tables],
            "unlisted_tables": self.unlisted_tables,
            "unlisted_columns": self.unlisted_columns,
            "pii_kept": self.pii_kept,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "phases_seconds": {k: round(v, 3) for k, v in self.phases.items()},
            "leak_scan": self.leak.to_dict() if self.leak else None,
            "target_tables": self.target_tables,
            "pinned": self.pinned,
        }


class LeakFound(CheckFailed):
    """The leak scan found originals in DST (exit 3); carries the report."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report
