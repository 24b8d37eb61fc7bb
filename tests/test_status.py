"""``drkit status``: objectives against what the repository holds, through the real CLI."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from drkit.storage import Repository
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget


def test_status_breaches_when_the_newest_backup_is_older_than_the_rpo(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    _name, url = sample_db
    # the objective leaves room for a slow start-up on a loaded machine; the stale check
    # below waits until the newest point is older than it, measured from the backup itself
    policy_dir = make_policy("prod", url, file_repo, objectives={"rpo": "10s", "rto": "30m"})
    backup = run_cli("backup", "prod", "--json", policy_dir=policy_dir, check=True).json()
    finished = time.monotonic()

    fresh = run_cli("status", "prod", "--json", policy_dir=policy_dir)
    # a fresh backup is within the RPO; no drill yet is worth attention, not a breach
    assert fresh.code == 0, fresh.stderr
    doc = fresh.json()
    assert doc["breached"] == [] and doc["status"] == "ATTENTION"
    assert any("no drill" in a for a in doc["attention"])
    assert doc["backups"]["logical"]["id"] == backup["id"]
    assert doc["rpo_exposure_seconds"] < 10
    assert doc["objectives"] == {"rpo_seconds": 10.0, "rto_seconds": 1800.0}

    time.sleep(max(0.0, 10.5 - (time.monotonic() - finished)))
    stale = run_cli("status", "prod", "--json", policy_dir=policy_dir)
    assert stale.code == 3
    doc = stale.json()
    assert doc["status"] == "ATTENTION" and doc["rpo_exposure_seconds"] > 10
    assert len(doc["breached"]) == 1 and doc["breached"][0].startswith("RPO")
    assert "objective breached" in stale.stderr and "RPO" in stale.stderr

    screen = run_cli("status", "prod", policy_dir=policy_dir)
    assert screen.code == 3
    lines = screen.stdout.strip().splitlines()
    assert lines[-1] == "ATTENTION"
    assert any(
        line.strip().startswith("last logical backup") and backup["id"] in line for line in lines
    )
    assert any("RPO exposure" in line and "objective 10s" in line for line in lines)
    assert any(line.strip().startswith("BREACHED: RPO") for line in lines)


def test_status_with_nothing_restorable_breaches_the_rpo(
    file_repo: RepoTarget, make_policy: PolicyWriter, run_cli: DrkitRunner, pg_server: PgServer
) -> None:
    policy_dir = make_policy(
        "prod", pg_server.url("postgres"), file_repo, objectives={"rpo": "1h"}, wal_archiving=True
    )
    done = run_cli("status", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 3
    doc = done.json()
    assert doc["breached"] == ["RPO: nothing is restorable (objective 1h)"]
    assert doc["rpo_exposure_seconds"] is None and doc["backups"] == {}
    assert any("WAL archiving is on" in a for a in doc["attention"])
    # without objectives nothing can be breached: ATTENTION, exit 0
    policy_dir = make_policy("dev", pg_server.url("postgres"), file_repo)
    done = run_cli("status", "dev", "--json", policy_dir=policy_dir)
    assert done.code == 0, done.stderr
    assert done.json()["attention"][0] == "no backup in the repository"


def test_a_zero_objective_is_an_objective_not_a_missing_one(
    file_repo: RepoTarget, make_policy: PolicyWriter, run_cli: DrkitRunner, pg_server: PgServer
) -> None:
    """``0s`` is falsy as a timedelta; status must still hold the repository to it."""
    policy_dir = make_policy(
        "prod", pg_server.url("postgres"), file_repo, objectives={"rpo": "0s", "rto": "0s"}
    )
    done = run_cli("status", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 3, done.stderr
    doc = done.json()
    assert doc["objectives"] == {"rpo_seconds": 0.0, "rto_seconds": 0.0}
    assert doc["breached"] == ["RPO: nothing is restorable (objective 0s)"]


def test_status_reads_wal_and_the_last_drill_report(
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    pg_server: PgServer,
    tmp_path: Path,
) -> None:
    """WAL following a base backup without a gap extends the window; a FAIL drill needs
    attention."""
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
        "wal_start": "0/2000028",
        "wal_stop": "0/2000138",
        "wal_start_segment": "000000010000000000000002",
        "wal_stop_segment": "000000010000000000000002",
        "timeline": 1,
    }
    (env_root / "backups" / manifest["id"]).mkdir(parents=True)
    (env_root / "backups" / manifest["id"] / "manifest.json").write_text(json.dumps(manifest))
    (env_root / "wal").mkdir()
    (env_root / "wal" / "000000010000000000000002.zst").write_bytes(b"x")  # the backup's own
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

    done = run_cli("status", "prod", "--json", policy_dir=policy_dir)
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


def test_status_and_metrics_count_the_rpo_from_before_a_wal_gap(run_cli: DrkitRunner) -> None:
    """A middle segment missing: ``restore latest`` stops before it, so the RPO exposure
    counts from the last segment before the gap (status and /metrics alike), and the gap
    is reported.  A segment of another cluster at the archive's end counts for nothing."""
    from drkit.catalog import iso
    from drkit.config import load_policy
    from drkit.schedule.metrics import MetricsView, build_metrics, read_catalog
    from drkit.wal import (
        Segment,
        find_wal_key,
        load_wal_policy,
        open_wal_object,
        parse_segment,
        system_identifier,
    )
    from tests.wal_support import archived_cluster, file_repo_block, shared_dir

    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        policy = load_wal_policy(arch.env, arch.policy_dir)
        repo = Repository.for_policy(policy)

        def stored(name: str) -> bool:
            return find_wal_key(repo, name) is not None

        arch.execute("CREATE TABLE marker (id int)")
        backup = run_cli("backup", arch.env, "--physical", policy_dir=arch.policy_dir)
        assert backup.code == 0, backup.stderr
        segments = []
        for i in range(3):
            arch.execute(f"INSERT INTO marker VALUES ({i})")
            segments.append(arch.switch_and_wait(stored))
        first, gap, last = segments
        assert parse_segment(gap).segno == parse_segment(first).segno + 1
        gap_key = find_wal_key(repo, gap)
        assert gap_key is not None
        saved = repo.backend.get_bytes(gap_key)
        repo.backend.delete(gap_key)
        by_name = {i.key.rsplit("/", 1)[-1].split(".")[0]: i for i in repo.list("wal/")}

        doc = run_cli("status", arch.env, "--json", policy_dir=arch.policy_dir).json()
        assert doc["recoverable_window"]["newest"] == iso(by_name[first].modified)
        now = datetime.fromisoformat(doc["now"].replace("Z", "+00:00"))
        exposure = (now - by_name[first].modified).total_seconds()
        assert abs(doc["rpo_exposure_seconds"] - exposure) < 0.001
        wal = doc["wal"]
        assert wal["last_file"].startswith(last)  # the newest object is still shown ...
        assert wal["reachable_segment"] == first  # ... but latest reaches only this far
        assert wal["reachable_at"] == iso(by_name[first].modified)
        assert wal["gap"]["first_missing"] == gap and wal["gap"]["segments_beyond"] >= 1
        assert any(gap in a for a in doc["attention"])
        screen = run_cli("status", arch.env, policy_dir=arch.policy_dir).stdout
        assert f"restore latest reaches {first}" in screen
        assert f"attention: WAL gap on timeline 1: segment {gap} is missing" in screen

        # /metrics: the same computation, the same point
        policy = load_policy(arch.env, arch.policy_dir)
        catalog = read_catalog(repo, policy, now)
        view = MetricsView([policy], [], {arch.env: catalog}, {}, now)
        samples = {
            (s.name, s.labels.get("env")): s.value
            for family in build_metrics(view)
            for s in family.samples
        }
        assert abs(samples[("drkit_rpo_exposure_seconds", arch.env)] - exposure) < 0.001
        assert samples[("drkit_wal_segments_beyond_gap", arch.env)] >= 1

        # the gap mended, and a segment claiming to follow the last one but written by
        # another cluster (its first page names another system identifier)
        repo.backend.put_bytes(gap_key, saved)
        sysid = system_identifier(arch.cluster.data_dir)
        assert sysid is not None
        last_key = find_wal_key(repo, last)
        assert last_key is not None
        with open_wal_object(repo, last_key) as stream:
            forged = bytearray(stream.read())
        forged[24:32] = (sysid + 1).to_bytes(8, sys.byteorder)
        after = parse_segment(last)
        name = Segment(after.segno + 1, after.timeline).name()
        import io

        repo.store(f"wal/{name}", io.BytesIO(bytes(forged)), exclusive=True)
        by_name = {i.key.rsplit("/", 1)[-1].split(".")[0]: i for i in repo.list("wal/")}
        doc = run_cli("status", arch.env, "--json", policy_dir=arch.policy_dir).json()
        wal = doc["wal"]
        assert wal["gap"] is None
        assert wal["foreign_segments"] == [name]
        assert wal["reachable_segment"] == last
        assert doc["recoverable_window"]["newest"] == iso(by_name[last].modified)
        assert any(name in a and "another cluster" in a for a in doc["attention"])
        catalog = read_catalog(repo, policy, now)
        view = MetricsView([policy], [], {arch.env: catalog}, {}, now)
        samples = {
            (s.name, s.labels.get("env")): s.value
            for family in build_metrics(view)
            for s in family.samples
        }
        assert samples[("drkit_wal_foreign_segments", arch.env)] == 1
        assert samples[("drkit_wal_segments_beyond_gap", arch.env)] == 0
