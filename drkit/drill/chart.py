"""The chart ``report.md`` embeds: is this environment inside its objectives?

One figure, written as a PNG next to ``report.md`` in ``--report-dir`` and inlined as
SVG in ``report.html`` and the scheduler's status page (:func:`chart_svg`):

* left, this drill's RTO by phase and its total against the RTO objective;
* right, the RTO and the achieved RPO of the last drills (the stored reports plus this
  one) against the objectives, each bar green when within its objective, red when over
  it, grey when the policy set none.

Every axis says its unit (one unit for the whole chart, chosen from the largest value
shown).  matplotlib is imported here only, when a chart is drawn, so the CLI start-up
and ``wal-push`` never pay for it; the chart is drawn on a ``Figure`` with the Agg
canvas (no pyplot, no global state: safe in the scheduler's threads) and published by
rename, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.catalog import parse_ts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHART_NAME = "rto-rpo.png"

WITHIN = "#2e7d32"
OVER = "#c62828"
NO_OBJECTIVE = "#9e9e9e"
PHASE = "#1565c0"
TOTAL = "#263238"
OBJECTIVE = "#d32f2f"

UNITS = ((7200.0, 3600.0, "h"), (120.0, 60.0, "min"), (0.0, 1.0, "s"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _unit(values: list[float]) -> tuple[float, str]:
    """Seconds per unit and its name, for the largest value on the chart."""
    largest = max(values, default=0.0)
    for threshold, scale, name in UNITS:
        if largest >= threshold:
            return scale, name
    return 1.0, "s"


def _fmt(value: float, scale: float = 1.0, unit: str = "s") -> str:
    """A duration for a label: ``8 s``, ``1 min 20 s``, ``2 h 5 min`` (the axis says
    its unit; a label reads best in the units a person would say)."""
    del scale, unit
    seconds = round(value, 1)
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{round(seconds / 60)} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _labels(trend: list[dict[str, Any]]) -> list[str]:
    """Each drill's start for the x axis: to the minute, to the second when that is
    needed to tell two apart."""
    starts: list[datetime | None] = []
    for doc in trend:
        try:
            starts.append(parse_ts(doc.get("started_at")))
        except (TypeError, ValueError):
            starts.append(None)
    for pattern in ("%m-%d %H:%M", "%m-%d %H:%M:%S"):
        labels = [
            s.strftime(pattern) if s else str(d.get("id", "?"))[:16]
            for s, d in zip(starts, trend, strict=True)
        ]
        if len(set(labels)) == len(labels):
            break
    return labels


def _rto(doc: dict[str, Any]) -> float | None:
    """The drill's RTO; none when the drill could not run (its phases sum to nothing,
    which must not read as a fast restore)."""
    if doc.get("error") or doc.get("verdict") == "ERROR":
        return None
    return _number((doc.get("rto") or {}).get("total"))


def _color(value: float | None, objective: float | None) -> str:
    if value is None or objective is None:
        return NO_OBJECTIVE
    return WITHIN if value <= objective else OVER


def build_chart(doc: dict[str, Any], history: list[dict[str, Any]]) -> Figure:
    """The figure for one drill report (its stored JSON, ``DrillReport.stored()``) and
    the stored reports before it, oldest first."""
    from matplotlib.figure import Figure

    rto = doc.get("rto") or {}
    phases = {str(k): float(v) for k, v in (rto.get("phases") or {}).items()}
    trend = [*history, doc]
    rto_values = [_rto(r) for r in trend]
    rpo_values = [_number((r.get("rpo") or {}).get("achieved")) for r in trend]
    rto_goals = [_number((r.get("rto") or {}).get("objective")) for r in trend]
    rpo_goals = [_number((r.get("rpo") or {}).get("objective")) for r in trend]
    shown = [
        v
        for v in [*phases.values(), *rto_values, *rpo_values, *rto_goals, *rpo_goals]
        if v is not None
    ]
    scale, unit = _unit(shown)

    figure = Figure(figsize=(13, 7.5), dpi=100, layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=(1, 1.25))
    _phases(figure.add_subplot(grid[:, 0]), doc, phases)
    labels = _labels(trend)
    _trend(
        figure.add_subplot(grid[0, 1]),
        "RTO of the last drills",
        "RTO",
        labels,
        rto_values,
        rto_goals,
        scale,
        unit,
    )
    _trend(
        figure.add_subplot(grid[1, 1]),
        "Achieved RPO of the last drills",
        "RPO",
        labels,
        rpo_values,
        rpo_goals,
        scale,
        unit,
    )
    passed = doc.get("verdict") == "PASS"
    figure.suptitle(
        _headline(doc, scale, unit),
        fontsize=13,
        fontweight="bold",
        color=WITHIN if passed else OVER,
    )
    return figure


def _headline(doc: dict[str, Any], scale: float, unit: str) -> str:
    parts = []
    for name, value in (
        ("RTO", _rto(doc)),
        ("RPO", _number((doc.get("rpo") or {}).get("achieved"))),
    ):
        goal = _number((doc.get(name.lower()) or {}).get("objective"))
        if value is None:
            parts.append(f"{name} not measured")
            continue
        text = f"{name} {_fmt(value, scale, unit)}"
        if goal is not None:
            verdict = "within" if value <= goal else "OVER"
            text += f" ({verdict} the {_fmt(goal, scale, unit)} objective)"
        parts.append(text)
    return (
        f"{doc.get('environment', '?')}: drill {doc.get('id', '?')} {doc.get('verdict', '?')}\n"
        + ", ".join(parts)
    )


def _phases(ax: Axes, doc: dict[str, Any], phases: dict[str, float]) -> None:
    """Its own scale: an objective far beyond the total would squash every phase to a
    line, so it is drawn only when it fits, and otherwise named in the legend."""
    rto = doc.get("rto") or {}
    total = _number(rto.get("total"))
    goal = _number(rto.get("objective"))
    longest = max([*phases.values(), total or 0.0], default=0.0)
    goal_fits = goal is not None and goal <= 2 * longest
    scale, unit = _unit([longest, goal or 0.0] if goal_fits else [longest])
    ax.set_title("RTO by phase, this drill")
    ax.set_xlabel(f"time ({unit})")
    if not phases:
        reason = doc.get("error") or "no phase was measured"
        ax.text(0.5, 0.5, f"no phase measured:\n{reason}", ha="center", va="center", wrap=True)
        ax.set_yticks([])
        ax.set_xlim(0, 1)
        return
    names = [*phases, "total"]
    values = [*phases.values(), total or 0.0]
    colors = [PHASE] * len(phases) + [_color(total, goal) if goal is not None else TOTAL]
    bars = ax.barh(
        range(len(names)), [v / scale for v in values], color=colors, label="phase duration"
    )
    ax.bar_label(bars, labels=[_fmt(v, scale, unit) for v in values], padding=3, fontsize=9)
    ax.set_yticks(range(len(names)), labels=names)
    ax.invert_yaxis()  # the first phase on top, the total at the bottom
    if goal is not None and goal_fits:
        ax.axvline(
            goal / scale,
            color=OBJECTIVE,
            linestyle="--",
            linewidth=2,
            label=f"RTO objective ({_fmt(goal)})",
        )
    elif goal is not None:
        times = f", {goal / total:.0f}x the total" if total else ""
        ax.plot(
            [],
            [],
            color=OBJECTIVE,
            linestyle="--",
            linewidth=2,
            label=f"RTO objective ({_fmt(goal)}): off this scale{times}",
        )
    top = max([*values, goal if goal_fits and goal else 0.0]) / scale
    ax.set_xlim(0, top * 1.25 or 1)
    ax.grid(axis="x", alpha=0.3)
    if sum(phases.values()) > (total or 0.0) + 0.001:
        ax.plot([], [], " ", label="phases overlap: the total is the wall time to validated data")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.08), fontsize=9)


def _trend(
    ax: Axes,
    title: str,
    name: str,
    labels: list[str],
    values: list[float | None],
    goals: list[float | None],
    scale: float,
    unit: str,
) -> None:
    from matplotlib.patches import Patch

    positions = list(range(len(values)))
    colors = [_color(v, g) for v, g in zip(values, goals, strict=True)]
    bars = ax.bar(
        positions,
        [(v or 0.0) / scale for v in values],
        color=colors,
        width=0.6,
        edgecolor=["none"] * (len(values) - 1) + ["black"],
        linewidth=2,
    )
    ax.bar_label(
        bars,
        labels=["n/a" if v is None else _fmt(v, scale, unit) for v in values],
        padding=2,
        fontsize=8,
    )
    ax.set_title(title)
    ax.set_ylabel(f"{name} ({unit})")
    ax.set_xlabel("drill (started, UTC); the last one is this drill")
    ax.set_xticks(positions, labels=labels, rotation=30, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    handles: list[Any] = []
    if any(g is not None for g in goals):
        # each drill against the objective it was judged by: a step line over the bars
        edges = [p - 0.5 for p in positions] + [positions[-1] + 0.5]
        steps = [float("nan") if g is None else g / scale for g in goals]
        (line,) = ax.step(
            edges,
            [*steps, steps[-1]],
            where="post",
            color=OBJECTIVE,
            linestyle="--",
            linewidth=2,
            label=f"{name} objective",
        )
        handles.append(line)
    used = set(colors)
    for color, text in (
        (WITHIN, "within objective"),
        (OVER, "over objective"),
        (NO_OBJECTIVE, "no objective or not measured"),
    ):
        if color in used:
            handles.append(Patch(color=color, label=text))
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2, label="this drill"))
    top = max([v for v in [*values, *goals] if v is not None], default=1.0) / scale
    ax.set_ylim(0, top * 1.2 or 1)
    ax.set_xlim(-0.7, positions[-1] + 0.7)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def write_chart(path: Path, doc: dict[str, Any], history: list[dict[str, Any]]) -> Path:
    """Draw the chart to ``path`` (PNG), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = build_chart(doc, history)
    FigureCanvasAgg(figure)
    partial = path.with_name(path.name + ".tmp")
    try:
        figure.savefig(partial, format="png", facecolor="white")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def chart_svg(doc: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The same chart as an inline ``<svg>`` element (no XML prolog), its text kept as
    text so that a reader can search and copy it, and the page carries no font file."""
    import io

    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    figure = build_chart(doc, history)
    FigureCanvasSVG(figure)
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "drkit"}):
        figure.savefig(out, format="svg", facecolor="white")
    text = out.getvalue()
    return text[text.index("<svg") :]
