"""Incremental base backups on PostgreSQL 18: full -> changes -> incremental -> changes + WAL.

One chain is built per module (a real cluster with ``summarize_wal = on`` archiving
through ``drkit wal-push``), then: point-in-time recovery after the incremental gives the
exact rows (combined by pg_combinebackup, WAL replayed on top), a physical drill of the
incremental passes, ``prune --dry-run`` keeps the parent of a kept incremental, and
``verify`` catches a missing or damaged parent.  On 15, ``--incremental`` exits 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.config import load_policy
from drkit.pg import chown_tree, cluster_os_user
from drkit.storage import Repository
from drkit.wal import find_wal_key
from tests.builders import encryption
from tests.fix_cli import DrkitRunner, KeyMaker, PolicyWriter, Result, checks_by_name, drill, valid
from tests.fix_pg import require_major
from tests.fix_s3 import RepoTarget
from tests.wal_support import Archived, file_repo_block, shared_dir, start_archived_cluster

pytestmark = pytest.mark.slow

WIDE = {"COLUMNS": "300"}  # rich folds narrow tables
COUNT_SQL = "SELECT count(*), coalesce(sum(g), 0), count(*) FILTER (WHERE label = 'x') FROM t"


def write_policy(arch: Archived, repo_block: dict[str, Any], policy_dir: Path) -> None:
    policy_dir.mkdir(exist_ok=True)
    doc = {
        "environment": "prod",
        "database": {"url": arch.dsn("postgres")},
        "repository": repo_block,
        "wal_archiving": True,
        "objectives": {"rpo": "1h", "rto": "30m"},
        "retention": {"daily": 1},
        "drill": {"checks": {"row_counts": True, "amcheck": True}},
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    chown_tree(policy_dir, cluster_os_user())


def cli(*args: str, policy_dir: Path, timeout: float = 600) -> Result:
    """``drkit ARGS`` as a subprocess (the module fixture cannot use ``run_cli``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Chain:
    arch: Archived
    full: str
    incremental: str
    target: str  # a point after the incremental
    at_target: tuple[Any, ...]  # the rows then
    latest: tuple[Any, ...]  # the rows at the end of the archive


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    run = cli
    require_major(18)
    with shared_dir() as root:
        arch = start_archived_cluster(root, file_repo_block(root), major=18)
        try:
            write_policy(arch, arch.repo_block, arch.policy_dir)
            arch.execute("ALTER SYSTEM SET summarize_wal = on")
            arch.execute("SELECT pg_reload_conf()")
            arch.execute("CREATE TABLE t (id serial PRIMARY KEY, g int NOT NULL, label text)")
            arch.execute("INSERT INTO t (g) SELECT g FROM generate_series(1, 20000) g")
            full = run("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
            full_doc = valid("backup", full)
            assert full_doc.get("parent") is None
            # about 5 % of the rows change, then the incremental
            arch.execute("UPDATE t SET g = -g WHERE id % 20 = 0")
            arch.execute("INSERT INTO t (g, label) SELECT g, 'x' FROM generate_series(1, 100) g")
            incr = run(
                "backup", "prod", "--physical", "--incremental", "--json",
                policy_dir=arch.policy_dir,
            )  # fmt: skip
            incr_doc = valid("backup", incr)
            assert incr_doc["incremental"] is True and incr_doc["parent"] == full_doc["id"]
            arch.execute("INSERT INTO t (g, label) SELECT g, 'x' FROM generate_series(1, 50) g")
            arch.execute("DELETE FROM t WHERE id % 97 = 0")
            at_target = arch.execute(COUNT_SQL)[0]
            time.sleep(1.1)
            target = str(arch.execute("SELECT clock_timestamp()")[0][0].isoformat())
            time.sleep(1.1)
            arch.execute("INSERT INTO t (g, label) SELECT g, 'late' FROM generate_series(1, 70) g")
            latest = arch.execute(COUNT_SQL)[0]
            repo = Repository.for_policy(load_policy("prod", arch.policy_dir))
            arch.switch_and_wait(lambda name: find_wal_key(repo, name) is not None)
            yield Chain(arch, full_doc["id"], incr_doc["id"], target, at_target, latest)
        finally:
            arch.stop_restored()
            arch.cluster.destroy()


def manifest_doc(arch: Archived, backup_id: str) -> dict[str, Any]:
    repo = Repository.for_policy(load_policy("prod", arch.policy_dir))
    return repo.get_json(f"backups/{backup_id}/manifest.json")


def test_the_incremental_records_its_parent_and_both_store_postgresqls_manifest(
    chain: Chain,
) -> None:
    full = manifest_doc(chain.arch, chain.full)
    incr = manifest_doc(chain.arch, chain.incremental)
    assert full["incremental"] is False and "parent" not in full
    assert incr["incremental"] is True and incr["parent"] == chain.full
    assert incr["kind"] == "physical"
    assert incr["system_identifier"] == full["system_identifier"]
    for doc in (full, incr):
        names = {o["key"].rsplit("/", 1)[-1].split(".")[0] for o in doc["objects"]}
        assert names == {"base", "backup_manifest"}, doc["objects"]
    # the incremental holds changed blocks only
    full_base = next(o for o in full["objects"] if "base.tar" in o["key"])
    incr_base = next(o for o in incr["objects"] if "base.tar" in o["key"])
    assert incr_base["raw_size"] < full_base["raw_size"]


def test_pitr_after_the_incremental_gives_the_exact_rows(
    chain: Chain, run_cli: DrkitRunner
) -> None:
    arch = chain.arch
    pgdata = arch.new_pgdata()
    done = run_cli(
        "restore", "prod", "--point-in-time", chain.target, "--pgdata", str(pgdata),
        "--target-action", "promote", "--json", policy_dir=arch.policy_dir, timeout=600,
    )  # fmt: skip
    result = valid("restore-point-in-time", done)
    assert result["backup_id"] == chain.incremental
    assert result["chain"] == [chain.full, chain.incremental]
    port = int(result["port"])
    dsn = arch.dsn().replace(f":{arch.cluster.port}/", f":{port}/")
    assert tuple(arch.execute(COUNT_SQL, dsn)[0]) == tuple(chain.at_target)
    assert arch.execute("SELECT count(*) FROM t WHERE label = 'late'", dsn)[0][0] == 0
    arch.stop_restored()


def test_a_physical_drill_of_the_chain_passes(chain: Chain, run_cli: DrkitRunner) -> None:
    scratch = chain.arch.root / "drill"
    scratch.mkdir()
    scratch.chmod(0o755)
    done = drill(
        run_cli, chain.arch.policy_dir, scratch, "--backup", chain.incremental, "--json",
        timeout=900,
    )  # fmt: skip
    assert done.code == 0, done.stdout + done.stderr
    report = done.json()
    assert report["verdict"] == "PASS" and report["backup"]["id"] == chain.incremental
    assert report["backup"]["chain"] == [chain.full, chain.incremental]
    checks = checks_by_name(report)
    rows = checks["rows postgres:public.t"]
    assert rows["status"] == "PASS" and rows["expected"] == rows["observed"]
    assert checks["amcheck postgres"]["status"] == "PASS"


def test_prune_keeps_the_parent_of_a_kept_incremental(chain: Chain, run_cli: DrkitRunner) -> None:
    dry = run_cli("prune", "prod", "--dry-run", "--json", policy_dir=chain.arch.policy_dir)
    decisions = {b["id"]: b for b in valid("prune", dry)["backups"]}
    assert decisions[chain.incremental]["action"] == "KEEP"
    assert decisions[chain.full]["action"] == "KEEP"
    assert f"parent of {chain.incremental}" in decisions[chain.full]["reasons"]
    rows = valid("backups", run_cli("backups", "prod", "--json", policy_dir=chain.arch.policy_dir))
    by_id = {row["id"]: row for row in rows["backups"]}
    assert by_id[chain.incremental]["parent"] == chain.full
    assert by_id[chain.full]["incremental"] is False
    assert f"parent of {chain.incremental}" in by_id[chain.full]["tiers"]
    listed = run_cli("backups", "prod", policy_dir=chain.arch.policy_dir, env=WIDE)
    assert listed.code == 0, listed.stderr
    assert f"incremental on {chain.full}" in listed.stdout
    text = run_cli("prune", "prod", "--dry-run", policy_dir=chain.arch.policy_dir)
    line = next(ln for ln in text.stdout.splitlines() if chain.full in ln)
    assert line.startswith("KEEP") and f"parent of {chain.incremental}" in line


def copy_repo(chain: Chain, name: str) -> tuple[Path, Path]:
    """A copy of the repository and a policy for it, to damage freely."""
    source = Path(chain.arch.repo_block["url"].removeprefix("file://"))
    target = chain.arch.root / name
    shutil.copytree(source, target / "repo")
    policy_dir = target / "policies"
    write_policy(chain.arch, {"url": f"file://{target / 'repo'}"}, policy_dir)
    return target / "repo" / "prod", policy_dir


def test_verify_checks_the_whole_chain_and_the_combined_backup(
    chain: Chain, run_cli: DrkitRunner
) -> None:
    good = run_cli(
        "verify", "prod", chain.incremental, "--json", policy_dir=chain.arch.policy_dir,
        timeout=600,
    )  # fmt: skip
    verdict = valid("verify", good)["backups"][0]
    assert verdict["chain"] == [chain.full, chain.incremental]
    assert verdict["pg_verifybackup"] == "combined chain verified"

    # a damaged object of the parent: the incremental fails verification
    env_dir, policy_dir = copy_repo(chain, "damaged")
    base = next((env_dir / "backups" / chain.full).glob("base.tar*"))
    data = bytearray(base.read_bytes())
    data[len(data) // 2] ^= 0xFF
    base.write_bytes(bytes(data))
    bad = run_cli("verify", "prod", chain.incremental, policy_dir=policy_dir, timeout=600)
    assert bad.code == 3, bad.stdout + bad.stderr
    assert chain.full in bad.stdout + bad.stderr
    # ... and a restore through it fails naming the object, leaving no data directory
    broken = chain.arch.root / "broken"
    damaged = run_cli(
        "restore", "prod", "--point-in-time", chain.target, "--pgdata", str(broken),
        policy_dir=policy_dir, timeout=600,
    )  # fmt: skip
    assert damaged.code == 3, damaged.stderr
    assert base.name.split(".")[0] in damaged.stderr and chain.full in damaged.stderr
    assert not broken.exists()

    # a missing parent: verify names it, and PITR never picks the broken chain
    env_dir, policy_dir = copy_repo(chain, "orphaned")
    shutil.rmtree(env_dir / "backups" / chain.full)
    gone = run_cli("verify", "prod", chain.incremental, policy_dir=policy_dir, timeout=600)
    assert gone.code == 3, gone.stdout + gone.stderr
    assert f"ancestor {chain.full}" in gone.stdout + gone.stderr
    refused = run_cli(
        "restore", "prod", "--point-in-time", chain.target, "--pgdata",
        str(chain.arch.root / "never"), policy_dir=policy_dir,
    )  # fmt: skip
    assert refused.code == 3, refused.stderr
    assert not (chain.arch.root / "never").exists()


def test_on_15_incremental_exits_2_naming_17(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    _name, url = database
    policy_dir = make_policy("prod", url, file_repo)
    result = run_cli("backup", "prod", "--physical", "--incremental", policy_dir=policy_dir)
    line = result.stderr.strip()
    assert result.code == 2 and "\n" not in line, line
    assert "needs PostgreSQL 17+" in line and "is 15" in line
    # scheduling incrementals there is caught by drkit check, before the first night
    policy_dir = make_policy(
        "prod", url, file_repo, schedule={"physical_incremental_backup": "0 3 * * 1-6"}
    )
    check = run_cli("check", "prod", "--json", policy_dir=policy_dir)
    assert check.code == 3, check.stderr
    line = next(c for c in check.json()["checks"] if c["name"] == "incremental backups")
    assert line["status"] == "FAIL" and "17+" in line["detail"], line


def test_the_scheduler_runs_daily_incrementals_on_a_weekly_full(
    chain: Chain, run_cli: DrkitRunner
) -> None:
    """``schedule.physical_incremental_backup`` beside ``physical_backup``: ``schedule
    show`` lists both, the daemon's job takes an incremental on the newest backup (here the
    previous incremental: a chain of three), and verify checks all three."""
    from drkit.schedule import dispatch

    arch = chain.arch
    path = arch.policy_dir / "prod.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["schedule"] = {
        "physical_backup": "0 3 * * 0",
        "physical_incremental_backup": "0 3 * * 1-6",
        "timezone": "Europe/Rome",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    shown = run_cli("schedule", "show", "prod", "--json", policy_dir=arch.policy_dir)
    assert shown.code == 0, shown.stderr
    jobs = {j["job"]: j for j in shown.json()["jobs"]}
    assert set(jobs) == {"physical_backup", "physical_incremental_backup"}
    incremental = jobs["physical_incremental_backup"]
    assert incremental["cron"] == "0 3 * * 1-6" and len(incremental["next_runs"]) >= 1
    # 6 runs a week, never on Sunday (the full's day)
    days = {datetime.fromisoformat(run).weekday() for run in incremental["next_runs"]}
    assert days and 6 not in days  # Monday 0 .. Sunday 6

    check = run_cli("check", "prod", "--json", policy_dir=arch.policy_dir)
    line = next(c for c in check.json()["checks"] if c["name"] == "incremental backups")
    assert line["status"] == "PASS" and "summarize_wal" in line["detail"], line
    arch.execute("ALTER SYSTEM SET summarize_wal = off")
    arch.execute("SELECT pg_reload_conf()")
    check = run_cli("check", "prod", "--json", policy_dir=arch.policy_dir)
    assert check.code == 3, check.stderr
    line = next(c for c in check.json()["checks"] if c["name"] == "incremental backups")
    assert line["status"] == "FAIL" and "summarize_wal = on" in line["detail"], line
    arch.execute("ALTER SYSTEM SET summarize_wal = on")
    arch.execute("SELECT pg_reload_conf()")

    taken = dispatch("physical_incremental_backup", load_policy("prod", arch.policy_dir))
    assert taken.parent == chain.incremental
    verified = run_cli(
        "verify", "prod", taken.id, "--json", policy_dir=arch.policy_dir, timeout=600
    )
    assert verified.code == 0, verified.stdout + verified.stderr
    verdict = verified.json()["backups"][0]
    assert verdict["chain"] == [chain.full, chain.incremental, taken.id]
    assert verdict["pg_verifybackup"] == "combined chain verified"


def test_an_encrypted_repository_needs_the_identity_for_an_incremental(
    age_key: KeyMaker, run_cli: DrkitRunner
) -> None:
    """The parent's backup_manifest is stored encrypted like everything else: it is read
    back (and its sha256 checked) with the identity; a host with the recipients only is
    refused (exit 4, one line naming the parent and what to give it)."""
    require_major(18)
    key = age_key("prod")
    with shared_dir() as root:
        url = file_repo_block(root)["url"]
        with_key = {"url": url, **encryption([key], [key])}
        without_key = {"url": url, **encryption([key])}
        arch = start_archived_cluster(root, without_key, major=18)
        try:
            write_policy(arch, with_key, arch.policy_dir)
            arch.execute("ALTER SYSTEM SET summarize_wal = on")
            arch.execute("SELECT pg_reload_conf()")
            arch.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
            full = run_cli("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
            assert full.code == 0, full.stderr
            write_policy(arch, without_key, arch.policy_dir)
            refused = run_cli(
                "backup", "prod", "--physical", "--incremental", policy_dir=arch.policy_dir
            )
            line = refused.stderr.strip()
            assert refused.code == 4 and "\n" not in line, line
            assert "identity_file" in line and full.json()["id"] in line, line
            write_policy(arch, with_key, arch.policy_dir)
            taken = run_cli(
                "backup", "prod", "--physical", "--incremental", "--json",
                policy_dir=arch.policy_dir,
            )  # fmt: skip
            assert taken.code == 0, taken.stderr
            assert taken.json()["parent"] == full.json()["id"]
            for text in (refused.stdout, refused.stderr, taken.stdout, taken.stderr):
                assert key.secret() not in text
        finally:
            arch.stop_restored()
            arch.cluster.destroy()


def test_sigkill_anywhere_in_an_incremental_backup(run_cli: DrkitRunner) -> None:
    """``backup --physical --incremental`` killed at random moments: listed backups stay
    whole (every chain combines and passes pg_verifybackup), no pg_basebackup lingers,
    the next incremental is not refused and prune clears the leftovers."""
    import random

    from tests.reliability.crash_support import (
        SEED,
        kill_delay,
        points_for,
        run_and_kill,
        timed_run,
    )
    from tests.reliability.helpers import (
        RepoView,
        listed_ids,
        stray_processes,
        verify_all,
        wait_for,
    )

    require_major(18)
    rng = random.Random(SEED + 14)
    with shared_dir() as root:
        block = file_repo_block(root)
        arch = start_archived_cluster(root, block, major=18)
        try:
            write_policy(arch, block, arch.policy_dir)
            doc = yaml.safe_load((arch.policy_dir / "prod.yaml").read_text())
            doc["retention"] = {"daily": 30, "orphan_grace": "1s"}
            (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            chown_tree(arch.policy_dir, cluster_os_user())
            arch.execute("ALTER SYSTEM SET summarize_wal = on")
            arch.execute("SELECT pg_reload_conf()")
            arch.execute(
                "CREATE TABLE filler AS SELECT g, md5(g::text) AS v FROM generate_series(1, 200000) g"
            )
            full = run_cli("backup", "prod", "--physical", policy_dir=arch.policy_dir)
            assert full.code == 0, full.stderr
            repo = RepoTarget("file", block["url"], root=Path(block["url"].removeprefix("file://")))
            view = RepoView(repo)
            env: dict[str, str] = {}
            args = ["backup", "prod", "--physical", "--incremental"]
            duration = timed_run(args, arch.policy_dir, env)
            kills = rounds = 0
            points = points_for(18)
            outcomes: list[str] = []
            while kills < points and rounds < 3 * points:
                i, rounds = rounds, rounds + 1
                arch.execute(f"UPDATE filler SET v = v || 'x' WHERE g % 50 = {i}")
                delay = kill_delay(rng, duration, i)
                code = run_and_kill(args, arch.policy_dir, delay, env)
                kills += code is None
                outcomes.append(f"{delay:.2f}s:{'killed' if code is None else 'finished'}")
                context = f"seed {SEED}, round {i}, kill after {delay:.3f}s of {duration:.2f}s"
                try:
                    complete, _orphans = view.check_backups()
                except AssertionError as exc:
                    raise AssertionError(f"{context}: {exc}") from None
                assert complete, context
                wait_for(
                    lambda: not stray_processes("pg_basebackup"), 20, f"pg_basebackup ({context})"
                )
            assert kills >= points, outcomes
            complete, _orphans = view.check_backups()
            assert set(listed_ids(run_cli, arch.policy_dir)) == complete
            verified = verify_all(run_cli, arch.policy_dir)
            assert verified.code == 0, (verified.stdout, verified.stderr, outcomes)
            chains = [b for b in verified.json()["backups"] if b.get("chain")]
            assert chains and all(b["pg_verifybackup"] == "combined chain verified" for b in chains)
            again = run_cli(*args, "--json", policy_dir=arch.policy_dir)
            assert again.code == 0, again.stderr
            time.sleep(1.2)
            assert run_cli("prune", "prod", policy_dir=arch.policy_dir).code == 0
            complete_after, orphans_after = view.check_backups()
            assert not orphans_after and again.json()["id"] in complete_after
        finally:
            arch.stop_restored()
            arch.cluster.destroy()
