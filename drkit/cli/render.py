"""The drawing: sizes and times as people read them (IEC units, :func:`drkit.progress.human_size`), live progress, the drill
and sanitize reports, the demo's lines, and the one ``--json`` document.

Everything here writes to the terminals of :mod:`drkit.cli.common`; nothing here
does work.  Progress and status show on a TTY only, never under ``--json`` or ``-q``.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drkit.cli.common import emit_json, err, out, state
from drkit.progress import OnProgress, ignore_progress


def ts_text(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class Col:
    """One column of a :func:`print_table`: its header, alignment, and whether a
    terminal may fold it (an id never: it is what the next command takes)."""

    name: str
    right: bool = False
    fold: bool = True


def print_table(title: str, columns: list[Col], rows: list[list[str]]) -> None:
    """A table on stdout: rich's on a terminal, plain columns everywhere else.

    Piped or redirected, a table is read by grep, awk and diff, not by eyes: no box, no
    colour, no width to fit, nothing folded or cut with an ellipsis.  Each row is one
    line, cells padded to the widest of their column and separated by two spaces, as
    ``pgbackrest info`` and ``ps`` print.  A cell never holds a newline."""
    if not out.may_be_terminal():
        widths = [max([len(c.name), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

        def line(cells: list[str]) -> str:
            padded = [
                cell.rjust(width) if col.right else cell.ljust(width)
                for cell, width, col in zip(cells, widths, columns, strict=True)
            ]
            return "  ".join(padded).rstrip()

        text = "\n".join([title, line([c.name for c in columns]), *(line(r) for r in rows)])
        sys.stdout.write(text.replace("\r", " ") + "\n")
        return
    from rich.table import Table  # lazy: rich draws only what is printed
    from rich.text import Text

    table = Table(title=title)
    for i, col in enumerate(columns):
        if col.fold:
            table.add_column(col.name, justify="right" if col.right else "left", overflow="fold")
        else:
            widest = max([len(col.name), *(len(r[i]) for r in rows)])
            table.add_column(col.name, no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # cells are data, never markup
    out.print(table)


def live_progress(
    titles: dict[str, str] | None = None, quiet_done: bool = False
) -> AbstractContextManager[OnProgress]:
    """Core's progress events drawn on stderr (:mod:`drkit.cli.progress`), TTY only:
    rich is not even imported for a run that cannot draw (--json, -q, not a terminal)."""
    if state.json or state.quiet or not err.may_be_terminal():
        return nullcontext(ignore_progress)
    from drkit.cli.progress import progress_events  # lazy: rich.progress

    return progress_events(err.console, enabled=True, titles=titles, quiet_done=quiet_done)


def print_drill(doc: dict[str, Any], key: str | None, files: list[Path]) -> None:
    # lazy: pulls pydantic (drkit.config)
    from drkit.drill import FAIL, PASS, check_label, kind_verdicts

    backup = doc["backup"]
    age = backup["age_seconds"]
    out.print(
        f"drill {doc['id']} of {doc['environment']}: backup {backup['id']} ({backup['kind']}"
        + (f", {age:.0f}s old" if age is not None else "")
        + ")",
        markup=False,
        highlight=False,
    )
    rto, rpo = doc["rto"], doc["rpo"]
    phases = ", ".join(f"{p} {s:.1f}s" for p, s in rto["phases"].items())
    out.print(f"  phases: {phases}", markup=False, highlight=False)
    for label, block, value in (("RTO", rto, rto["total"]), ("RPO", rpo, rpo["achieved"])):
        measured = "not measured" if value is None else seconds_text(value)
        objective = "none" if block["objective"] is None else seconds_text(block["objective"])
        mark = {True: "met", False: "BREACHED", None: "not judged"}[block["met"]]
        out.print(
            f"  {label} {measured} (objective {objective}): {mark}", markup=False, highlight=False
        )
    if kind_verdicts(doc):
        out.print(f"  kinds: {kind_verdicts(doc)}", markup=False, highlight=False)
    summary = ", ".join(f"{n} {s}" for s, n in doc["summary"].items())
    out.print(f"  checks: {summary}", markup=False, highlight=False)
    for check in doc["checks"]:
        if check["status"] != PASS:
            line = (
                f"  {check['status']:<7} {check_label(check)}: expected {check['expected']}, "
                f"observed {check['observed']}"
            )
            if check.get("detail"):
                line += f" ({check['detail']})"
            out.print(line, markup=False, highlight=False)
    cleanup = doc.get("cleanup") or {}
    if cleanup.get("scratch_cluster") == "kept":
        out.print(
            f"  scratch cluster kept on port {cleanup['port']}: connect with  {cleanup['connect']}",
            markup=False,
            highlight=False,
        )
        out.print(f"  when done:  {cleanup['stop']}", markup=False, highlight=False)
    elif cleanup.get("scratch_cluster") != "removed":
        out.print(f"  clean-up: {cleanup}", markup=False, highlight=False)
    if key:
        out.print(f"  report: {key}", markup=False, highlight=False)
    for path in files:
        out.print(f"  wrote {path}", markup=False, highlight=False)
    style = "green" if doc["verdict"] == PASS else "red"
    verdict = doc["verdict"] if doc["verdict"] != FAIL else "FAIL"
    out.print(f"verdict: [{style}]{verdict}[/{style}]")


def seconds_text(seconds: float) -> str:
    from drkit.config import format_duration  # lazy: pydantic costs ~0.3 s of start-up

    return f"{seconds:.1f}s" if seconds < 60 else format_duration(timedelta(seconds=round(seconds)))


def print_sanitize_report(report: Any) -> None:
    if state.json:
        emit_json(report.document())
        return
    title = {
        "run": "sanitized copy",
        "dry-run": "plan (dry run: nothing copied)",
        "scan-only": "leak scan only",
    }[report.mode]
    rows = [
        [
            t.table,
            t.action,
            "-" if t.rows is None else f"{t.rows:,}",
            t.selection,
            ", ".join(f"{c}={s}" for c, s in t.strategies.items()) or "-",
        ]
        for t in report.tables
    ]
    print_table(
        f"{report.src} → {report.dst}: {title} ({report.source})",
        [
            Col("table", fold=False),
            Col("action"),
            Col("rows", right=True),
            Col("selection"),
            Col("masked columns"),
        ],
        rows,
    )
    for label, items in (
        ("unlisted tables", report.unlisted_tables),
        ("unlisted columns", report.unlisted_columns),
        ("kept columns that look like personal data", report.pii_kept),
    ):
        if items:
            out.print(f"[yellow]![/yellow] {label}: {', '.join(items)}", markup=True)
    if report.mode == "dry-run" and report.target_tables:
        out.print(
            f"[yellow]![/yellow] {report.dst}'s database holds {report.target_tables} tables: "
            "the run needs --force to replace it"
        )
    if report.phases:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
        out.print(f"phases: {phases}")
    leak = report.leak
    if leak is not None:
        if leak.clean:
            out.print(
                f"[green]✓[/green] leak scan clean: {leak.originals:,} original values searched "
                f"in {leak.columns_scanned} columns ({leak.rows_scanned:,} rows) and "
                f"{leak.objects_scanned:,} catalog objects ("
                f"{leak.seconds:.1f}s)"
                + (f"; {leak.ambiguous} equal a generated value" if leak.ambiguous else "")
            )
        else:
            for where, count in sorted(leak.hits.items()):
                err.print(f"[red]✗[/red] leak: {where}: {count} original value(s)")
    elif report.mode == "run":
        out.print(f"[green]✓[/green] {report.rows:,} rows copied")


def demo_say(kind: str, text: str) -> None:
    if state.json:
        return
    styles = {"step": "[bold cyan]▶[/bold cyan] ", "ok": "  [green]✓[/green] ", "info": "    "}
    out.print(styles.get(kind, ""), end="")
    out.print(text, markup=False, highlight=False)
