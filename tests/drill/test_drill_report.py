"""The drill verdict and its renderings (JSON, Markdown with its chart, JUnit): no server."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drkit.drill.chart import CHART_NAME, build_chart
from drkit.drill.report import (
    ERROR,
    FAIL,
    NOT_RUN,
    PASS,
    Check,
    DrillReport,
    render_junit,
    render_markdown,
    write_report_dir,
)


def report(*statuses: str) -> DrillReport:
    started = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    r = DrillReport(
        id="20261127T050000Z-logical-0001",
        environment="prod",
        started_at=started,
        backup_id="20261127T020000Z-logical",
        backup_kind="logical",
        backup_consistent_at=started - timedelta(hours=3),
        finished_at=started + timedelta(minutes=2),
        phases={"startup": 2.0, "fetch": 10.0, "restore": 60.0, "validation": 8.0},
        rto_objective=1800.0,
    )
    for i, status in enumerate(statuses):
        r.add(Check(f"check {i}", "sql", status, expected=True, observed=status == PASS))
    return r


def test_verdict_is_pass_only_when_every_check_passes() -> None:
    assert report(PASS, PASS).verdict == PASS
    assert report(PASS, NOT_RUN).verdict == FAIL  # NOT_RUN is never a pass
    assert report(PASS, FAIL).verdict == FAIL
    assert report(PASS, ERROR).verdict == FAIL
    assert report().verdict == FAIL  # nothing checked proves nothing
    broken = report(PASS)
    broken.error = "cannot create the scratch cluster"
    assert broken.verdict == ERROR


def test_report_document_measures_rto_and_backup_age() -> None:
    doc = report(PASS).to_dict()
    assert doc["rto"]["total"] == 80.0 and doc["rto"]["met"] is True
    assert doc["rto"]["phases"]["restore"] == 60.0
    assert doc["backup"]["age_seconds"] == 3 * 3600
    assert doc["summary"] == {PASS: 1, FAIL: 0, NOT_RUN: 0, ERROR: 0}
    slow = report(PASS)
    slow.rto_objective = 60.0
    assert slow.to_dict()["rto"]["met"] is False


def test_junit_counts_not_run_as_a_failure() -> None:
    doc = report(PASS, NOT_RUN, FAIL, ERROR).to_dict()
    suite = ET.fromstring(render_junit(doc))  # noqa: S314 - rendered here
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "2" and suite.get("errors") == "1"
    assert suite.get("skipped") == "0"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases["check 0"]) == []
    not_run = cases["check 1"].find("failure")
    assert not_run is not None and not_run.get("type") == NOT_RUN
    assert cases["check 3"].find("error") is not None


def test_markdown_has_phase_bars_and_the_trend() -> None:
    doc = report(PASS).to_dict()
    history = [
        {"id": "20261120T050000Z-logical-0000", "verdict": "PASS", "rto": {"total": 40.0}},
    ]
    text = render_markdown(doc, history)
    assert "**PASS**" in text
    bars = {
        line.split()[0]: line.count("█")
        for line in text.splitlines()
        if line.startswith(("startup", "fetch", "restore", "validation"))
    }
    assert bars["restore"] == 30 and bars["fetch"] == 5 and bars["restore"] > bars["validation"]
    trend = [line for line in text.splitlines() if "20261120T050000Z" in line or "*2026" in line]
    assert len(trend) == 2 and trend[0].count("█") == 15 and trend[1].count("█") == 30


def test_the_scheduler_reads_what_a_drill_stores() -> None:
    """drkit_drill_* metrics come from the stored report.json (schedule.metrics)."""
    from drkit.restore import parse_drill_report

    r = report(PASS, PASS)
    r.rpo_achieved = 3 * 3600.0
    summary = parse_drill_report(r.to_dict(), r.id, r.started_at)
    assert summary.passed is True
    assert summary.finished_at == r.finished_at
    assert summary.rto == {
        "startup": 2.0,
        "fetch": 10.0,
        "restore": 60.0,
        "validation": 8.0,
        "total": 80.0,
    }
    assert summary.rpo == 3 * 3600.0
    failed = parse_drill_report(report(PASS, NOT_RUN).to_dict(), r.id, r.started_at)
    assert failed.passed is False


# ---------------------------------------------------------------------------
# The chart report.md embeds
# ---------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def past(n: int, rto: float, rpo: float | None, verdict: str = "PASS") -> dict[str, object]:
    return {
        "id": f"2026112{n}T050000Z-logical-000{n}",
        "verdict": verdict,
        "started_at": f"2026-11-2{n}T05:00:00Z",
        "rto": {"total": rto, "objective": 1800.0},
        "rpo": {"achieved": rpo, "objective": 3600.0},
    }


def assert_png(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_report_dir_holds_a_chart_that_report_md_embeds(tmp_path: Path) -> None:
    r = report(PASS, PASS)
    r.rpo_objective, r.rpo_achieved = 3600.0, 1200.0
    history = [past(1, 900.0, 600.0), past(2, 2400.0, 5400.0, FAIL), past(3, 1000.0, None)]
    paths = write_report_dir(tmp_path / "out", r, history)
    chart = tmp_path / "out" / CHART_NAME
    assert chart in paths
    width, height = assert_png(chart)
    assert width >= 800 and height >= 400
    markdown = (tmp_path / "out" / "report.md").read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", markdown)
    assert links == [CHART_NAME]
    assert (tmp_path / "out" / links[0]).resolve() == chart.resolve()
    assert not list((tmp_path / "out").glob("*.tmp"))  # published by rename, nothing left


def test_report_html_is_self_contained_escaped_and_holds_every_check(tmp_path: Path) -> None:
    """report.html is mailed to an auditor: every check, the verdict, the chart inline,
    nothing fetched or run, and a value that looks like markup stays text."""
    r = report(PASS, FAIL, NOT_RUN)
    r.rpo_objective, r.rpo_achieved = 3600.0, 1200.0
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    r.add(Check(f"rows of {hostile}", "rowcount", FAIL, expected=3, observed=hostile))
    paths = write_report_dir(tmp_path, r, [past(1, 900.0, 600.0)])
    page = tmp_path / "report.html"
    assert page in paths
    text = page.read_text()
    assert "<script" not in text and "<img" not in text  # markup stays text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2  # the name and the value
    assert re.findall(r'id="verdict">([A-Z_]+)<', text) == [FAIL]
    for i in range(3):
        assert f"<td>check {i}</td>" in text
    assert re.search(r"<svg[^>]*>", text) and "</svg>" in text  # the chart, inline
    assert "RTO of the last drills" in text  # its text kept as text
    # self-contained: nothing is loaded from elsewhere
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert "<link" not in text and "@import" not in text


def test_chart_shows_phases_trend_and_objectives_with_units() -> None:
    r = report(PASS)
    r.rpo_objective, r.rpo_achieved = 3600.0, 1200.0
    history = [past(1, 900.0, 600.0), past(2, 2400.0, 5400.0, FAIL)]
    figure = build_chart(r.to_dict(), history)
    axes = {ax.get_title(): ax for ax in figure.axes}
    phases, rto, rpo = (
        axes["RTO by phase, this drill"],
        axes["RTO of the last drills"],
        axes["Achieved RPO of the last drills"],
    )
    # durations of 80 s and 40 min: minutes on the trends, said in the label; the phases
    # keep their own scale (seconds) with the 30 min objective named off the scale
    assert phases.get_xlabel() == "time (s)"
    assert rto.get_ylabel() == "RTO (min)" and rpo.get_ylabel() == "RPO (min)"
    assert [t.get_text() for t in phases.get_yticklabels()][-1] == "total"
    for ax in (phases, rto, rpo):
        legend = ax.get_legend()
        assert legend is not None, ax.get_title()
        assert any("objective" in t.get_text() for t in legend.get_texts()), ax.get_title()
    # three drills, the one over its RTO objective drawn in red, the others green
    bars = rto.patches
    assert len(bars) == 3
    colors = [tuple(round(c, 2) for c in bar.get_facecolor()[:3]) for bar in bars]
    assert colors[0] == colors[2] != colors[1]
    assert colors[1][0] > colors[1][1]  # red-ish: over the objective
    # the objective line sits at 30 min
    objective = [line for line in rto.get_lines() if "objective" in str(line.get_label())]
    assert objective and max(objective[0].get_ydata()) == 30
    assert figure.get_suptitle().startswith(f"prod: drill {r.id} PASS")


def test_chart_of_a_drill_that_could_not_run(tmp_path: Path) -> None:
    """No phase ran, so the RTO sums to 0 s: that must not read as a fast restore."""
    broken = DrillReport(
        id="20261127T050000Z-logical-0001",
        environment="prod",
        started_at=datetime(2026, 11, 27, 5, 0, tzinfo=UTC),
        error="cannot create the scratch cluster",
        rto_objective=1800.0,
    )
    figure = build_chart(broken.to_dict(), [past(1, 900.0, 600.0)])
    assert "RTO not measured" in figure.get_suptitle()
    rto = next(ax for ax in figure.axes if ax.get_title() == "RTO of the last drills")
    within, this = (tuple(bar.get_facecolor()[:3]) for bar in rto.patches)
    assert within != this and len(set(this)) == 1  # grey, not green
    paths = write_report_dir(tmp_path, broken, [])
    assert_png(tmp_path / CHART_NAME)
    assert tmp_path / CHART_NAME in paths
    assert f"]({CHART_NAME})" in (tmp_path / "report.md").read_text()


def test_the_cli_and_the_wal_entry_do_not_import_matplotlib() -> None:
    code = (
        "import sys, drkit.cli, drkit.cli.entry, drkit.drill.report, drkit.drill.runner; "
        "drkit.cli.click_command(); sys.exit('matplotlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
