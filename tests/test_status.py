"""``drkit status``: objectives against what the repository holds, through the real CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import DrkitRunner, PgServer, PolicyWriter, RepoTarget


def test_status_breaches_when_the_newest_backup_is_older_than_the_rpo(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
) -> None:
    _name, url = sample_db
    # the objective leaves room for a slow start-up on a loaded machine; the stale check
    # below waits until the newest point is older than it, measured from the backup itself
    policy_dir = make_policy("prod", url, file_repo, objectives={"rpo": "10s", "rto": "30m"})
    backup = run_drkit("backup", "prod", "--json", policy_dir=policy_dir, check=True).json()
    finished = time.monotonic()

    fresh = run_drkit("status", "prod", "--json", policy_dir=policy_dir)
    # a fresh backup is within the RPO; no drill yet is worth attention, not a breach
    assert fresh.code == 0, fresh.stderr
    doc = fresh.json()
    assert doc["breached"] == [] and doc["status"] == "ATTENTION"
    assert any("no drill" in a for a in doc["attention"])
    assert doc["backups"]["logical"]["id"] == backup["id"]
    assert doc["rpo_exposure_seconds"] < 10
    assert doc["objectives"] == {"rpo_seconds": 10.0, "rto_seconds": 1800.0}

    time.sleep(max(0.0, 10.5 - (time.monotonic() - finished)))
    stale = run_drkit("status", "prod", "--json", policy_dir=policy_dir)
    assert stale.code == 3
    doc = stale.json()
    assert doc["status"] == "ATTENTION" and doc["rpo_exposure_seconds"] > 10
    assert len(doc["breached"]) == 1 and doc["breached"][0].startswith("RPO")
    assert "objective breached" in stale.stderr and "RPO" in stale.stderr

    screen = run_drkit("status", "prod", policy_dir=policy_dir)
    assert screen.code == 3
    lines = screen.stdout.strip().splitlines()
    assert lines[-1] == "ATTENTION"
    assert any(
        line.strip().startswith("last logical backup") and backup["id"] in line for line in lines
    )
    assert any("RPO exposure" in line and "objective 10s" in line for line in lines)
    assert any(line.strip().startswith("BREACHED: RPO") for line in lines)


def test_status_with_nothing_restorable_breaches_the_rpo(
    file_repo: RepoTarget, make_policy: PolicyWriter, run_drkit: DrkitRunner, pg_server: PgServer
) -> None:
    policy_dir = make_policy(
        "prod", pg_server.url("postgres"), file_repo, objectives={"rpo": "1h"}, wal_archiving=True
    )
    done = run_drkit("status", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 3
    doc = done.json()
    assert doc["breached"] == ["RPO: nothing is restorable (objective 1h)"]
    assert doc["rpo_exposure_seconds"] is None and doc["backups"] == {}
    assert any("WAL archiving is on" in a for a in doc["attention"])
    # without objectives nothing can be breached: ATTENTION, exit 0
    policy_dir = make_policy("dev", pg_server.url("postgres"), file_repo)
    done = run_drkit("status", "dev", "--json", policy_dir=policy_dir)
    assert done.code == 0, done.stderr
    assert done.json()["attention"][0] == "no backup in the repository"


def test_a_zero_objective_is_an_objective_not_a_missing_one(
    file_repo: RepoTarget, make_policy: PolicyWriter, run_drkit: DrkitRunner, pg_server: PgServer
) -> None:
    """``0s`` is falsy as a timedelta; status must still hold the repository to it."""
    policy_dir = make_policy(
        "prod", pg_server.url("postgres"), file_repo, objectives={"rpo": "0s", "rto": "0s"}
    )
    done = run_drkit("status", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 3, done.stderr
    doc = done.json()
    assert doc["objectives"] == {"rpo_seconds": 0.0, "rto_seconds": 0.0}
    assert doc["breached"] == ["RPO: nothing is restorable (objective 0s)"]


def test_status_reads_wal_and_the_last_drill_report(
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    """A WAL file newer than a base backup extends the window; a FAIL drill needs attention."""
    from datetime import UTC, datetime, timedelta

    policy_dir = make_policy(
        "prod",
        pg_server.url("postgres"),
        file_repo,
        objectives={"rpo": "1h", "rto": "30m"},
        wal_archiving=True,
    )
    assert file_repo.root is not None
    env_root = file_repo.root / "prod"
    base = datetime.now(UTC) - timedelta(hours=5)
    stamp = base.strftime("%Y%m%dT%H%M%SZ")
    manifest = {
        "id": f"{stamp}-physical",
        "kind": "physical",
        "environment": "prod",
        "databases": ["postgres"],
        "server_version": "15.4",
        "started_at": base.isoformat(),
        "finished_at": (base + timedelta(minutes=1)).isoformat(),
        "consistent_at": (base + timedelta(minutes=1)).isoformat(),
        "objects": [],
    }
    (env_root / "backups" / manifest["id"]).mkdir(parents=True)
    (env_root / "backups" / manifest["id"] / "manifest.json").write_text(json.dumps(manifest))
    (env_root / "wal").mkdir()
    (env_root / "wal" / "000000010000000000000003.zst").write_bytes(b"x")  # archived just now
    drill_id = f"{stamp}-logical-abcd"
    (env_root / "drills" / drill_id).mkdir(parents=True)
    report = {
        "id": drill_id,
        "verdict": "FAIL",
        "finished_at": (base + timedelta(minutes=5)).isoformat(),
        "rto": {"total": 42.0, "phases": {"fetch": 2.0}},
        "rpo": {"achieved": 60.0},
        "backup": {"id": manifest["id"]},
    }
    (env_root / "drills" / drill_id / "report.json").write_text(json.dumps(report))

    done = run_drkit("status", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 0, done.stderr  # WAL keeps the exposure under the hour
    doc = done.json()
    assert doc["wal"]["last_file"] == "000000010000000000000003.zst"
    assert doc["rpo_exposure_seconds"] < 60
    continuous_from = datetime.fromisoformat(
        doc["recoverable_window"]["continuous_from"].replace("Z", "+00:00")
    )
    assert base <= continuous_from <= base + timedelta(minutes=1)
    assert doc["last_drill"]["verdict"] == "FAIL" and doc["last_drill"]["rto_seconds"] == 42.0
    assert doc["attention"] == ["the last drill's verdict is FAIL"] and doc["breached"] == []
