"""The runbooks' commands, run as written against a real cluster and repository.

``runbooks/README.md`` states the conventions: ```` ```sh ```` blocks run in order with
``bash -e``; ```` ```sh no-test ```` blocks are deployment-specific and only shown;
``export NAME=value`` lines are the operator's choices, replaced by the test's values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drkit.demo.sample import table_counts
from tests.fix_cli import REPO_ROOT, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import publish_base_backup_manifest

RUNBOOKS = REPO_ROOT / "runbooks"
OBJECTIVES = {"rpo": "1h", "rto": "30m"}
DRKIT = [sys.executable, "-m", "drkit"]
_FENCE = re.compile(r"^```(.*)$")
_EXPORT = re.compile(r"^export ([A-Za-z_][A-Za-z0-9_]*)=")


def sh_blocks(path: Path) -> list[str]:
    """The ```sh blocks of a markdown file, in order (not the ```sh no-test ones)."""
    blocks: list[str] = []
    current: list[str] | None = None
    info = ""
    for line in path.read_text().splitlines():
        match = _FENCE.match(line.strip())
        if match and current is None:
            info, current = match.group(1).strip(), []
        elif match:
            if info == "sh":
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{path.name}: unterminated code fence"
    return blocks


def script_of(path: Path, values: dict[str, str]) -> str:
    lines = []
    for block in sh_blocks(path):
        for line in block.splitlines():
            match = _EXPORT.match(line)
            if match and match.group(1) in values:
                line = f"export {match.group(1)}={values[match.group(1)]!s}"
            lines.append(line)
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


@pytest.fixture
def shell_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """PATH with a ``drkit`` that is this checkout's, and a scratch dir for drills."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "drkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m drkit "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    scratch = Path(tempfile.mkdtemp(prefix="drkit-test-runbook-"))
    scratch.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["DRKIT_TMPDIR"] = str(scratch)
    yield env
    shutil.rmtree(scratch, ignore_errors=True)


def run_runbook(
    name: str,
    policy_dir: Path,
    cwd: Path,
    env: dict[str, str],
    values: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    script = script_of(RUNBOOKS / name, values or {})
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env={**env, "DRKIT_POLICY_DIR": str(policy_dir)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"runbooks/{name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}"
    )
    return proc


def test_restore_latest_runbook_brings_a_lost_database_back(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    shell_env: dict[str, str],
    tmp_path: Path,
) -> None:
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    before = table_counts(pg_server.dsn(name))
    subprocess.run(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), "backup", "prod"],
        check=True,
        capture_output=True,
    )
    # Sunday 03:00: the weekly base backup is newer than the nightly dump
    publish_base_backup_manifest(policy_dir, pg_server.dsn(name))
    pg_server.drop_database(name)  # the incident: the database is gone

    proc = run_runbook("restore-latest.md", policy_dir, tmp_path, shell_env)
    assert table_counts(pg_server.dsn(name)) == before
    result = json.loads((tmp_path / "restore-result.json").read_text())
    assert result["ok"] is True and result["databases"][0]["rows"] == sum(before.values())
    assert "row counts match" in proc.stdout
    # the runbook's last step took a fresh backup
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "drkit",
            "--policy-dir",
            str(policy_dir),
            "backups",
            "prod",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    kinds = [b["kind"] for b in json.loads(listed.stdout)["backups"]]
    assert kinds == ["logical", "physical", "logical"]  # the fresh one, then the two before


def test_drill_runbook_runs_and_reports(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    shell_env: dict[str, str],
    tmp_path: Path,
) -> None:
    _name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives=OBJECTIVES)
    subprocess.run(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), "backup", "prod"],
        check=True,
        capture_output=True,
    )
    proc = run_runbook("drill.md", policy_dir, tmp_path, shell_env)
    assert "**PASS**" in (tmp_path / "drill-report" / "report.md").read_text()
    assert (tmp_path / "drill-report-random" / "junit.xml").exists()
    assert "verdict: PASS" in proc.stdout
    assert list(Path(shell_env["DRKIT_TMPDIR"]).iterdir()) == []


def test_every_alert_has_a_response_in_the_alerts_runbook() -> None:
    rules = yaml.safe_load((REPO_ROOT / "monitoring" / "drkit-alerts.yml").read_text())
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    text = (RUNBOOKS / "alerts.md").read_text()
    sections = set(re.findall(r"^## (\w+)", text, re.M))
    assert alerts and set(alerts) <= sections, sorted(set(alerts) - sections)


def test_runbooks_index_and_tested_blocks() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for link in re.findall(r"\]\(([\w-]+\.md)\)", index):
        assert (RUNBOOKS / link).exists(), link
    for name in ("restore-latest.md", "pitr-bad-migration.md", "refresh-staging.md", "drill.md"):
        blocks = sh_blocks(RUNBOOKS / name)
        assert blocks and all(b.strip() for b in blocks), name
        assert any("drkit " in b for b in blocks), name


def test_pitr_runbook_recovers_to_before_a_bad_migration(
    shell_env: dict[str, str], tmp_path: Path
) -> None:
    import psycopg

    from drkit.config import load_policy
    from drkit.demo.sample import load_sample
    from drkit.pg import chown_tree, cluster_os_user, free_port
    from drkit.storage import Repository
    from drkit.wal import find_wal_key
    from tests.wal_support import file_repo_block, shared_dir, start_archived_cluster

    with shared_dir() as root:
        arch = start_archived_cluster(root, file_repo_block(root))
        try:
            url = arch.cluster.create_database("app")
            load_sample(url, 2_000)
            doc = {
                "environment": "prod",
                "database": {"url": url},
                "repository": arch.repo_block,
                "wal_archiving": True,
                "objectives": OBJECTIVES,
            }
            (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            chown_tree(arch.policy_dir, cluster_os_user())
            subprocess.run(
                [*DRKIT, "--policy-dir", str(arch.policy_dir), "backup", "prod", "--physical"],
                check=True,
                capture_output=True,
            )
            kept = arch.execute("SELECT count(*) FROM vulnerability", url)[0][0]
            with psycopg.connect(url) as conn:  # the bad migration, its transaction recorded
                conn.execute("DROP TABLE vulnerability CASCADE")
                row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
            assert row is not None
            dropped = int(row[0])
            repo = Repository.for_policy(load_policy("prod", arch.policy_dir))
            arch.switch_and_wait(lambda name: find_wal_key(repo, name) is not None)

            recover_dir = arch.new_pgdata()
            env = {**shell_env, "PGPASSWORD": arch.cluster.password}
            proc = run_runbook(
                "pitr-bad-migration.md",
                arch.policy_dir,
                tmp_path,
                env,
                {
                    "RECOVER_DIR": str(recover_dir),
                    "PORT": str(free_port()),
                    "PGUSER": "postgres",
                    "PGDATABASE": "app",
                },
            )
            found = json.loads((tmp_path / "wal-search.json").read_text())
            assert [t["xid"] for t in found["transactions"]] == [dropped]
            assert f"the damage is transaction {dropped}" in proc.stdout
            result = json.loads((tmp_path / "pitr-result.json").read_text())
            assert result["state"] == "promoted" and result["target_kind"] == "xid"
            assert "recovered to" in proc.stdout
            lines = [line.strip() for line in proc.stdout.splitlines()]
            assert str(kept) in lines  # the dropped table, as it was just before the migration
            assert not arch.execute(
                "SELECT 1 FROM pg_tables WHERE tablename = 'vulnerability'", url
            )
        finally:
            arch.stop_restored()
            arch.cluster.destroy()


def test_refresh_staging_runbook_copies_sanitized_data(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    shell_env: dict[str, str],
    tmp_path: Path,
) -> None:
    import uuid

    name, url = sample_db
    staging = f"st_{uuid.uuid4().hex[:8]}"
    staging_url = pg_server.create_database(staging)
    try:
        make_policy("prod", url, file_repo, objectives=OBJECTIVES)
        policy_dir = make_policy("staging", staging_url, file_repo)
        subprocess.run(
            [*DRKIT, "--policy-dir", str(policy_dir), "backup", "prod"],
            check=True,
            capture_output=True,
        )
        shutil.copytree(REPO_ROOT / "sanitize_rules", tmp_path / "sanitize_rules")
        env = {**shell_env, "DRKIT_SANITIZE_SALT": "runbook-test-salt-5b1e"}
        run_runbook("refresh-staging.md", policy_dir, tmp_path, env)
        source = table_counts(pg_server.dsn(name))
        assert table_counts(pg_server.dsn(staging))["public.user"] == source["public.user"]
        users = pg_server.query(staging, 'SELECT id, email, password_hash FROM "user"')
        assert users and all(
            (email, pw) == (f"user_{uid}@example.com", "$2b$12$sanitized")
            for uid, email, pw in users
        )
    finally:
        pg_server.drop_database(staging)
