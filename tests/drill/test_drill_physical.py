"""Physical drills: base backup + WAL replay into the drill's scratch directory.

A real cluster archives through ``drkit wal-push``; rows committed after the base backup
must be there after a drill that replays to the end of the archive, and missing after a
drill with ``--point-in-time`` before them (the policy's SQL check tells which).  Row
counts are compared where the backup took them (recovery pauses at its restore point),
so rows committed later do not fail them — a tampered count does.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from drkit.config import load_policy
from drkit.pg import chown_tree, cluster_os_user
from drkit.storage import Repository
from drkit.wal import find_wal_key
from tests.fix_cli import DrkitRunner, checks_by_name, drill, junit, valid
from tests.fix_pg import assert_scratch_gone, pg_versions
from tests.wal_support import Archived, archived_cluster, file_repo_block, shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def archived(pg_major: int | None) -> Iterator[Archived]:
    with (
        shared_dir() as root,
        archived_cluster(root, file_repo_block(root), major=pg_major) as arch,
    ):
        yield arch


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="drkit-test-pdrill-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pg_versions()
def test_physical_drill_replays_wal_and_honours_a_target(
    archived: Archived, run_drkit: DrkitRunner, scratch_root: Path, pg_major: int | None
) -> None:
    arch = archived
    amcheck = pg_major != 16  # the pgserver wheel (PostgreSQL 16) ships no contrib
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    arch.execute("INSERT INTO marker (label) SELECT 'before' FROM generate_series(1, 100)")
    doc = {
        "environment": "prod",
        "database": {"url": arch.dsn("postgres")},
        "repository": arch.repo_block,
        "wal_archiving": True,
        "objectives": {"rpo": "1h", "rto": "30m"},
        "drill": {
            "checks": {
                "row_counts": True,
                "amcheck": amcheck,
                "sql": [{"name": "after", "query": "SELECT count(*) = 150 FROM marker"}],
            }
        },
    }
    (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    chown_tree(arch.policy_dir, cluster_os_user())
    backup = run_drkit("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr

    time.sleep(1.1)
    between = datetime.now(UTC)
    time.sleep(1.1)
    arch.execute("INSERT INTO marker (label) SELECT 'after' FROM generate_series(1, 50)")
    repo = Repository.for_policy(load_policy("prod", arch.policy_dir))
    arch.switch_and_wait(lambda name: find_wal_key(repo, name) is not None)

    done = drill(run_drkit, arch.policy_dir, scratch_root, "--json", timeout=600)
    assert done.code == 0, done.stdout + done.stderr
    report = done.json()
    checks = checks_by_name(report)
    assert report["verdict"] == "PASS" and report["backup"]["kind"] == "physical"
    assert checks["sql: after"]["status"] == "PASS"  # the 50 rows came from WAL replay
    assert checks["restore base backup + WAL"]["status"] == "PASS"
    assert (
        checks["amcheck postgres"]["status"] == "PASS"
        if amcheck
        else "amcheck postgres" not in checks
    )
    # counted where the backup counted them: 100, although replay went on to 150
    marker = checks["rows postgres:public.marker"]
    assert (marker["status"], marker["expected"], marker["observed"]) == ("PASS", 100, 100)
    phases = report["rto"]["phases"]
    assert set(phases) == {"unpack", "connections", "wal_replay", "validation"}
    assert phases["unpack"] > 0 and phases["connections"] > 0
    assert report["recovery_point"]["reached"] > report["backup"]["consistent_at"]
    assert "replayed commit" in report["rpo"]["basis"]
    assert_scratch_gone(scratch_root)
    # validated with the policy's credentials, which never reach the output or the report
    stored = Repository.for_policy(load_policy("prod", arch.policy_dir)).get_json(
        f"drills/{report['id']}/report.json"
    )
    assert stored["verdict"] == "PASS"
    for text in (done.stdout, done.stderr, str(stored)):
        assert arch.cluster.password not in text

    target = between.isoformat().replace("+00:00", "Z")
    past = drill(
        run_drkit, arch.policy_dir, scratch_root, "--point-in-time", target, "--json", timeout=600
    )
    assert past.code == 3, past.stdout + past.stderr
    report = past.json()
    checks = checks_by_name(report)
    assert report["recovery_point"]["target"] == target
    assert checks["restore base backup + WAL"]["status"] == "PASS"
    assert checks["sql: after"]["status"] == "FAIL"  # recovered to before the 50 rows
    assert checks["sql: after"]["observed"] is False
    assert checks["rows postgres"]["status"] == "NOT_RUN"  # the target is not the count point
    assert {c["name"] for c in report["checks"] if c["status"] != "PASS"} == {
        "sql: after",
        "rows postgres",
    }
    assert_scratch_gone(scratch_root)

    # an older base backup is drilled as asked (not the newest), its counts compared
    newer = run_drkit("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
    assert newer.code == 0, newer.stderr
    older_id = backup.json()["id"]
    manifest_path = Path(arch.repo_block["url"].removeprefix("file://"))
    manifest_path = manifest_path / "prod" / "backups" / older_id / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    assert doc["row_counts"]["postgres"]["public.marker"] == 100
    doc["row_counts"]["postgres"]["public.marker"] = 101
    manifest_path.write_text(json.dumps(doc))
    tampered = drill(
        run_drkit, arch.policy_dir, scratch_root, "--backup", older_id, "--json", timeout=600
    )
    assert tampered.code == 3, tampered.stdout + tampered.stderr
    report = tampered.json()
    checks = checks_by_name(report)
    assert report["backup"]["id"] == older_id
    marker = checks["rows postgres:public.marker"]
    assert (marker["status"], marker["expected"], marker["observed"]) == ("FAIL", 101, 100)
    assert checks["sql: after"]["status"] == "PASS"  # then replayed to the end
    assert [c["name"] for c in report["checks"] if c["status"] != "PASS"] == [
        "rows postgres:public.marker"
    ]
    assert_scratch_gone(scratch_root)

    # the scratch clusters (promoted onto new timelines) archived nothing into the source
    has = lambda name: find_wal_key(repo, name) is not None  # noqa: E731
    arch.execute("INSERT INTO marker (label) VALUES ('gap-a')")
    lost = arch.switch_and_wait(has)
    arch.execute("INSERT INTO marker (label) VALUES ('gap-b')")
    arch.switch_and_wait(has)
    names = {i.key.rsplit("/", 1)[-1] for i in repo.list("wal/")}
    assert not [n for n in names if not n.startswith("00000001")], names
    assert repo.get_json("timeline.json")["timeline"] == 1

    # a gap below newer segments: the drill fails naming it, never "passes" short of it
    key = find_wal_key(repo, lost)
    assert key is not None
    repo.delete(key)
    gapped = drill(run_drkit, arch.policy_dir, scratch_root, "--json", timeout=600)
    assert gapped.code == 3, gapped.stdout + gapped.stderr
    restore_check = checks_by_name(gapped.json())["restore base backup + WAL"]
    assert restore_check["status"] == "FAIL" and lost in restore_check["detail"]
    assert_scratch_gone(scratch_root)


def app_database(arch: Archived) -> str:
    """The application's own database (a dump of ``postgres`` cannot be restored into a
    fresh cluster, which has one), with an empty marker table."""
    arch.execute("CREATE DATABASE app")
    app = arch.dsn("app")
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)", app)
    return app


def every_kind_policy(arch: Archived, **extra: object) -> None:
    """The shipped prod shape: logical backups nightly and WAL archiving for the RPO."""
    doc = {
        "environment": "prod",
        "database": {"url": arch.dsn("app")},
        "repository": arch.repo_block,
        "schedule": {"logical_backup": "0 2 * * *", "drill": "0 5 * * 1"},
        "wal_archiving": True,
        "objectives": {"rpo": "1h", "rto": "30m"},
        "drill": {
            "checks": {
                "row_counts": False,
                "amcheck": False,
                "sql": [{"name": "after", "query": "SELECT count(*) = 3 FROM marker"}],
            }
        },
        **extra,
    }
    (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    chown_tree(arch.policy_dir, cluster_os_user())


def test_the_scheduled_drill_proves_every_kind_the_policy_takes(
    archived: Archived, run_drkit: DrkitRunner, scratch_root: Path
) -> None:
    """On e8a05ad `drkit drill prod` (what the schedule runs) drilled the newest backup
    only: Monday's logical dump after Sunday's base backup, so point-in-time recovery,
    the path behind the 1 h RPO, was never drilled.  Each kind gets its own verdict, in
    one report; the physical one replays to the end of the window (the marker row and
    the last archived WAL record)."""
    arch = archived
    app = app_database(arch)
    every_kind_policy(arch)
    base = run_drkit("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
    assert base.code == 0, base.stderr
    arch.execute("INSERT INTO marker (label) VALUES ('a'), ('b'), ('c')", app)
    dump = run_drkit("backup", "prod", "--json", policy_dir=arch.policy_dir)
    assert dump.code == 0, dump.stderr  # the newest backup is the logical one
    repo = Repository.for_policy(load_policy("prod", arch.policy_dir))
    arch.switch_and_wait(lambda name: find_wal_key(repo, name) is not None)

    done = drill(run_drkit, arch.policy_dir, scratch_root, "--json", timeout=600)
    report = valid("drill", done)  # the published schema, each kind's report included
    assert report["verdict"] == "PASS" and set(report["kinds"]) == {"logical", "physical"}
    logical, physical = report["kinds"]["logical"], report["kinds"]["physical"]
    assert logical["verdict"] == physical["verdict"] == "PASS"
    assert logical["backup"]["id"] == dump.json()["id"]
    assert physical["backup"]["id"] == base.json()["id"]
    checks = checks_by_name(physical)
    assert checks["sql: after"]["status"] == "PASS"  # the marker rows came from WAL replay
    assert checks["WAL replayed to the end of the archive"]["status"] == "PASS"
    assert physical["recovery_point"]["reached"] > physical["backup"]["consistent_at"]
    # one report: every check of both, each tagged with its kind; stored once
    kinds = {(c["backup_kind"], c["name"]) for c in report["checks"]}
    assert ("logical", "sql: after") in kinds and ("physical", "sql: after") in kinds
    assert report["backup"]["kind"] == "physical"  # the measures of the RPO path
    stored = repo.get_json(f"drills/{report['id']}/report.json")
    assert stored["verdict"] == "PASS" and set(stored["kinds"]) == {"logical", "physical"}
    assert_scratch_gone(scratch_root)


def test_a_kind_the_policy_takes_but_never_backed_up_fails_the_drill(
    archived: Archived, run_drkit: DrkitRunner, scratch_root: Path
) -> None:
    """WAL archiving without a base backup is no recovery path: the drill FAILs that kind
    (exit 3, naming it) rather than passing on the logical backup alone."""
    arch = archived
    app = app_database(arch)
    arch.execute("INSERT INTO marker (label) VALUES ('a'), ('b'), ('c')", app)
    every_kind_policy(arch)
    dump = run_drkit("backup", "prod", "--json", policy_dir=arch.policy_dir)
    assert dump.code == 0, dump.stderr

    done = drill(run_drkit, arch.policy_dir, scratch_root, "--json", timeout=600)
    report = valid("drill", done, 3)
    assert report["verdict"] == "FAIL"
    assert report["kinds"]["logical"]["verdict"] == "PASS"
    missing = report["kinds"]["physical"]
    assert missing["verdict"] == "FAIL"
    assert checks_by_name(missing)["a physical backup to drill"]["observed"] == "none"
    reports = arch.root / "reports"
    plain = drill(run_drkit, arch.policy_dir, scratch_root, "--report-dir", str(reports))
    assert plain.code == 3
    assert "physical: a physical backup to drill" in plain.stderr, plain.stderr
    assert "kinds: logical PASS, physical FAIL" in plain.stdout, plain.stdout
    assert "logical PASS, physical FAIL" in (reports / "report.md").read_text()
    cases = {c.get("name"): c for c in junit(reports / "junit.xml").iter("testcase")}
    assert cases["physical: a physical backup to drill"].find("failure") is not None
    # asked for the newest backup by name, the drill is of that one alone
    one = drill(run_drkit, arch.policy_dir, scratch_root, "--backup", "latest", "--json")
    assert one.code == 0, one.stdout + one.stderr
    assert one.json()["kinds"] is None and one.json()["backup"]["kind"] == "logical"
    assert_scratch_gone(scratch_root)
