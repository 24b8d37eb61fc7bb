"""monitoring/: the alert rules and the Grafana dashboard are valid for Prometheus (promtool),
their key rules unit-tested, and every drkit_* metric they use is one the scheduler's live
``/metrics`` serves; that live output passes ``promtool check metrics``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.config import load_policy
from drkit.restore import latest_report
from drkit.schedule.daemon import SchedulerDaemon
from drkit.schedule.metrics import METRIC_NAMES, METRICS
from drkit.storage import Repository
from tests.fix_cli import PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "drkit-alerts.yml"
RULE_TESTS = ROOT / "monitoring" / "tests" / "drkit-alerts.test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "drkit.json"


#: label names drkit exports that start like metric names (``drkit_job``)
LABEL_NAMES = {label for row in METRICS for label in row.labels}


def metric_names(expr: str) -> set[str]:
    """The drkit metric names a PromQL expression reads (not its ``drkit_job`` labels)."""
    return set(re.findall(r"\bdrkit_\w+", expr)) - LABEL_NAMES


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (Debian) to test alert rules")
    return path


def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert {"DrkitBackupTooOld", "DrkitWalArchivingStalled"} <= tested


def test_promtool_catches_a_broken_threshold(tmp_path: Path) -> None:
    """The unit tests can fail: with the buffer removed, backup-too-old fires too early."""
    broken = RULES.read_text().replace(
        "> drkit_backup_expected_interval_seconds + 3600",
        "> drkit_backup_expected_interval_seconds",
    )
    assert broken != RULES.read_text()
    (tmp_path / "drkit-alerts.yml").write_text(broken)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=tmp_path / "tests",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DrkitBackupTooOld" in result.stdout + result.stderr


def test_rules_use_only_exported_metrics_and_cover_the_issue() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {
        "DrkitBackupTooOld",
        "DrkitWalArchivingStalled",
        "DrkitDrillFailed",
        "DrkitDrillStale",
        "DrkitRpoObjectiveBreached",
        "DrkitDrillRtoObjectiveBreached",
        "DrkitJobFailing",
        "DrkitWalSlotLagOverRpo",
        "DrkitWalSlotInactive",
    } <= names
    used: set[str] = set()
    absent: set[str] = set()
    for rule in rules:
        used |= metric_names(rule["expr"])
        absent |= set(re.findall(r"absent\((drkit_\w+)", rule["expr"]))
    exported = set(METRIC_NAMES)
    assert used - exported == set()
    key_metrics = {
        "drkit_backup_last_success_timestamp_seconds",
        "drkit_wal_last_archived_timestamp_seconds",
        "drkit_rpo_exposure_seconds",
        "drkit_job_runs_total",
        "drkit_drill_last_verdict",
    }
    assert key_metrics <= absent
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]


# Prometheus's own label for the scrape job: drkit's metrics never carry it, and drkit's
# rules and panels read it only as the scrape job's name (``up{job="drkit"}``)
SCRAPE_JOB = re.compile(r'\bjob\s*(=~?|!=)\s*"drkit"')
JOB_LABEL = re.compile(r"(\$labels\.job\b|\{\{\s*job\s*\}\}|\bjob\b\s*[=!~,)}]|[(,]\s*job\b)")


def strings(value: Any) -> str:
    """Every string in a YAML/JSON document (keys too), one a line, unescaped."""
    if isinstance(value, dict):
        return "\n".join(f"{k}\n{strings(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(strings(v) for v in value)
    return str(value)


def test_no_metric_rule_or_panel_uses_prometheus_job_label() -> None:
    assert all("job" not in row.labels for row in METRICS)
    assert any("drkit_job" in row.labels for row in METRICS)
    doc = yaml.safe_load(RULES.read_text())
    texts = [strings(rule) for group in doc["groups"] for rule in group["rules"]]
    texts += [strings(panel.get("targets", [])) for panel in panels(dashboard())]
    offending = [t for t in texts if JOB_LABEL.search(SCRAPE_JOB.sub("", t))]
    assert offending == []
    # the check can fail: the old spelling is caught
    assert JOB_LABEL.search("sum by (env, job) (drkit_job_runs_total)")
    assert JOB_LABEL.search("{{ $labels.job }} failed")
    assert not JOB_LABEL.search(SCRAPE_JOB.sub("", 'absent(up{job="drkit"})'))


def test_every_inhibit_rule_is_scoped_to_one_env_and_drkit_alerts() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager.yml").read_text())
    rules = config["inhibit_rules"]
    assert rules
    for rule in rules:
        assert "env" in rule.get("equal", []), rule
        targets = rule["target_matchers"]
        assert any(re.fullmatch(r'alertname=~"Drkit[^"]*"', m.replace(" ", "")) for m in targets)
    # and the source alert carries the env it inhibits: the rule unit tests show it
    # (DrkitSchedulerDown, one alert per environment the scheduler served)


# ---------------------------------------------------------------------------
# The live /metrics of a scheduler that ran a backup and a drill
# ---------------------------------------------------------------------------


def served_metrics(
    pg_server: PgServer, database: tuple[str, str], repo: RepoTarget, make_policy: PolicyWriter
) -> tuple[str, dict[str, Any]]:
    """The body of ``/metrics`` from a real daemon after a real backup and drill, and the
    drill's stored report."""
    name, url = database
    pg_server.query(name, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
    policy_dir = make_policy(
        "prod",
        url,
        repo,
        schedule={"logical_backup": "0 2 * * *", "drill": "0 5 * * 1", "timezone": "UTC"},
        objectives={"rpo": "1d", "rto": "30m"},
    )
    daemon = SchedulerDaemon(["prod"], policy_dir, bind="127.0.0.1", port=0)
    daemon.start()
    try:
        daemon.run_job("prod", "logical_backup")
        daemon.run_job("prod", "drill")
        for job in ("logical_backup", "drill"):
            state = daemon.jobs[("prod", job)]
            assert state.last_status == "success", (job, state.last_error)
        report = latest_report(Repository.for_policy(load_policy("prod", policy_dir)))
        assert report is not None
        url = f"http://127.0.0.1:{daemon.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local
            return response.read().decode(), report
    finally:
        daemon.shutdown()


def families(text: str) -> set[str]:
    """Metric family names the exposition declares (``# TYPE name kind``)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
    return names


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_live_metrics_are_lint_clean_and_serve_every_metric_monitoring_uses(
    pg_server: PgServer,
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
) -> None:
    text, report = served_metrics(pg_server, database, file_repo, make_policy)
    lint = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stderr

    values = samples(text)
    assert values[("drkit_backups_stored", (("env", "prod"), ("kind", "logical")))] == 1
    # the drill's total RTO is its own metric: a sum over phases counts each phase once
    total = values[("drkit_drill_rto_total_seconds", (("env", "prod"),))]
    phases = {
        dict(labels)["phase"]: value
        for (name, labels), value in values.items()
        if name == "drkit_drill_rto_seconds"
    }
    assert {"startup", "fetch", "restore", "validation"} <= set(phases)
    assert "total" not in phases
    assert total == report["rto"]["total"] > 0
    assert phases == report["rto"]["phases"]

    served = families(text)
    assert served == set(METRIC_NAMES)
    used = dashboard_metric_names() | alert_metric_names()
    assert used - served == set(), "monitoring uses metrics drkit does not serve"
    assert "drkit_backup_count" not in served


# ---------------------------------------------------------------------------
# monitoring/grafana/drkit.json
# ---------------------------------------------------------------------------

GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1d",
    "${env:regex}": ".*",
    "$env": ".*",
}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def dashboard_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables substituted) for every query."""
    out = []
    for panel in panels(doc):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unknown Grafana variable in {panel['title']!r}: {expr}"
            out.append((panel["title"], expr))
    return out


def template_metric_names(doc: dict[str, Any]) -> set[str]:
    names = set()
    for variable in doc.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            names |= set(re.findall(r"label_values\((\w+)", text))
    return names


def dashboard_metric_names() -> set[str]:
    doc = dashboard()
    names = template_metric_names(doc)
    for _, expr in dashboard_queries(doc):
        names |= metric_names(expr)
    return names


def alert_metric_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {
        name
        for group in doc["groups"]
        for rule in group["rules"]
        for name in metric_names(rule["expr"])
    }


def check_queries_with_promtool(queries: list[tuple[str, str]], tmp_path: Path) -> str:
    """promtool parses a rules file whose recording rules are the queries; its output."""
    rules = [
        {"record": f"drkit_dashboard:query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_dashboard_query_parses_with_promtool(tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard())
    assert len(queries) >= 10
    out = check_queries_with_promtool(queries, tmp_path)
    assert f"{len(queries)} rules found" in out


def test_promtool_rejects_a_broken_dashboard_query(tmp_path: Path) -> None:
    """The check can fail: one unbalanced bracket in one panel is caught."""
    queries = dashboard_queries(dashboard())
    title, expr = queries[0]
    with pytest.raises(AssertionError, match=r"dashboard-queries\.yml"):
        check_queries_with_promtool([*queries[1:], (title, f"sum(({expr})")], tmp_path)


def test_dashboard_shows_what_an_operator_needs() -> None:
    doc = dashboard()
    assert doc["uid"] == "drkit" and doc["title"]
    by_title = {panel["title"]: panel for panel in panels(doc)}
    exprs = " ".join(expr for _, expr in dashboard_queries(doc))
    for metric in (
        "drkit_rpo_exposure_seconds",
        "drkit_objective_rpo_seconds",
        "drkit_objective_rto_seconds",
        "drkit_backup_last_success_timestamp_seconds",
        "drkit_backup_last_size_bytes",
        "drkit_wal_last_archived_timestamp_seconds",
        "drkit_drill_last_verdict",
        "drkit_drill_rto_seconds",
        "drkit_drill_rto_total_seconds",
        "drkit_drill_rpo_seconds",
        "drkit_job_runs_total",
    ):
        assert metric in exprs, f"the dashboard does not show {metric}"
    assert 'status="failure"' in exprs
    # every query has a datasource and a legend that names the environment
    for panel in panels(doc):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
        for target in panel["targets"]:
            if "drkit_" in target["expr"]:
                assert "{{env}}" in target["legendFormat"], panel["title"]
                assert 'env=~"$env"' in target["expr"], panel["title"]
    units = {
        panel["title"]: panel["fieldConfig"]["defaults"].get("unit")
        for panel in panels(doc)
        if panel["type"] != "row"
    }
    assert units["Backup size"] == "bytes"
    assert units["WAL lag (time since the last archived WAL)"] == "s"
    assert "Drill RTO by phase" in by_title
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["env"]["includeAll"] and variables["env"]["multi"]


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    doc = dashboard()
    ids = [panel["id"] for panel in panels(doc)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(doc):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
