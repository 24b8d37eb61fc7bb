"""The scheduler's status page at ``/``: one read-only HTML page, rendered on the server.

Per environment: the newest backup of each kind (id, age, size), the WAL archive's
freshness and the gap that stops ``restore latest``, the streaming slot's lag (with
``wal_streaming``), the RPO exposure against the
objective, the last drill's verdict with its RTO and RPO against the objectives and the
chart of the last drills (:func:`drkit.drill.chart.chart_svg`, inline), the next run of
each job and every failed job with its error line.

It shows what ``/metrics`` and ``/status`` already know, from the same two sources: the
catalog snapshots the daemon reads from each repository (:class:`CatalogView` through
:func:`~drkit.schedule.metrics.read_catalog`) and the job verdicts of
:func:`~drkit.schedule.endpoints.job_status`.  It reads nothing by itself.

Every value on it is HTML-escaped and passed through :func:`drkit.redact.mask_url`
(an error line may quote a URL), no script runs on it and nothing is loaded from
elsewhere.  Drill charts are drawn once per set of stored drills, not per request.
"""

from __future__ import annotations

import html
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drkit.catalog import iso
from drkit.config import format_duration
from drkit.progress import human_size
from drkit.redact import mask_url

if TYPE_CHECKING:
    from drkit.config import Policy
    from drkit.schedule.metrics import CatalogSnapshot, MetricsView

log = logging.getLogger(__name__)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1em auto;max-width:75em;color:#222}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left}.ok,.PASS,.yes{color:#2e7d32;font-weight:bold}
.failing,.overdue,.FAIL,.ERROR,.no,.attention{color:#c62828;font-weight:bold}
.standby{color:#555}section{border-top:2px solid #999;margin-top:1.5em}
figure{margin:.5em 0;max-width:52em}svg{width:100%;height:auto}
"""


def _t(value: Any) -> str:
    """A value as page text: secrets masked, then escaped."""
    return html.escape(mask_url("-" if value is None else str(value)))


def _age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "-"
    seconds = max(0.0, (now - then).total_seconds())
    from datetime import timedelta

    return format_duration(timedelta(seconds=round(seconds))) + " ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    from datetime import timedelta

    return f"{value:.1f} s" if value < 60 else format_duration(timedelta(seconds=round(value)))


def _met(value: float | None, objective: float | None) -> str:
    if value is None:
        return '<span class="no">not measured</span>'
    if objective is None:
        return "no objective"
    return '<span class="yes">yes</span>' if value <= objective else '<span class="no">no</span>'


class DrillCharts:
    """The drill chart of each environment, drawn again only when its stored drills
    change (matplotlib takes a fraction of a second; the page is read often)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._charts: dict[str, tuple[tuple[str, ...], str]] = {}

    def svg(self, env: str, drills: list[dict[str, Any]]) -> str:
        """The inline chart of ``drills`` (oldest first), or a line saying why not."""
        if not drills:
            return "<p>No drill report is stored yet.</p>"
        ids = tuple(str(d.get("id")) for d in drills)
        with self._lock:
            cached = self._charts.get(env)
            if cached and cached[0] == ids:
                return cached[1]
            try:
                from drkit.drill import chart_svg

                svg = chart_svg(drills[-1], drills[:-1])
            except Exception as exc:  # the page must show the rest
                log.error("the drill chart of %s could not be drawn: %s", env, exc)
                return f"<p>The drill chart could not be drawn: {_t(type(exc).__name__)}</p>"
            self._charts[env] = (ids, svg)
            return svg


def render_page(view: MetricsView, status: dict[str, Any], charts: DrillCharts) -> str:
    """The whole page, from the daemon's snapshot and the ``/status`` document."""
    now = view.now
    verdict = str(status.get("status", "attention"))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="refresh" content="60">',
        f"<title>drkit: {_t(verdict)}</title><style>{STYLE}</style></head><body>",
        f'<h1>drkit scheduler: <span class="{_t(verdict)}" id="overall">{_t(verdict)}</span></h1>',
        f"<p>as of {_t(iso(now))}, running since {_t(status.get('started_at'))}; "
        'JSON at <a href="/status">/status</a>, metrics at <a href="/metrics">/metrics</a>'
        "</p>",
    ]
    problems = status.get("problems") or []
    if problems:
        out += ['<ul id="problems">', *(f"<li>{_t(p)}</li>" for p in problems), "</ul>"]
    for policy in sorted(view.policies, key=lambda p: p.name):
        catalog = view.catalogs.get(policy.name)
        jobs = [j for j in status.get("jobs", []) if j.get("env") == policy.name]
        out += _environment(policy, catalog, jobs, view, charts)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _environment(
    policy: Policy,
    catalog: CatalogSnapshot | None,
    jobs: list[dict[str, Any]],
    view: MetricsView,
    charts: DrillCharts,
) -> list[str]:
    env, now = policy.name, view.now
    out = [f'<section id="env-{_t(env)}"><h2>{_t(env)}</h2>']
    if any(job.get("status") == "standby" for job in jobs):
        out.append("<p>Another scheduler holds this environment's lock: this one stands by.</p>")
    if catalog is None:
        return [*out, "<p>The repository catalog has not been read yet.</p></section>"]
    out.append(f"<p>catalog read {_t(_age(now, catalog.refreshed_at))}</p>")
    if catalog.error:
        out.append(f'<p class="no">Reading the repository failed: {_t(catalog.error)}</p>')

    out += ["<h3>Backups</h3>"]
    if catalog.newest:
        out.append(
            "<table><tr><th>kind</th><th>newest</th><th>age</th><th>size</th><th>stored</th></tr>"
        )
        for kind, backup in sorted(catalog.newest.items()):
            out.append(
                f"<tr><td>{_t(kind)}</td><td>{_t(backup.id)}</td>"
                f"<td>{_t(_age(now, backup.finished_at))}</td>"
                f"<td>{_t(human_size(backup.size))}</td>"
                f"<td>{_t(catalog.counts.get(kind, 0))}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="no">No backup is stored.</p>')

    out.append("<h3>WAL and RPO</h3><ul>")
    if catalog.wal is None:
        out.append("<li>WAL archiving is off in the policy.</li>")
    else:
        wal = catalog.wal
        out.append(f"<li>newest archived WAL file: {_t(_age(now, catalog.wal_last))}</li>")
        out.append(
            f"<li>restore latest reaches {_t(wal.last_segment)} "
            f"(archived {_t(_age(now, wal.end))})</li>"
        )
        if wal.first_missing:
            out.append(
                f'<li class="no">gap: {_t(wal.first_missing)} is missing, '
                f"{_t(wal.beyond_gap)} segments archived past it cannot be replayed</li>"
            )
        if wal.foreign:
            out.append(
                f'<li class="no">{_t(len(wal.foreign))} segments of another cluster, '
                f"from {_t(wal.foreign[0])}</li>"
            )
        if wal.problem:
            out.append(f'<li class="no">{_t(wal.problem)}</li>')
    slot = catalog.slot
    if slot is not None:  # wal_streaming: the slot's lag, as drkit status shows it
        if slot.reached and slot.exists:
            lag = f"{human_size(slot.lag_bytes or 0)}, {_seconds(slot.lag_seconds)}"
            late = not slot.active or (
                policy.objectives.rpo_seconds is not None
                and (slot.lag_seconds or 0) > policy.objectives.rpo_seconds
            )
            mark = ' class="no"' if late else ""
            state = "active" if slot.active else "INACTIVE"
            out.append(f"<li{mark}>streaming slot {_t(slot.slot)}: {state}, lag {_t(lag)}</li>")
        else:
            out.append(f'<li class="no">streaming: {_t(slot.problem)}</li>')
    from drkit.restore import rpo_exposure

    exposure = rpo_exposure(catalog.databases, now) if catalog.databases else None
    objective = policy.objectives.rpo_seconds
    out.append(
        f"<li>RPO exposure: {_t(_seconds(exposure))} against the objective "
        f"{_t(_seconds(objective))}: within {_met(exposure, objective)}</li></ul>"
    )

    out.append("<h3>Last drill</h3>")
    drill = catalog.drill
    if drill is None:
        out.append("<p>No drill report is stored yet.</p>")
    else:
        word = "PASS" if drill.passed else "FAIL" if drill.passed is False else "unknown"
        rto, rpo = drill.rto.get("total"), drill.rpo
        rto_goal, rpo_goal = policy.objectives.rto_seconds, policy.objectives.rpo_seconds
        out += [
            f'<p>{_t(drill.id)}: <span class="{_t(word)}">{_t(word)}</span>, '
            f"finished {_t(_age(now, drill.finished_at))}</p>",
            "<table><tr><th></th><th>measured</th><th>objective</th><th>met</th></tr>",
            f"<tr><td>RTO</td><td>{_t(_seconds(rto))}</td><td>{_t(_seconds(rto_goal))}</td>"
            f"<td>{_met(rto, rto_goal)}</td></tr>",
            f"<tr><td>RPO</td><td>{_t(_seconds(rpo))}</td><td>{_t(_seconds(rpo_goal))}</td>"
            f"<td>{_met(rpo, rpo_goal)}</td></tr></table>",
            f"<figure>{charts.svg(env, catalog.drills)}</figure>",
        ]

    out += [
        "<h3>Jobs</h3>",
        "<table><tr><th>job</th><th>status</th><th>next run</th><th>last run</th>"
        "<th>error</th></tr>",
    ]
    for job in jobs:
        state = str(job.get("status"))
        error = job.get("last_error") if job.get("last_status") == "failure" else None
        out.append(
            f'<tr><td>{_t(job.get("job"))}</td><td class="{_t(state)}">{_t(state)}</td>'
            f"<td>{_t(job.get('next_run'))}</td><td>{_t(job.get('last_run'))} "
            f"{_t(job.get('last_status') or '')}</td><td>{_t(error or '')}</td></tr>"
        )
    out += ["</table>", "</section>"]
    return out
