"""Restore drills end to end through the real CLI: a real scratch cluster, real rows.

Every drill here runs with ``DRKIT_TMPDIR`` pointing at a directory of the test's own,
so the test can prove that the scratch cluster is gone afterwards: no directory left
and no process whose command line names it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drkit.demo.sample import table_counts
from drkit.pg import cluster_os_user, run_as
from tests.fix_cli import DrkitRunner, PolicyWriter, checks_by_name, drill, junit
from tests.fix_pg import PgServer, assert_scratch_gone, pg_versions
from tests.fix_s3 import RepoTarget

OBJECTIVES = {"rpo": "1h", "rto": "30m"}


def stored_report(repo: RepoTarget, drill_id: str) -> dict[str, Any]:
    assert repo.root is not None
    return dict(json.loads((repo.root / "prod" / "drills" / drill_id / "report.json").read_text()))


def password_of(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url).get("password") or "")


@pg_versions()
def test_logical_drill_passes_and_reports(
    sample_db: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    scratch_root: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    pg_major: int | None,
) -> None:
    name, url = sample_db
    # the pgserver wheel (PostgreSQL 16) ships no contrib: no amcheck there
    amcheck = pg_major != 16
    policy_dir = make_policy(
        "prod",
        url,
        repo_target,
        objectives=OBJECTIVES,
        drill={
            "checks": {
                "amcheck": amcheck,
                "sql": [{"name": "vulns", "query": "SELECT count(*) > 0 FROM vulnerability"}],
            }
        },
    )
    source = table_counts(pg_server.dsn(name))
    backup = run_cli("backup", "prod", "--json", policy_dir=policy_dir, check=True).json()

    report_dir = tmp_path / "drill-report"
    done = drill(run_cli, policy_dir, scratch_root, "--report-dir", str(report_dir), "--json")
    assert done.code == 0, done.stderr
    doc = done.json()
    assert doc["verdict"] == "PASS" and doc["environment"] == "prod"
    assert doc["backup"]["id"] == backup["id"] and doc["backup"]["kind"] == "logical"
    checks = checks_by_name(doc)
    assert {c["status"] for c in doc["checks"]} == {"PASS"}
    # one row-count check per table, each with the manifest's number and the observed one
    for table, rows in source.items():
        check = checks[f"rows {name}:{table}"]
        assert check["expected"] == rows and check["observed"] == rows
    assert checks["sql: vulns"]["observed"] is True
    if amcheck:
        assert checks[f"amcheck {name}"]["status"] == "PASS"
    else:
        assert f"amcheck {name}" not in checks
    assert checks[f"restore {name}"]["status"] == "PASS"
    assert checks["objective RTO"]["status"] == "PASS"
    assert checks["objective RPO"]["status"] == "PASS"
    phases = doc["rto"]["phases"]
    assert set(phases) == {"startup", "fetch", "restore", "validation"}
    assert all(v >= 0 for v in phases.values()) and phases["startup"] > 0
    # startup overlaps the fetch: the total is wall time, at least the sequential part,
    # at most the sum of the phases plus the moments between them
    sequential = phases["fetch"] + phases["restore"] + phases["validation"]
    assert sequential <= doc["rto"]["total"] <= sum(phases.values()) + 0.5
    assert doc["rto"]["objective"] == 1800 and doc["rto"]["met"] is True
    assert 0 <= doc["rpo"]["achieved"] < 600 and doc["rpo"]["met"] is True
    assert doc["recovery_point"]["reached"] == backup["consistent_at"].replace("+00:00", "Z")
    assert doc["versions"]["postgresql_scratch"] and doc["versions"]["drkit"]
    assert doc["cleanup"]["scratch_cluster"] == "removed" and doc["cleanup"]["seconds"] >= 0
    assert_scratch_gone(scratch_root)

    # report.json in the repository, and the trio in --report-dir
    if repo_target.kind == "file":
        assert stored_report(repo_target, doc["id"])["verdict"] == "PASS"
    else:
        s3 = request.getfixturevalue("s3_server")
        assert f"drkit/prod/drills/{doc['id']}/report.json" in s3.objects(repo_target.bucket)
    assert json.loads((report_dir / "report.json").read_text())["id"] == doc["id"]
    markdown = (report_dir / "report.md").read_text()
    assert "**PASS**" in markdown and "█" in markdown and "RTO trend" in markdown
    suite = junit(report_dir / "junit.xml")
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert len(suite.findall("testcase")) == len(doc["checks"])

    # a second drill shows the first in its RTO trend; status reads the last drill
    again = drill(run_cli, policy_dir, scratch_root, "--report-dir", str(report_dir))
    assert again.code == 0, again.stderr
    assert "verdict: PASS" in again.stdout
    assert doc["id"] in (report_dir / "report.md").read_text()
    status = run_cli("status", "prod", "--json", policy_dir=policy_dir)
    assert status.code == 0, status.stderr
    assert status.json()["last_drill"]["verdict"] == "PASS"
    assert_scratch_gone(scratch_root)

    secret = password_of(url)
    if secret:
        for text in (done.stdout, done.stderr, again.stdout, again.stderr, markdown):
            assert secret not in text


def test_rto_objective_breached_fails_with_exit_3(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
    tmp_path: Path,
) -> None:
    _name, url = sample_db
    sql_checks = [
        # pg_sleep makes the breach certain however fast the machine restores: validation
        # is part of the RTO, so the drill always takes longer than the 1s objective
        {"name": "true", "query": "SELECT count(*) > 0 FROM vulnerability, pg_sleep(1.2)"},
        {"name": "false", "query": "SELECT count(*) = 0 FROM vulnerability"},
        {"name": "broken", "query": "SELECT no_such_column FROM vulnerability"},
    ]
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        objectives={"rpo": "1h", "rto": "1s"},
        drill={"checks": {"sql": sql_checks}},
    )
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    report_dir = tmp_path / "out"
    done = drill(run_cli, policy_dir, scratch_root, "--report-dir", str(report_dir), "--json")
    assert done.code == 3, done.stderr
    doc = done.json()
    checks = checks_by_name(doc)
    assert doc["verdict"] == "FAIL"
    rto = checks["objective RTO"]
    assert rto["status"] == "FAIL" and rto["expected"] == "<= 1s"
    assert doc["rto"]["met"] is False and doc["rto"]["total"] > 1
    assert checks["objective RPO"]["status"] == "PASS"
    assert checks["sql: true"]["status"] == "PASS"
    assert checks["sql: false"]["status"] == "FAIL" and checks["sql: false"]["observed"] is False
    assert checks["sql: broken"]["status"] == "ERROR"
    assert "no_such_column" in checks["sql: broken"]["detail"]
    assert "objective RTO" in done.stderr and "Traceback" not in done.stderr
    assert stored_report(file_repo, doc["id"])["verdict"] == "FAIL"
    suite = junit(report_dir / "junit.xml")
    assert suite.get("failures") == "2" and suite.get("errors") == "1"
    assert_scratch_gone(scratch_root)
    # status: the last drill's RTO breaches the objective
    status = run_cli("status", "prod", policy_dir=policy_dir)
    assert status.code == 3
    assert "RTO" in status.stderr and "ATTENTION" in status.stdout


def test_corrupt_object_fails_the_drill_not_drkit(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    backup_id = run_cli("backup", "prod", "--json", policy_dir=policy_dir, check=True).json()["id"]
    assert file_repo.root is not None
    dump = file_repo.root / "prod" / "backups" / backup_id / f"{name}.dump.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))

    done = drill(run_cli, policy_dir, scratch_root, "--json")
    assert done.code == 3, done.stderr
    doc = done.json()
    checks = checks_by_name(doc)
    assert doc["verdict"] == "FAIL" and doc["error"] is None
    restore = checks[f"restore {name}"]
    assert restore["status"] == "FAIL" and "sha256" in restore["detail"]
    assert checks[f"rows {name}"]["status"] == "NOT_RUN"
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert stored_report(file_repo, doc["id"])["verdict"] == "FAIL"
    assert_scratch_gone(scratch_root)


def test_tampered_manifest_count_fails_that_table(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    backup_id = run_cli("backup", "prod", "--json", policy_dir=policy_dir, check=True).json()["id"]
    assert file_repo.root is not None
    manifest_path = file_repo.root / "prod" / "backups" / backup_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    real = manifest["row_counts"][name]["public.agent"]
    manifest["row_counts"][name]["public.agent"] = real + 1
    manifest_path.write_text(json.dumps(manifest))

    done = drill(run_cli, policy_dir, scratch_root, "--json")
    assert done.code == 3, done.stderr
    doc = done.json()
    failed = [c for c in doc["checks"] if c["status"] != "PASS"]
    assert [c["name"] for c in failed] == [f"rows {name}:public.agent"]
    assert failed[0]["expected"] == real + 1 and failed[0]["observed"] == real
    assert f"rows {name}:public.agent" in done.stderr
    assert_scratch_gone(scratch_root)


def test_interrupted_drill_tears_the_scratch_cluster_down(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    _name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    # SIGINT while initdb runs (in the start-up thread), SIGTERM once the server is up
    for sig, sign in ((signal.SIGINT, "*/pg/data"), (signal.SIGTERM, "*/pg/data/postmaster.pid")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), "drill", "prod"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DRKIT_TMPDIR": str(scratch_root)},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the scratch server runs
            if list(scratch_root.glob(sign)):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the scratch cluster never started")
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert_scratch_gone(scratch_root)
    assert not (file_repo.root / "prod" / "drills").exists()  # type: ignore[operator]


def test_keep_leaves_the_scratch_cluster_running(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    done = drill(run_cli, policy_dir, scratch_root, "--keep")
    assert done.code == 0, done.stderr
    assert "connect with" in done.stdout and "psql -h" in done.stdout
    doc = run_cli("status", "prod", "--json", policy_dir=policy_dir).json()
    assert doc["last_drill"]["verdict"] == "PASS"
    report = stored_report(file_repo, doc["last_drill"]["id"])
    kept = report["cleanup"]
    assert kept["scratch_cluster"] == "kept"
    try:
        with psycopg.connect(
            host=kept["socket_dir"], port=kept["port"], user="postgres", dbname=name
        ) as conn:
            row = conn.execute("SELECT count(*) FROM agent").fetchone()
            assert row is not None and row[0] > 0
            # durable like a real restore target, never archiving
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync', 'full_page_writes', 'archive_mode', 'listen_addresses')"
                ).fetchall()
            )
            assert settings == {
                "fsync": "on",
                "full_page_writes": "on",
                "archive_mode": "off",
                "listen_addresses": "127.0.0.1",
            }
        assert not list(scratch_root.glob("*/fetch"))  # the fetched dump never stays
    finally:
        pg_ctl = kept["stop"].split(" -D ")[0].split()[-1]
        run_as([pg_ctl, "-D", kept["data_dir"], "-m", "immediate", "stop"], cluster_os_user())
        shutil.rmtree(next(scratch_root.iterdir()), ignore_errors=True)
    assert_scratch_gone(scratch_root)


def test_drill_without_a_backup_cannot_run(
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    pg_server: PgServer,
    scratch_root: Path,
) -> None:
    policy_dir = make_policy("prod", pg_server.url("postgres"), file_repo, objectives=OBJECTIVES)
    done = drill(run_cli, policy_dir, scratch_root)
    assert done.code == 1
    assert "no backups" in done.stderr and "drkit backup prod" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    naive = drill(run_cli, policy_dir, scratch_root, "--point-in-time", "2026-11-27 10:00:00")
    assert naive.code == 2 and "time zone" in naive.stderr
    assert_scratch_gone(scratch_root)


def test_drill_that_cannot_start_a_scratch_cluster_is_an_error(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    _name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    broken = Path(tempfile.mkdtemp(prefix="drkit-test-pgbin-"))  # the postgres user runs it
    broken.chmod(0o755)
    initdb = broken / "initdb"
    initdb.write_text("#!/bin/sh\necho 'initdb: error: disk full' >&2\nexit 1\n")
    initdb.chmod(0o755)
    try:
        done = run_cli(
            "drill",
            "prod",
            "--json",
            policy_dir=policy_dir,
            env={"DRKIT_TMPDIR": str(scratch_root), "DRKIT_PG_BIN": str(broken)},
        )
    finally:
        shutil.rmtree(broken)
    assert done.code == 1, done.stderr
    doc = done.json()
    assert doc["verdict"] == "ERROR" and "disk full" in doc["error"]
    assert "could not run" in done.stderr and "Traceback" not in done.stderr
    assert stored_report(file_repo, doc["id"])["verdict"] == "ERROR"
    assert_scratch_gone(scratch_root)


def test_scheduled_drill_job_and_its_metrics(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon's ``drill`` job runs run_drill; a FAIL verdict is a failed job, and the
    stored report feeds drkit_drill_* (the RTO by phase, the verdict)."""
    from drkit.config import load_policy
    from drkit.errors import DrkitError
    from drkit.schedule import dispatch
    from drkit.schedule.metrics import read_catalog
    from drkit.storage import Repository

    _name, url = sample_db
    # the check's pg_sleep makes the drill outlast the 1s objective on any machine
    slow = {"name": "slow", "query": "SELECT true FROM pg_sleep(1.2)"}
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        objectives={"rpo": "1h", "rto": "1s"},
        drill={"checks": {"sql": [slow]}},
    )
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    monkeypatch.setenv("DRKIT_TMPDIR", str(scratch_root))
    policy = load_policy("prod", policy_dir)
    with pytest.raises(DrkitError, match="drill verdict FAIL"):
        dispatch("drill", policy)
    assert_scratch_gone(scratch_root)
    snapshot = read_catalog(Repository.for_policy(policy), policy)
    assert snapshot.drill is not None and snapshot.drill.passed is False
    assert snapshot.drill.rto["total"] > 1
    assert {"startup", "fetch", "restore", "validation"} <= set(snapshot.drill.rto)
