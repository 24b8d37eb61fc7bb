"""monitoring/drkit-alerts.yml: valid for Prometheus, its key rules unit-tested with
promtool, and every drkit_* metric it uses is one the scheduler exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from drkit.schedule.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "monitoring" / "drkit-alerts.yml"
RULE_TESTS = ROOT / "monitoring" / "tests" / "drkit-alerts.test.yml"


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
    } <= names
    used: set[str] = set()
    absent: set[str] = set()
    for rule in rules:
        used |= set(re.findall(r"\bdrkit_\w+", rule["expr"]))
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
