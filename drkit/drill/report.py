"""Drill reports: the data a drill produces and its three renderings.

A :class:`DrillReport` holds what the drill measured (phases of the RTO, the achieved
RPO), what it checked (each :class:`Check` PASS / FAIL / NOT_RUN / ERROR with its
expected and observed values) and its verdict.  It is stored as
``drills/<drill-id>/report.json`` in the environment's repository, and with
``--report-dir`` also written as ``report.json``, ``report.md`` (per-phase bars, the
RTO trend of past drills and, next to it, the PNG chart of :mod:`drkit.drill.chart`),
``report.html`` (the same for a browser or a mail to an auditor, in one self-contained
file: the chart inline as SVG, no script, nothing fetched) and
``junit.xml`` (one test case per check and per
objective; a NOT_RUN case is a failure, never a skip, because NOT_RUN is never a pass).

The JSON is described once, by the models at the end of this module:
:class:`StoredDrillReport` is what ``report.json`` holds (:meth:`DrillReport.stored`),
and :class:`DrillDocument`, what ``drkit drill --json`` prints
(:meth:`DrillReport.document`), is the same report with the command's ``ok``.  The
stored report has no ``ok``: whether a command succeeded is the command's, not the
drill's, and the reports stored before keep their shape.  The renderings read the
stored JSON, as do the readers through the catalog view (:mod:`drkit.restore.window`:
``drkit status``, the scheduler's metrics, the next drill's history), which read
``verdict``, ``finished_at``, ``rto.total`` / ``rto.phases`` and ``rpo.achieved`` in
seconds and tolerate reports of any earlier version.
"""

from __future__ import annotations

import html
import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from drkit.catalog import iso
from drkit.config import format_duration
from drkit.documents import Document, Shape, Timestamp, described, dump
from drkit.restore import REPORT_NAME, report_key
from drkit.storage import Repository

log = logging.getLogger(__name__)

PASS = "PASS"  # noqa: S105 - a verdict, not a password
FAIL = "FAIL"
NOT_RUN = "NOT_RUN"
ERROR = "ERROR"
STATUSES = (PASS, FAIL, NOT_RUN, ERROR)
#: found something to act on that breaks nothing the drill proved (counts as a pass)
WARN = "WARN"
#: the report's JSON: stored, or the command's document
_Report = TypeVar("_Report", bound="StoredDrillReport")

#: The phases of a drill's RTO, in the order they happen.
PHASES = ("startup", "fetch", "restore", "unpack", "wal_replay", "connections", "validation")
PHASE_TITLES = {
    "startup": "scratch cluster accepts connections",
    "fetch": "fetch from the repository",
    "restore": "pg_restore",
    "unpack": "fetch and unpack the base backup",
    "wal_replay": "WAL replay",
    "connections": "until the server accepts connections",
    "validation": "validation",
}


@dataclass
class Check:
    """One rung of the validation ladder, or one objective."""

    name: str
    kind: str  # connect | restore | row_count | sql | amcheck | collation | objective
    status: str
    expected: Any = None
    observed: Any = None
    detail: str = ""
    database: str | None = None
    #: in a drill of every kind: the kind of backup whose drill this check belongs to
    backup_kind: str | None = None

    @property
    def passed(self) -> bool:
        return self.status in (PASS, WARN)

    def document(self) -> DrillCheck:
        """The check as reports hold it: ``detail``, ``database`` and ``backup_kind``
        only when the check has one."""
        optional: dict[str, Any] = {}
        if self.detail:
            optional["detail"] = self.detail
        if self.database is not None:
            optional["database"] = self.database
        if self.backup_kind is not None:
            optional["backup_kind"] = self.backup_kind
        return DrillCheck(
            name=self.name,
            kind=self.kind,
            status=self.status,
            expected=self.expected,
            observed=self.observed,
            **optional,
        )


@dataclass
class DrillReport:
    id: str
    environment: str
    started_at: datetime
    backup_id: str | None = None
    backup_kind: str | None = None
    backup_selection: str = "latest"
    #: database -> the backup it was restored from (``latest`` takes, for each database,
    #: the newest backup holding it: a partial backup counts only for what it holds)
    backup_databases: dict[str, str] = field(default_factory=dict)
    backup_consistent_at: datetime | None = None
    #: physical: the base backups combined, full first (more than one: an incremental)
    backup_chain: list[str] = field(default_factory=list)
    finished_at: datetime | None = None
    target_point: datetime | None = None  # --point-in-time, None = as far as possible
    #: a target of another kind (--target-xid, --target-lsn, --target-name, --immediate)
    #: as the report shows it (xid:745, ...); None for a time or the end of the archive
    target_label: str | None = None
    reached_point: datetime | None = None
    phases: dict[str, float] = field(default_factory=dict)
    rto_wall: float | None = None  # start to validated, when phases overlapped
    rto_objective: float | None = None
    rpo_objective: float | None = None
    rpo_achieved: float | None = None
    rpo_basis: str = ""
    checks: list[Check] = field(default_factory=list)
    error: str | None = None  # why the drill could not run (verdict ERROR)
    drkit_version: str = ""
    backup_server_version: str | None = None
    scratch_server_version: str | None = None
    cleanup: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: a drill of every kind the policy takes: each kind's own report (this one holds
    #: them all: every check, the verdict over all of them)
    parts: list[DrillReport] = field(default_factory=list)

    # -- derived --------------------------------------------------------------------

    @property
    def rto_total(self) -> float:
        """Wall time from the drill's start until the restored data was validated (the
        scratch cluster starts while the backup is fetched, so phases overlap); the sum
        of the phases when that was not measured."""
        if self.rto_wall is not None:
            return round(self.rto_wall, 3)
        return round(sum(self.phases.values()), 3)

    def ordered_phases(self) -> list[str]:
        """The phases measured, in the order they happen in a drill."""
        known = [p for p in PHASES if p in self.phases]
        return known + [p for p in self.phases if p not in PHASES]

    @property
    def backup_age(self) -> float | None:
        if self.backup_consistent_at is None:
            return None
        return round((self.started_at - self.backup_consistent_at).total_seconds(), 3)

    @property
    def verdict(self) -> str:
        """PASS only when every check (objectives included) passed; ERROR when the
        drill could not run; FAIL otherwise."""
        if self.error is not None:
            return ERROR
        if any(p.verdict != PASS for p in self.parts):
            return FAIL
        if self.checks and all(c.passed for c in self.checks):
            return PASS
        return FAIL

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    # -- the JSON -------------------------------------------------------------------

    def stored(self) -> StoredDrillReport:
        """What ``drills/<id>/report.json`` holds (and ``--report-dir``'s report.json)."""
        return self._described(StoredDrillReport)

    def document(self) -> DrillDocument:
        """``drkit drill --json``: the stored report, ``ok`` when the verdict is PASS."""
        return self._described(DrillDocument, ok=self.verdict == PASS)

    def _described(self, model: type[_Report], **command: Any) -> _Report:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}
        if warnings := sum(1 for c in self.checks if c.status == WARN):
            counts[WARN] = warnings
        phases = {p: round(self.phases[p], 3) for p in self.ordered_phases()}
        rpo = None if self.rpo_achieved is None else round(self.rpo_achieved, 3)
        return model(
            **command,
            format=1,
            id=self.id,
            environment=self.environment,
            verdict=self.verdict,
            error=self.error,
            started_at=iso(self.started_at),
            finished_at=iso(self.finished_at),
            backup=DrillBackup(
                id=self.backup_id,
                kind=self.backup_kind,
                selection=self.backup_selection,
                databases=dict(self.backup_databases),
                consistent_at=iso(self.backup_consistent_at),
                age_seconds=self.backup_age,
                server_version=self.backup_server_version,
                chain=list(self.backup_chain) or None,
            ),
            recovery_point=RecoveryPoint(
                target=self.target_label
                or (iso(self.target_point) if self.target_point else "latest"),
                reached=iso(self.reached_point),
            ),
            rto=Rto(
                total=self.rto_total,
                phases=phases,
                objective=self.rto_objective,
                total_seconds=self.rto_total,
                phases_seconds=dict(phases),
                objective_seconds=self.rto_objective,
                met=_met(self.rto_total, self.rto_objective) if self.error is None else None,
            ),
            rpo=Rpo(
                achieved=rpo,
                basis=self.rpo_basis,
                objective=self.rpo_objective,
                achieved_seconds=rpo,
                objective_seconds=self.rpo_objective,
                met=_met(self.rpo_achieved, self.rpo_objective),
            ),
            objectives={
                "rto": self.rto_objective,
                "rpo": self.rpo_objective,
                "rto_seconds": self.rto_objective,
                "rpo_seconds": self.rpo_objective,
            },
            checks=[c.document() for c in self.checks],
            summary=counts,
            versions={
                "drkit": self.drkit_version,
                "postgresql_backup": self.backup_server_version,
                "postgresql_scratch": self.scratch_server_version,
            },
            cleanup=self.cleanup,
            notes=self.notes,
            kinds={p.backup_kind: p.stored() for p in self.parts if p.backup_kind} or None,
        )


def _met(value: float | None, objective: float | None) -> bool | None:
    if value is None or objective is None:
        return None
    return value <= objective


# ---------------------------------------------------------------------------
# The repository: drills/<id>/report.json (read back by drkit.restore.window)
# ---------------------------------------------------------------------------


def store_report(repo: Repository, report: DrillReport) -> str:
    repo.put_json(report_key(report.id), dump(report.stored()))
    return repo.key(report_key(report.id))


# ---------------------------------------------------------------------------
# --report-dir: report.json, report.md, junit.xml
# ---------------------------------------------------------------------------


def write_report_dir(
    directory: Path, report: DrillReport, history: list[dict[str, Any]]
) -> list[Path]:
    """report.json, report.md, report.html, junit.xml and the chart report.md embeds
    (:data:`drkit.drill.chart.CHART_NAME`); the paths written."""
    from drkit.drill.chart import CHART_NAME, chart_svg, write_chart

    directory.mkdir(parents=True, exist_ok=True)
    doc = dump(report.stored())
    paths = [directory / REPORT_NAME, directory / "report.md", directory / "junit.xml"]
    paths[0].write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    paths[2].write_text(render_junit(doc))
    chart: str | None = CHART_NAME
    chart_error: str | None = None
    svg: str | None = None
    try:
        paths.append(write_chart(directory / CHART_NAME, doc, history))
        svg = chart_svg(doc, history)
    except Exception as exc:  # a rendering must not cost the drill its stored report
        log.error("drill %s: the chart could not be drawn: %s", report.id, exc)
        chart, chart_error = None, f"{type(exc).__name__}: {exc}"
    paths[1].write_text(render_markdown(doc, history, chart=chart, chart_error=chart_error))
    page = directory / "report.html"
    page.write_text(render_html(doc, history, svg=svg, chart_error=chart_error))
    paths.insert(2, page)
    return paths


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return format_duration_s(value)


def format_duration_s(value: float) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=round(value)))


def _bar(value: float, longest: float, width: int = 30) -> str:
    if longest <= 0:
        return ""
    cells = value / longest * width
    full = int(cells)
    text = "█" * full
    if cells - full >= 0.5 or (value > 0 and not text):
        text += "▌"
    return text


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    return str(value).replace("|", "\\|").replace("\n", " ")


def check_label(check: dict[str, Any]) -> str:
    """A check's name, after its kind of backup in a drill of every kind."""
    kind = check.get("backup_kind")
    return f"{kind}: {check['name']}" if kind else str(check["name"])


def kind_verdicts(doc: dict[str, Any]) -> str:
    """``logical PASS, physical FAIL`` for a drill of every kind, else ``""``."""
    kinds: dict[str, Any] = doc.get("kinds") or {}
    return ", ".join(f"{kind} {part['verdict']}" for kind, part in kinds.items())


def render_markdown(
    doc: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    chart: str | None = None,
    chart_error: str | None = None,
) -> str:
    """A report for a person: verdict, objectives (with ``chart``, the relative path of
    the image of :mod:`drkit.drill.chart`), phases as bars, checks, the RTO trend."""
    rto = doc["rto"]
    rpo = doc["rpo"]
    backup = doc["backup"]
    lines = [
        f"# Restore drill {doc['id']} — {doc['environment']}: **{doc['verdict']}**",
        "",
        f"- started {doc['started_at']}, finished {doc['finished_at']}",
        f"- backup `{backup['id']}` ({backup['kind']}, selected as {backup['selection']}), "
        f"consistent at {backup['consistent_at']}, age {_seconds(backup['age_seconds'])}",
        f"- recovery point: target {doc['recovery_point']['target']}, "
        f"reached {doc['recovery_point']['reached']}",
        f"- PostgreSQL {doc['versions'].get('postgresql_scratch') or '-'} "
        f"(backup taken on {doc['versions'].get('postgresql_backup') or '-'}), "
        f"drkit {doc['versions'].get('drkit')}",
    ]
    if kind_verdicts(doc):
        lines.append(f"- every kind the policy takes: {kind_verdicts(doc)}")
    if doc.get("error"):
        lines += ["", f"> The drill could not run: {doc['error']}"]
    lines += [
        "",
        "## Objectives",
        "",
        "| objective | measured | objective | met |",
        "|---|---:|---:|---|",
        f"| RTO | {_seconds(rto['total'])} | {_seconds(rto['objective'])} | "
        f"{_yes_no(rto['met'])} |",
        f"| RPO | {_seconds(rpo['achieved'])} | {_seconds(rpo['objective'])} | "
        f"{_yes_no(rpo['met'])} |",
        "",
        f"RPO basis: {rpo['basis'] or '-'}.",
        "",
    ]
    if chart is not None:
        lines += [
            f"![RTO by phase, and the last drills' RTO and achieved RPO against the "
            f"objectives (green within, red over)]({chart})",
            "",
        ]
    elif chart_error is not None:
        lines += [f"> The chart could not be drawn: {chart_error}", ""]
    lines += [
        "## Where the time went",
        "",
        "```",
    ]
    phases: dict[str, float] = rto["phases"]
    longest = max(phases.values(), default=0.0)
    width = max((len(p) for p in phases), default=5)
    for phase, seconds in phases.items():
        lines.append(f"{phase:<{width}} {_seconds(seconds):>8} {_bar(seconds, longest)}")
    lines.append(f"{'total':<{width}} {_seconds(rto['total']):>8}")
    lines += ["```", "", "## Checks", ""]
    lines += ["| check | status | expected | observed | detail |", "|---|---|---|---|---|"]
    for check in doc["checks"]:
        lines.append(
            f"| {_cell(check_label(check))} | {check['status']} | {_cell(check['expected'])} | "
            f"{_cell(check['observed'])} | {_cell(check.get('detail', ''))} |"
        )
    summary = doc["summary"]
    lines += [
        "",
        ", ".join(f"{n} {s}" for s, n in summary.items()) + ". NOT_RUN never counts as a pass.",
        "",
        "## RTO trend (past drills)",
        "",
    ]
    trend = [*history, doc]
    totals = [float((r.get("rto") or {}).get("total") or 0.0) for r in trend]
    longest_total = max(totals, default=0.0)
    if len(trend) == 1:
        lines.append("This is the first drill of this environment in the repository.")
    lines.append("```")
    for r, total in zip(trend, totals, strict=True):
        mark = "*" if r.get("id") == doc["id"] else " "
        lines.append(
            f"{mark}{r.get('id', '?')!s:<34} {r.get('verdict', '?')!s:<7} "
            f"{_seconds(total):>8} {_bar(total, longest_total)}"
        )
    lines.append("```")
    cleanup = doc.get("cleanup") or {}
    if cleanup:
        lines += ["", "## Scratch cluster", ""]
        lines += [f"- {k}: {_cell(v)}" for k, v in cleanup.items()]
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


_HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}.PASS,.yes{color:#2e7d32;font-weight:bold}
.FAIL,.ERROR,.NOT_RUN,.no{color:#c62828;font-weight:bold}.WARN{color:#b26a00}
svg{max-width:100%;height:auto}
"""


def render_html(
    doc: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    svg: str | None = None,
    chart_error: str | None = None,
) -> str:
    """The report as one self-contained HTML page: verdict, objectives, the chart of
    :mod:`drkit.drill.chart` inline (``svg``), phases, every check, the RTO trend.
    Every value is escaped; nothing is loaded from elsewhere and no script runs."""

    def t(value: Any) -> str:
        return html.escape(_cell(value).replace("\\|", "|"))

    def met(value: bool | None) -> str:
        word = "not measured" if value is None else ("yes" if value else "no")
        return f'<span class="{word.split()[0]}">{word}</span>'

    rto, rpo, backup = doc["rto"], doc["rpo"], doc["backup"]
    verdict = str(doc["verdict"])
    title = f"Restore drill {doc['id']} — {doc['environment']}: {verdict}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{t(title)}</title><style>{_HTML_STYLE}</style></head><body>",
        f"<h1>Restore drill {t(doc['id'])} — {t(doc['environment'])}: "
        f'<span class="{t(verdict)}" id="verdict">{t(verdict)}</span></h1>',
        "<ul>",
        f"<li>started {t(doc['started_at'])}, finished {t(doc['finished_at'])}</li>",
        f"<li>backup {t(backup['id'])} ({t(backup['kind'])}, selected as "
        f"{t(backup['selection'])}), consistent at {t(backup['consistent_at'])}, "
        f"age {t(_seconds(backup['age_seconds']))}</li>",
        f"<li>recovery point: target {t(doc['recovery_point']['target'])}, "
        f"reached {t(doc['recovery_point']['reached'])}</li>",
        f"<li>PostgreSQL {t(doc['versions'].get('postgresql_scratch'))} (backup taken on "
        f"{t(doc['versions'].get('postgresql_backup'))}), "
        f"drkit {t(doc['versions'].get('drkit'))}</li>",
    ]
    if kind_verdicts(doc):
        out.append(f"<li>every kind the policy takes: {t(kind_verdicts(doc))}</li>")
    out.append("</ul>")
    if doc.get("error"):
        out.append(f"<p><strong>The drill could not run:</strong> {t(doc['error'])}</p>")
    out += [
        "<h2>Objectives</h2>",
        "<table><tr><th>objective</th><th>measured</th><th>objective</th><th>met</th></tr>",
        f"<tr><td>RTO</td><td>{t(_seconds(rto['total']))}</td>"
        f"<td>{t(_seconds(rto['objective']))}</td><td>{met(rto['met'])}</td></tr>",
        f"<tr><td>RPO</td><td>{t(_seconds(rpo['achieved']))}</td>"
        f"<td>{t(_seconds(rpo['objective']))}</td><td>{met(rpo['met'])}</td></tr>",
        "</table>",
        f"<p>RPO basis: {t(rpo['basis'] or '-')}.</p>",
    ]
    if svg is not None:
        out += [
            '<figure id="chart">',
            svg,
            "<figcaption>RTO by phase, and the last drills' RTO and achieved RPO against "
            "the objectives (green within, red over).</figcaption></figure>",
        ]
    elif chart_error is not None:
        out.append(f"<p>The chart could not be drawn: {t(chart_error)}</p>")
    out += ["<h2>Where the time went</h2>", "<table><tr><th>phase</th><th>time</th></tr>"]
    for phase, seconds in rto["phases"].items():
        out.append(f"<tr><td>{t(phase)}</td><td>{t(_seconds(seconds))}</td></tr>")
    out.append(f"<tr><th>total</th><th>{t(_seconds(rto['total']))}</th></tr></table>")
    out += [
        "<h2>Checks</h2>",
        '<table id="checks"><tr><th>check</th><th>status</th><th>expected</th>'
        "<th>observed</th><th>detail</th></tr>",
    ]
    for check in doc["checks"]:
        status = str(check["status"])
        out.append(
            f'<tr><td>{t(check_label(check))}</td><td class="{t(status)}">{t(status)}</td>'
            f"<td>{t(check['expected'])}</td><td>{t(check['observed'])}</td>"
            f"<td>{t(check.get('detail', ''))}</td></tr>"
        )
    summary = doc["summary"]
    out += [
        "</table>",
        f"<p>{t(', '.join(f'{n} {s}' for s, n in summary.items()))}. "
        "NOT_RUN never counts as a pass.</p>",
        "<h2>RTO trend (past drills)</h2>",
        "<table><tr><th>drill</th><th>verdict</th><th>RTO</th></tr>",
    ]
    for past in [*history, doc]:
        total = (past.get("rto") or {}).get("total")
        word = str(past.get("verdict", "?"))
        out.append(
            f'<tr><td>{t(past.get("id", "?"))}</td><td class="{t(word)}">{t(word)}</td>'
            f"<td>{t(_seconds(total if isinstance(total, int | float) else None))}</td></tr>"
        )
    out.append("</table>")
    if doc.get("notes"):
        out += ["<h2>Notes</h2>", "<ul>", *(f"<li>{t(n)}</li>" for n in doc["notes"]), "</ul>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _yes_no(value: bool | None) -> str:
    return "not measured" if value is None else ("yes" if value else "**no**")


def render_junit(doc: dict[str, Any]) -> str:
    """JUnit XML: one test case per check (objectives are checks of kind ``objective``)."""
    checks = doc["checks"]
    failures = sum(1 for c in checks if c["status"] in (FAIL, NOT_RUN))
    errors = sum(1 for c in checks if c["status"] == ERROR)
    if doc.get("error"):
        errors += 1
    suite = ET.Element(
        "testsuite",
        {
            "name": f"drkit drill {doc['environment']}",
            "tests": str(len(checks) + (1 if doc.get("error") else 0)),
            "failures": str(failures),
            "errors": str(errors),
            "skipped": "0",
            "time": f"{doc['rto']['total']:.3f}",
            "timestamp": str(doc["started_at"]),
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("drill_id", doc["id"]),
        ("backup_id", doc["backup"]["id"]),
        ("verdict", doc["verdict"]),
    ):
        ET.SubElement(props, "property", {"name": name, "value": str(value)})
    if doc.get("error"):
        case = ET.SubElement(suite, "testcase", {"classname": "drill", "name": "drill runs"})
        ET.SubElement(case, "error", {"message": str(doc["error"])})
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"drill.{check['kind']}", "name": check_label(check)},
        )
        message = f"expected {check['expected']!r}, observed {check['observed']!r}"
        if check.get("detail"):
            message += f": {check['detail']}"
        if check["status"] == FAIL:
            ET.SubElement(case, "failure", {"type": FAIL, "message": message})
        elif check["status"] == NOT_RUN:
            ET.SubElement(case, "failure", {"type": NOT_RUN, "message": "not run: " + message})
        elif check["status"] == ERROR:
            ET.SubElement(case, "error", {"type": ERROR, "message": message})
        elif check["status"] == WARN:
            ET.SubElement(case, "system-out").text = "warning: " + message
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


# ---------------------------------------------------------------------------
# The JSON: report.json and drkit drill --json, described once
# ---------------------------------------------------------------------------


class DrillBackup(Shape):
    id: str | None
    kind: Literal["logical", "physical"] | None
    selection: str
    databases: dict[str, str] = described("database -> the backup it was restored from")
    consistent_at: Timestamp | None
    age_seconds: float | None = described("seconds between the backup and the drill")
    server_version: str | None
    chain: list[str] | None = described(
        "physical: the base backups combined, full first (more than one: an incremental)",
        default=None,
    )


class RecoveryPoint(Shape):
    target: str = described("an RFC 3339 timestamp, or latest")
    reached: Timestamp | None


class Rto(Shape):
    total_seconds: float = described("seconds from the drill's start until validated data")
    phases_seconds: dict[str, float] = described("seconds per phase (they may overlap)")
    objective_seconds: float | None = described("the RTO objective, seconds")
    total: float = described("the same as total_seconds (kept for version 1; prefer total_seconds)")
    phases: dict[str, float] = described(
        "the same as phases_seconds (kept for version 1; prefer phases_seconds)"
    )
    objective: float | None = described(
        "the same as objective_seconds (kept for version 1; prefer objective_seconds)"
    )
    met: bool | None


class Rpo(Shape):
    achieved_seconds: float | None = described("seconds of data the restore could not bring back")
    basis: str
    objective_seconds: float | None = described("the RPO objective, seconds")
    achieved: float | None = described(
        "the same as achieved_seconds (kept for version 1; prefer achieved_seconds)"
    )
    objective: float | None = described(
        "the same as objective_seconds (kept for version 1; prefer objective_seconds)"
    )
    met: bool | None


class DrillCheck(Shape):
    name: str
    kind: str = described("connect | restore | row_count | sql | amcheck | collation | objective")
    status: Literal["PASS", "FAIL", "NOT_RUN", "ERROR", "WARN"] = described(
        "WARN: something to act on that fails nothing (counts as a pass)"
    )
    expected: Any
    observed: Any
    detail: str | None = None
    database: str | None = None
    backup_kind: str | None = described(
        "in a drill of every kind: the kind of backup whose drill this check belongs to",
        default=None,
    )


class StoredDrillReport(Shape):
    """A drill report as the repository stores it (drills/<id>/report.json), and each
    kind's own report in a drill of every kind: the drill document without ``ok``"""

    error: str | None = described("why the drill could not run (verdict ERROR)")
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
    objectives: dict[str, float | None] = described(
        "rto_seconds and rpo_seconds objectives (also as rto and rpo, kept for version 1)"
    )
    checks: list[DrillCheck]
    summary: dict[str, int] = described("checks per status")
    versions: dict[str, str | None]
    cleanup: dict[str, Any]
    notes: list[str]
    kinds: dict[str, StoredDrillReport] | None = described(
        "a drill of every kind the policy takes (drkit drill ENV without --backup or "
        "--point-in-time): each kind's own report, with its own verdict; the measures "
        "above are the physical drill's when one ran",
        default=None,
    )


class DrillDocument(StoredDrillReport, Document):
    """`drkit drill ENV --json`: the drill report (also stored as report.json)"""
