"""``drkit check ENV`` and ``drkit archive-command ENV`` against real clusters.

``check`` must prove the chain, not the file: a database that is down, a repository
that cannot be written and an archive_command that does not archive all fail (exit 3)
with one line each.  ``archive-command`` must print lines that actually archive when
pasted into the server's configuration.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from drkit.pg import LocalCluster, chown_tree, cluster_os_user, free_port
from drkit.wal import prepare_file_repository
from tests.fix_cli import DrkitRunner
from tests.fix_s3 import S3Server
from tests.wal_support import archived_cluster, file_repo_block, shared_dir


def test_check_passes_on_a_working_chain(run_cli: DrkitRunner) -> None:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        result = run_cli("check", "prod", policy_dir=arch.policy_dir)
        assert result.code == 0, result.stderr + result.stdout
        lines = result.stdout.splitlines()
        for name in (
            "database postgres",
            "privileges postgres",
            "privileges base backup",
            "archive_command",
            "archive round trip",
            "repository",
            "schedule",
        ):
            assert any(line.startswith(f"PASS {name}:") for line in lines), result.stdout
        # the probe object is gone again
        probes = list((root / "repo" / "prod").rglob("probe-*"))
        assert probes == []
        doc = run_cli("--json", "check", "prod", policy_dir=arch.policy_dir).json()
        assert doc["ok"] is True
        assert {c["status"] for c in doc["checks"]} == {"PASS"}


def test_check_fails_on_a_dead_database_and_an_unusable_repository(
    run_cli: DrkitRunner, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the repository should be")
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    secret = "s3cr3t-pw-never-shown"
    doc = {
        "environment": "prod",
        "database": {"url": f"postgresql://app:{secret}@127.0.0.1:{free_port()}/shop"},
        "repository": {"url": f"file://{blocker}"},
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    # policy check is offline and says the file is fine ...
    assert run_cli("policy", "check", "prod", policy_dir=policy_dir).code == 0
    # ... check says the chain is not
    result = run_cli("check", "prod", policy_dir=policy_dir)
    assert result.code == 3, result.stderr
    assert "FAIL database shop:" in result.stdout
    assert "FAIL repository:" in result.stdout
    assert secret not in result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0  # one error line
    as_json = run_cli("--json", "check", "prod", policy_dir=policy_dir)
    assert as_json.code == 3
    document = as_json.json()
    assert document["ok"] is False
    failed = {c["name"] for c in document["checks"] if c["status"] == "FAIL"}
    assert {"database shop", "repository"} <= failed
    assert secret not in as_json.stdout


def test_check_fails_when_the_server_does_not_archive_through_drkit(
    run_cli: DrkitRunner,
) -> None:
    with shared_dir() as root:
        repo = file_repo_block(root)
        cluster = LocalCluster.create(
            root / "pg", settings={"archive_mode": "on", "archive_command": "/bin/true"}, fast=True
        )
        try:
            policy_dir = root / "policies"
            policy_dir.mkdir()
            doc = {
                "environment": "prod",
                "database": {"url": cluster.dsn()},
                "repository": repo,
                "wal_archiving": True,
            }
            (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            result = run_cli("check", "prod", policy_dir=policy_dir)
            assert result.code == 3
            assert "FAIL archive_command:" in result.stdout
            assert "drkit archive-command prod" in result.stdout

            # the line an older drkit printed: a runtime in /var/tmp, run unchecked
            old = (
                "env PYTHONNOUSERSITE=1 PYTHONPATH=/var/tmp/drkit-runtime-0123456789abcdef/src"
                ":/var/tmp/drkit-runtime-0123456789abcdef/site /usr/bin/python3.11 -m drkit "
                f"wal-push prod %p --policy-dir {policy_dir}"
            )
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(old))
                )
                conn.execute("SELECT pg_reload_conf()")
            result = run_cli("--json", "check", "prod", policy_dir=policy_dir)
            assert result.code == 3
            (failed,) = [c for c in result.json()["checks"] if c["name"] == "archive_command"]
            assert failed["status"] == "FAIL"
            assert "a runtime it does not check before running it" in failed["detail"]
        finally:
            cluster.destroy()


def test_archive_command_prints_lines_that_archive(run_cli: DrkitRunner) -> None:
    """Into a repository root that root shares with other data: drkit makes what it
    needs below it for the cluster's OS user and leaves the root as it was."""
    with shared_dir() as root:
        shared = root / "repo"
        shared.mkdir(mode=0o755)
        (shared / "other-data").write_text("not drkit's")
        repo = {"url": f"file://{shared}"}
        policy_dir = root / "policies"
        policy_dir.mkdir()
        cluster = LocalCluster.create(
            root / "pg", settings={"archive_mode": "on", "archive_command": "exit 1"}, fast=True
        )
        try:
            doc = {"environment": "prod", "database": {"url": cluster.dsn()}, "repository": repo}
            (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            chown_tree(policy_dir, cluster_os_user())
            text = run_cli("archive-command", "prod", policy_dir=policy_dir)
            assert text.code == 0, text.stderr
            assert "archive_mode = on" in text.stdout
            assert any(line.startswith("archive_command = '") for line in text.stdout.splitlines())
            assert any(line.startswith("restore_command = '") for line in text.stdout.splitlines())
            lines = run_cli("--json", "archive-command", "prod", policy_dir=policy_dir).json()
            assert lines["ok"] is True
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
                        sql.Literal(lines["archive_command"])
                    )
                )
                conn.execute("SELECT pg_reload_conf()")
                conn.execute("SELECT txid_current()")
                row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert row is not None
            segment = str(row[0])
            wal_dir = root / "repo" / "prod" / "wal"
            deadline = time.monotonic() + 60
            while not any(p.name.startswith(segment) for p in wal_dir.iterdir()):
                assert time.monotonic() < deadline, f"{segment} never reached {wal_dir}"
                time.sleep(0.2)
            st = shared.stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
            assert (shared / "other-data").stat().st_uid == 0
            assert wal_dir.stat().st_uid == pwd.getpwnam(str(cluster_os_user())).pw_uid
        finally:
            cluster.destroy()


def test_archive_command_never_takes_over_a_directory_it_did_not_create(
    run_cli: DrkitRunner,
) -> None:
    """A shared repository root keeps its owner; an existing ``ENV/wal`` the cluster's OS
    user cannot write is refused, saying what to do, rather than handed over."""
    if cluster_os_user() is None:  # only root hands directories to another user
        return
    with shared_dir() as root:
        shared = root / "srv"
        (shared / "prod" / "wal").mkdir(parents=True)
        (shared / "prod" / "wal" / "someone-elses").write_text("x")
        policy_dir = root / "policies"
        policy_dir.mkdir()
        doc = {
            "environment": "prod",
            "database": {"url": "postgresql:///x"},
            "repository": {"url": f"file://{shared}"},
        }
        (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
        chown_tree(policy_dir, cluster_os_user())
        refused = run_cli("archive-command", "prod", policy_dir=policy_dir)
        assert refused.code == 4, refused.stderr
        assert f"{shared}/prod exists and the cluster's OS user" in refused.stderr
        assert f"chown {cluster_os_user()} {shared}/prod" in refused.stderr
        for path in (shared, shared / "prod", shared / "prod" / "wal"):
            assert path.stat().st_uid == 0, path


def test_archive_command_refuses_a_policy_the_server_user_cannot_read(
    run_cli: DrkitRunner, tmp_path: Path
) -> None:
    if cluster_os_user() is None:  # only root runs clusters as another user
        return
    with shared_dir() as root:
        repo = file_repo_block(root)
        prepare_file_repository(str(repo["url"]), "prod", cluster_os_user())
        policy_dir = tmp_path / "policies"  # pytest's tmp_path: root only
        policy_dir.mkdir()
        doc = {"environment": "prod", "database": {"url": "postgresql:///x"}, "repository": repo}
        (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
        result = run_cli("archive-command", "prod", policy_dir=policy_dir)
        assert result.code == 2
        assert "not reachable by the OS user" in result.stderr


@pytest.fixture
def env_dir() -> Iterator[Path]:
    """A root-only directory for the env files archive-command writes, removed after."""
    Path("/var/lib/drkit").mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="env-test-", dir="/var/lib/drkit"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _set_archive_command(cluster: LocalCluster, line: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(line)))
        conn.execute("SELECT pg_reload_conf()")


def test_archive_command_lines_work_in_the_servers_own_environment(
    run_cli: DrkitRunner, run_drkit: DrkitRunner, env_dir: Path
) -> None:
    """The policy's ${VAR}s resolve in drkit's shell; PostgreSQL runs archive_command in
    its own environment, which does not have them.  On e8a05ad the printed line failed
    there ("environment variable ... is not set") while `check` waited 60 s for the
    segment before saying so.  The line now names an env file (0600, the server's OS
    user's) holding what the policy needs; a line without it is diagnosed from
    pg_stat_archiver within seconds."""
    secret = "i21-never-shown-" + "x" * 8
    with shared_dir() as root:
        repo_dir = root / "repo"
        repo_dir.mkdir(mode=0o755)
        policy_dir = root / "policies"
        policy_dir.mkdir()
        # started from this process: its environment has neither variable
        cluster = LocalCluster.create(
            root / "pg", settings={"archive_mode": "on", "archive_command": "exit 1"}, fast=True
        )
        try:
            doc = {
                "environment": "prod",
                "database": {"url": cluster.dsn()},
                "repository": {"url": "file://${DRKIT_I21_REPO}"},
                "wal_archiving": True,
            }
            (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            chown_tree(policy_dir, cluster_os_user())
            env = {"DRKIT_I21_REPO": str(repo_dir), "DRKIT_AGE_IDENTITY_FILE": f"/{secret}"}
            env["DRKIT_ENV_DIR"] = str(env_dir)
            lines = run_cli("--json", "archive-command", "prod", policy_dir=policy_dir, env=env)
            assert lines.code == 0, lines.stderr
            doc_out = lines.json()
            assert secret not in lines.stdout + lines.stderr
            env_file = Path(doc_out["env_file"])
            assert doc_out["env_variables"] == ["DRKIT_AGE_IDENTITY_FILE", "DRKIT_I21_REPO"]
            assert str(env_file) in doc_out["archive_command"]
            assert str(env_file) in doc_out["restore_command"]
            st = env_file.stat()
            assert stat.S_IMODE(st.st_mode) == 0o600
            assert st.st_uid == pwd.getpwnam(str(cluster_os_user())).pw_uid
            _set_archive_command(cluster, doc_out["archive_command"])
            check = run_cli("check", "prod", policy_dir=policy_dir, env=env)
            assert "PASS archive round trip" in check.stdout, check.stdout + check.stderr
            assert secret not in check.stdout + check.stderr
            # restore_command, run as the server's OS user with nothing in its environment
            wal_dir = repo_dir / "prod" / "wal"
            segment = min(p.name for p in wal_dir.rglob("0000*") if p.is_file())[:24]
            fetched = root / "fetched"
            fetched.mkdir()
            chown_tree(fetched, cluster_os_user())
            line = doc_out["restore_command"].replace("%f", segment)
            line = line.replace("%p", str(fetched / "RECOVERYXLOG"))
            proc = subprocess.run(
                ["runuser", "-u", str(cluster_os_user()), "--", "env", "-i", "sh", "-c", line],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd="/",
            )
            assert proc.returncode == 0, proc.stderr
            assert (fetched / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024

            # the env file opened to others is refused, never read
            env_file.chmod(0o644)
            failed = run_drkit(  # a subprocess: the timeout bounds check's wait
                "--json", "check", "prod", policy_dir=policy_dir, env=env, timeout=40
            )
            env_file.chmod(0o600)
            assert failed.code == 3, failed.stdout + failed.stderr
            (trip,) = [c for c in failed.json()["checks"] if c["name"] == "archive round trip"]
            assert trip["status"] == "FAIL" and "archiver failed" in trip["detail"], trip

            # the line of before: the server's archiver fails at once; check says so in
            # seconds (its wait is 60 s), naming the segment the server failed on
            from drkit.wal import archive_command

            _set_archive_command(cluster, archive_command("prod", policy_dir, cluster_os_user()))
            failed = run_drkit(  # a subprocess: the timeout bounds check's wait
                "--json", "check", "prod", policy_dir=policy_dir, env=env, timeout=40
            )
            assert failed.code == 3, failed.stdout + failed.stderr
            (trip,) = [c for c in failed.json()["checks"] if c["name"] == "archive round trip"]
            assert trip["status"] == "FAIL", trip
            assert "the server's archiver failed" in trip["detail"], trip
            assert "within 60s" not in trip["detail"], trip
            assert secret not in failed.stdout + failed.stderr
        finally:
            cluster.destroy()


def test_the_printed_lines_reach_the_same_s3_repository_under_env_i(
    run_cli: DrkitRunner, s3_server: S3Server, env_dir: Path
) -> None:
    """With an empty environment (systemd, `env -i`) wal-push had no credentials and no
    endpoint: ``${DRKIT_I21_S3:-}`` fell back to AWS itself instead of the S3-compatible
    store the backups use.  The env file pins the endpoint and the AWS_* credentials, and
    the line archives a real segment into the policy's bucket from nothing at all."""
    bucket = s3_server.create_bucket()
    user = str(cluster_os_user())
    with shared_dir() as root:
        policy_dir = root / "policies"
        policy_dir.mkdir()
        cluster = LocalCluster.create(
            root / "pg", settings={"archive_mode": "on", "archive_command": "exit 1"}, fast=True
        )
        try:
            doc = {
                "environment": "prod",
                "database": {"url": cluster.dsn()},
                "repository": {
                    "url": "s3://${DRKIT_I21_BUCKET}/drkit",
                    "endpoint_url": "${DRKIT_I21_S3:-}",
                    "region": "us-east-1",
                },
            }
            (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            chown_tree(policy_dir, user)
            env = {"DRKIT_I21_BUCKET": bucket, "DRKIT_I21_S3": s3_server.endpoint}
            env["DRKIT_ENV_DIR"] = str(env_dir)
            lines = run_cli("--json", "archive-command", "prod", policy_dir=policy_dir, env=env)
            assert lines.code == 0, lines.stderr
            pinned = lines.json()["env_variables"]
            assert {"DRKIT_I21_BUCKET", "DRKIT_I21_S3", "AWS_SECRET_ACCESS_KEY"} <= set(pinned)
            assert os.environ["AWS_SECRET_ACCESS_KEY"] not in lines.stdout + lines.stderr
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute("SELECT txid_current()")
                row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert row is not None
            segment = str(row[0])
            line = lines.json()["archive_command"].replace("%p", f"pg_wal/{segment}")
            proc = subprocess.run(
                ["runuser", "-u", user, "--", "env", "-i", "sh", "-c", line],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=str(cluster.data_dir),
            )
            assert proc.returncode == 0, proc.stderr
            stored = s3_server.objects(bucket, "drkit/prod/wal/")
            assert any(segment in key for key in stored), stored
        finally:
            cluster.destroy()


def test_check_fails_on_an_unwritable_copy_and_passes_a_writable_one(
    run_cli: DrkitRunner, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the copy should be")
    (tmp_path / "repo").mkdir()
    (tmp_path / "good").mkdir()
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    doc = {
        "environment": "prod",
        "database": {"url": f"postgresql://app@127.0.0.1:{free_port()}/shop"},
        "repository": {"url": f"file://{tmp_path / 'repo'}"},
        "copies": {
            "good": {"url": f"file://{tmp_path / 'good'}"},
            "offsite": {"url": f"file://{blocker}/copy"},
        },
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    result = run_cli("--json", "check", "prod", policy_dir=policy_dir)
    assert result.code == 3, result.stderr
    status = {c["name"]: c["status"] for c in result.json()["checks"]}
    assert status["repository"] == "PASS"
    assert status["copy good"] == "PASS"
    assert status["copy offsite"] == "FAIL"
    assert list((tmp_path / "good").rglob("probe-*")) == []  # the probe went again
