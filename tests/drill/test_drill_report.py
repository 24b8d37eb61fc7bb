"""The drill verdict and its renderings (JSON, Markdown with its chart, JUnit): no server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drkit.documents import dump
from drkit.drill.chart import CHART_NAME, build_chart
from drkit.drill.report import (
    ERROR,
    FAIL,
    NOT_RUN,
    PASS,
    WARN,
    Check,
    DrillDocument,
    DrillReport,
    StoredDrillReport,
    render_junit,
    render_markdown,
    store_report,
    write_report_dir,
)
from drkit.restore import latest_report, report_key
from drkit.restore.window import newest_drill_summary
from drkit.storage import FileBackend, Repository, RepositoryConfig


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
    doc = dump(report(PASS).stored())
    assert doc["rto"]["total"] == 80.0 and doc["rto"]["met"] is True
    assert doc["rto"]["phases"]["restore"] == 60.0
    assert doc["backup"]["age_seconds"] == 3 * 3600
    assert doc["summary"] == {PASS: 1, FAIL: 0, NOT_RUN: 0, ERROR: 0}
    slow = report(PASS)
    slow.rto_objective = 60.0
    assert dump(slow.stored())["rto"]["met"] is False


def test_junit_counts_not_run_as_a_failure() -> None:
    doc = dump(report(PASS, NOT_RUN, FAIL, ERROR).stored())
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
    doc = dump(report(PASS).stored())
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
    summary = parse_drill_report(dump(r.stored()), r.id, r.started_at)
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
    failed = parse_drill_report(dump(report(PASS, NOT_RUN).stored()), r.id, r.started_at)
    assert failed.passed is False


# ---------------------------------------------------------------------------
# report.json: the stored form, and reports stored by the previous version
# ---------------------------------------------------------------------------


def every_key() -> DrillReport:
    """A drill of every kind whose report sets every key a report has."""
    r = report(PASS, WARN)
    r.backup_kind, r.backup_chain = "physical", ["20261126T030000Z-physical"]
    r.backup_databases = {"app": "20261127T020000Z-logical"}
    r.target_label, r.reached_point = "xid:745", r.started_at - timedelta(hours=1)
    r.rpo_achieved, r.rpo_objective, r.rpo_basis = 3600.1234, 3600.0, "the last commit"
    r.checks[0].database, r.checks[1].detail = "app", "collation version differs"
    r.drkit_version, r.backup_server_version, r.scratch_server_version = "1.2", "16.4", "16.6"
    r.notes = ["a note"]
    part = DrillReport(r.id, "prod", r.started_at, backup_kind="logical", rto_wall=3.0)
    part.add(Check("connect", "connect", PASS, backup_kind="logical"))
    part.cleanup = {"scratch_cluster": "removed"}
    r.parts, r.cleanup = [part], {"logical": part.cleanup}
    return r


#: drills/<id>/report.json of :func:`every_key`'s drill, byte for byte as drkit stored it
#: before the report's JSON became a model (``DrillReport.to_dict``)
STORED_BEFORE = """{
  "backup": {
    "age_seconds": 10800.0,
    "chain": [
      "20261126T030000Z-physical"
    ],
    "consistent_at": "2026-11-27T02:00:00Z",
    "databases": {
      "app": "20261127T020000Z-logical"
    },
    "id": "20261127T020000Z-logical",
    "kind": "physical",
    "selection": "latest",
    "server_version": "16.4"
  },
  "checks": [
    {
      "database": "app",
      "expected": true,
      "kind": "sql",
      "name": "check 0",
      "observed": true,
      "status": "PASS"
    },
    {
      "detail": "collation version differs",
      "expected": true,
      "kind": "sql",
      "name": "check 1",
      "observed": false,
      "status": "WARN"
    }
  ],
  "cleanup": {
    "logical": {
      "scratch_cluster": "removed"
    }
  },
  "environment": "prod",
  "error": null,
  "finished_at": "2026-11-27T05:02:00Z",
  "format": 1,
  "id": "20261127T050000Z-logical-0001",
  "kinds": {
    "logical": {
      "backup": {
        "age_seconds": null,
        "chain": null,
        "consistent_at": null,
        "databases": {},
        "id": null,
        "kind": "logical",
        "selection": "latest",
        "server_version": null
      },
      "checks": [
        {
          "backup_kind": "logical",
          "expected": null,
          "kind": "connect",
          "name": "connect",
          "observed": null,
          "status": "PASS"
        }
      ],
      "cleanup": {
        "scratch_cluster": "removed"
      },
      "environment": "prod",
      "error": null,
      "finished_at": null,
      "format": 1,
      "id": "20261127T050000Z-logical-0001",
      "kinds": null,
      "notes": [],
      "objectives": {
        "rpo": null,
        "rpo_seconds": null,
        "rto": null,
        "rto_seconds": null
      },
      "recovery_point": {
        "reached": null,
        "target": "latest"
      },
      "rpo": {
        "achieved": null,
        "achieved_seconds": null,
        "basis": "",
        "met": null,
        "objective": null,
        "objective_seconds": null
      },
      "rto": {
        "met": null,
        "objective": null,
        "objective_seconds": null,
        "phases": {},
        "phases_seconds": {},
        "total": 3.0,
        "total_seconds": 3.0
      },
      "started_at": "2026-11-27T05:00:00Z",
      "summary": {
        "ERROR": 0,
        "FAIL": 0,
        "NOT_RUN": 0,
        "PASS": 1
      },
      "verdict": "PASS",
      "versions": {
        "drkit": "",
        "postgresql_backup": null,
        "postgresql_scratch": null
      }
    }
  },
  "notes": [
    "a note"
  ],
  "objectives": {
    "rpo": 3600.0,
    "rpo_seconds": 3600.0,
    "rto": 1800.0,
    "rto_seconds": 1800.0
  },
  "recovery_point": {
    "reached": "2026-11-27T04:00:00Z",
    "target": "xid:745"
  },
  "rpo": {
    "achieved": 3600.123,
    "achieved_seconds": 3600.123,
    "basis": "the last commit",
    "met": false,
    "objective": 3600.0,
    "objective_seconds": 3600.0
  },
  "rto": {
    "met": true,
    "objective": 1800.0,
    "objective_seconds": 1800.0,
    "phases": {
      "fetch": 10.0,
      "restore": 60.0,
      "startup": 2.0,
      "validation": 8.0
    },
    "phases_seconds": {
      "fetch": 10.0,
      "restore": 60.0,
      "startup": 2.0,
      "validation": 8.0
    },
    "total": 80.0,
    "total_seconds": 80.0
  },
  "started_at": "2026-11-27T05:00:00Z",
  "summary": {
    "ERROR": 0,
    "FAIL": 0,
    "NOT_RUN": 0,
    "PASS": 1,
    "WARN": 1
  },
  "verdict": "PASS",
  "versions": {
    "drkit": "1.2",
    "postgresql_backup": "16.4",
    "postgresql_scratch": "16.6"
  }
}
"""


def file_repo(root: Path) -> Repository:
    return Repository(FileBackend(root), "prod", RepositoryConfig(url=f"file://{root}"))


def test_a_report_is_stored_as_the_previous_version_stored_it(tmp_path: Path) -> None:
    """The model writes report.json with the same bytes as the dict it replaced, every
    key included (a null, an absent detail, a kind's own report): whoever reads the
    drills a repository holds reads one shape, whichever version stored them."""
    repo = file_repo(tmp_path)
    key = store_report(repo, every_key())
    assert repo.backend.get_bytes(key).decode() == STORED_BEFORE


def test_a_report_the_previous_version_stored_still_loads(tmp_path: Path) -> None:
    """A report.json the previous version wrote is read by the catalog view (status,
    /metrics, the next drill's history), rendered, and described by the model."""
    repo = file_repo(tmp_path)
    drill_id = json.loads(STORED_BEFORE)["id"]
    repo.backend.put_bytes(repo.key(report_key(drill_id)), STORED_BEFORE.encode())
    summary = newest_drill_summary(repo)
    assert summary is not None and summary.id == drill_id and summary.passed is True
    assert summary.rto["total"] == 80.0 and summary.rpo == 3600.123
    doc = latest_report(repo)
    assert doc is not None
    assert dump(StoredDrillReport.model_validate(doc)) == doc  # every key, as stored
    assert "**PASS**" in render_markdown(doc, [])
    assert 'name="check 1"' in render_junit(doc)
    text = render_markdown(dump(every_key().stored()), [doc])  # a stored report as history
    trend = [line for line in text.splitlines() if line[1:].startswith(drill_id)]
    assert len(trend) == 2 and all("PASS" in line and "1m20s" in line for line in trend)


def test_the_printed_document_is_the_stored_report_with_ok() -> None:
    """``drkit drill --json`` and report.json are one description: the same report, the
    command adding only ``ok`` (true only on PASS)."""
    drill = every_key()
    printed = dump(drill.document())
    assert isinstance(drill.document(), DrillDocument)
    assert printed.pop("ok") is True and printed == dump(drill.stored())
    assert dump(report(PASS, NOT_RUN).document())["ok"] is False


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
    figure = build_chart(dump(r.stored()), history)
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
    figure = build_chart(dump(broken.stored()), [past(1, 900.0, 600.0)])
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
