"""The drill verdict and its renderings: pure logic, no server."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from drkit.drill.report import (
    ERROR,
    FAIL,
    NOT_RUN,
    PASS,
    Check,
    DrillReport,
    render_junit,
    render_markdown,
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
    from drkit.schedule.metrics import parse_drill_report

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
