"""Logical backup → list → verify → restore, end to end through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from drkit.demo.sample import table_counts
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer, hide_pg_wheels, pg_versions
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import RepoView


@pytest.fixture
def prod(
    sample_db: tuple[str, str], repo_target: RepoTarget, make_policy: PolicyWriter
) -> tuple[Path, str, RepoTarget]:
    name, url = sample_db
    return make_policy("prod", url, repo_target), name, repo_target


@pg_versions()
def test_backup_list_verify_restore(
    prod: tuple[Path, str, RepoTarget],
    pg_server: PgServer,
    run_cli: DrkitRunner,
    request: pytest.FixtureRequest,
) -> None:
    policy_dir, dbname, repo = prod
    s3 = request.getfixturevalue("s3_server") if repo.kind == "s3" else None
    source_counts = table_counts(pg_server.dsn(dbname))

    made = run_cli("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    summary = made.json()
    backup_id = summary["id"]
    assert backup_id.endswith("-logical") and summary["rows"] == sum(source_counts.values())

    objects = RepoView(repo, s3).objects()
    manifest_key = f"prod/backups/{backup_id}/manifest.json"
    dump_key = f"prod/backups/{backup_id}/{dbname}.dump.zst"
    assert set(objects) == {manifest_key, dump_key}
    if repo.kind == "file":
        assert repo.root is not None
        manifest = json.loads((repo.root / manifest_key).read_text())
        assert manifest["row_counts"][dbname] == source_counts
        assert manifest["objects"][0]["stored_size"] == objects[dump_key]
        for key in (
            "id",
            "kind",
            "environment",
            "databases",
            "server_version",
            "drkit_version",
            "started_at",
            "finished_at",
            "consistent_at",
        ):
            assert manifest[key], key
        assert manifest["objects"][0]["compression"] == "zstd"
        assert len(manifest["objects"][0]["sha256"]) == 64

    listed = run_cli("backups", "prod", "--json", policy_dir=policy_dir)
    assert listed.code == 0, listed.stderr
    rows = listed.json()["backups"]
    assert [r["id"] for r in rows] == [backup_id]
    for field in ("id", "kind", "started_at", "finished_at", "size", "databases"):
        assert field in rows[0]
    assert rows[0]["databases"] == [dbname] and rows[0]["size"] == objects[dump_key]

    verified = run_cli("verify", "prod", "latest", "--json", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr
    assert verified.json()["ok"] is True

    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore",
        "prod",
        backup_id,
        "--target-db",
        pg_server.url(target),
        "--json",
        policy_dir=policy_dir,
    )
    assert restored.code == 0, restored.stderr
    assert table_counts(pg_server.dsn(target)) == source_counts
    # the password of the target url never shows up
    assert "drkit-test" not in restored.stdout + restored.stderr or pg_server.kind != "local"

    again = run_cli(
        "restore", "prod", "latest", "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert again.code == 4, again.stderr
    assert "--force" in again.stderr and "Traceback" not in again.stderr

    forced = run_cli(
        "restore",
        "prod",
        "latest",
        "--target-db",
        pg_server.url(target),
        "--force",
        "--jobs",
        "2",
        policy_dir=policy_dir,
        env={"DRKIT_TMPDIR": str(policy_dir)},
    )
    assert forced.code == 0, forced.stderr
    assert table_counts(pg_server.dsn(target)) == source_counts
    assert not list(policy_dir.glob("drkit-restore-*")), "temporary dump left behind"
    pg_server.drop_database(target)


def test_default_restore_target_is_the_environment_database(
    prod: tuple[Path, str, RepoTarget], pg_server: PgServer, run_cli: DrkitRunner
) -> None:
    policy_dir, dbname, _repo = prod
    before = table_counts(pg_server.dsn(dbname))
    assert run_cli("backup", "prod", policy_dir=policy_dir).code == 0
    pg_server.query(dbname, "DELETE FROM alert_log")
    refused = run_cli("restore", "prod", policy_dir=policy_dir)
    assert refused.code == 4
    assert table_counts(pg_server.dsn(dbname))["public.alert_log"] == 0
    done = run_cli("restore", "prod", "--force", policy_dir=policy_dir)
    assert done.code == 0, done.stderr
    assert table_counts(pg_server.dsn(dbname)) == before


def test_corrupt_object_fails_verify_and_restore(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
) -> None:
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo)
    backup_id = run_cli("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    assert file_repo.root is not None
    dump = file_repo.root / "prod" / "backups" / backup_id / f"{name}.dump.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))

    verified = run_cli("verify", "prod", "--all", policy_dir=policy_dir)
    assert verified.code == 3
    assert f"{name}.dump.zst" in verified.stderr and "sha256" in verified.stderr

    target = f"c_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 3, restored.stderr
    assert f"{name}.dump.zst" in restored.stderr
    # the single-transaction restore rolled back: no half-restored tables
    assert pg_server.query(target, "SELECT count(*) FROM pg_tables WHERE schemaname='public'") == [
        (0,)
    ]
    pg_server.drop_database(target)


def test_row_count_mismatch_fails_restore(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
) -> None:
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo)
    backup_id = run_cli("backup", "prod", "--json", policy_dir=policy_dir).json()["id"]
    assert file_repo.root is not None
    manifest_path = file_repo.root / "prod" / "backups" / backup_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["row_counts"][name]["public.agent"] += 1
    manifest_path.write_text(json.dumps(manifest))
    target = f"m_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 3
    assert "public.agent" in restored.stderr and "expected" in restored.stderr
    pg_server.drop_database(target)


def test_bad_input_gets_one_line_and_the_right_code(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    s3_server,  # type: ignore[no-untyped-def]
    run_cli: DrkitRunner,
    tmp_path: Path,
) -> None:
    _name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo)

    def one_line_error(result, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
        assert result.code == code, (result.code, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])

    one_line_error(run_cli("restore", "prod", "latest", policy_dir=policy_dir), 1, "no backups")
    one_line_error(run_cli("verify", "prod", "latest", policy_dir=policy_dir), 1, "no backups")
    one_line_error(
        run_cli("restore", "prod", "20200101T000000Z-logical", policy_dir=policy_dir),
        1,
        "20200101T000000Z-logical does not exist",
    )
    one_line_error(run_cli("verify", "prod", "not-an-id", policy_dir=policy_dir), 2, "not-an-id")
    one_line_error(run_cli("backup", "prod", "--frobnicate", policy_dir=policy_dir), 2)

    wrong_pw = url.replace("@127.0.0.1", "x@127.0.0.1", 1) if pg_server.kind == "local" else None
    if wrong_pw:
        password = url.split(":")[2].split("@")[0]
        bad_dir = make_policy("wrongpw", wrong_pw, file_repo, environment="dev")
        result = run_cli("backup", "wrongpw", policy_dir=bad_dir)
        one_line_error(result, 1, "password authentication failed")
        assert password not in result.stderr

    from drkit.pg import free_port

    down = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/x"
    make_policy("down", down, file_repo, environment="dev")
    one_line_error(
        run_cli("backup", "down", policy_dir=policy_dir), 1, "cannot connect to 127.0.0.1"
    )

    make_policy(
        "nobucket",
        url,
        {"url": "s3://drkit-missing-bucket/p", "endpoint_url": s3_server.endpoint},
        environment="test",
    )
    one_line_error(
        run_cli("backup", "nobucket", policy_dir=policy_dir),
        1,
        "bucket drkit-missing-bucket does not exist",
    )

    empty_bin = tmp_path / "nobin"
    empty_bin.mkdir()
    result = run_cli(
        "backup",
        "prod",
        policy_dir=policy_dir,
        env={"DRKIT_PG_BIN": str(empty_bin), "PATH": str(empty_bin)},
    )
    # /usr/lib/postgresql/*/bin still has pg_dump on Debian; only assert the no-binary path
    # when it is really absent
    if not Path("/usr/lib/postgresql").exists():
        one_line_error(result, 1, "pg_dump not found")

    listed = run_cli("backups", "prod", "--json", policy_dir=policy_dir)
    assert all(r["id"].endswith("-logical") for r in listed.json()["backups"])
    assert file_repo.root is not None
    for manifest in file_repo.root.rglob("manifest.json"):
        assert json.loads(manifest.read_text())["objects"]


def test_missing_pg_dump_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from drkit.errors import OperationError
    from drkit.pg import binaries

    monkeypatch.setattr(binaries, "_DEBIAN_ROOT", tmp_path / "none")
    hide_pg_wheels(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DRKIT_PG_BIN", raising=False)
    with pytest.raises(OperationError, match="pg_dump not found: install postgresql-client-15"):
        binaries.find_binary("pg_dump", 15)


def test_interrupted_backup_leaves_no_manifest(
    pg_server: PgServer, file_repo: RepoTarget, make_policy: PolicyWriter, run_cli: DrkitRunner
) -> None:
    from drkit.demo.sample import load_sample

    name = f"big_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    load_sample(url, 400_000)
    policy_dir = make_policy("prod", url, file_repo)
    assert file_repo.root is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), "backup", "prod"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(".drkit-tmp-" in p.name for p in file_repo.root.rglob("*")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not list(file_repo.root.rglob("manifest.json"))
    assert not [p for p in file_repo.root.rglob("*") if p.is_file()]
    assert run_cli("backups", "prod", "--json", policy_dir=policy_dir).json()["backups"] == []
    pg_server.drop_database(name)


def test_cli_registers_every_command(run_cli: DrkitRunner) -> None:
    commands = [
        ["policy", "check"],
        ["backup"],
        ["backups"],
        ["verify"],
        ["prune"],
        ["restore"],
        ["wal-push"],
        ["wal-fetch"],
        ["sanitize"],
        ["sanitize", "check"],
        ["sanitize", "init"],
        ["drill"],
        ["status"],
        ["schedule", "run"],
        ["schedule", "show"],
        ["demo"],
    ]
    for command in commands:
        result = run_cli(*command, "--help")
        assert result.code == 0, (command, result.stderr)
        assert "--json" in result.stdout, command


def test_environment_variable_names_the_policy_dir(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    _name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo)
    result = run_cli("backups", "prod", "--json", env={"DRKIT_POLICY_DIR": str(policy_dir)})
    assert result.code == 0, result.stderr
    assert result.json()["backups"] == []
    assert os.environ.get("DRKIT_POLICY_DIR") is None


def test_refused_s3_credentials_are_one_clear_line(
    sample_db: tuple[str, str], make_policy: PolicyWriter, run_cli: DrkitRunner
) -> None:
    """A moto server with authentication on: unknown keys are refused with 403."""
    from drkit.pg import free_port
    from tests.fix_s3 import wait_http

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}")
        _name, url = sample_db
        policy_dir = make_policy(
            "prod",
            url,
            {
                "url": "s3://locked/p",
                "endpoint_url": f"http://127.0.0.1:{port}",
                "region": "us-east-1",
            },
        )
        result = run_cli(
            "backup",
            "prod",
            policy_dir=policy_dir,
            env={"AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        )
        assert result.code == 1, result.stderr
        assert "refused the credentials" in result.stderr
        assert "not-the-secret" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        server.terminate()
        server.wait(10)


def test_row_counts_over_several_connections_match_one(sample_db: tuple[str, str]) -> None:
    """The restore's row check counts on --jobs connections: same numbers as one."""
    from drkit.pg.connect import connect
    from drkit.pg.tables import count_rows, count_rows_concurrently, list_tables

    _name, url = sample_db
    with connect(url) as conn:
        tables = list_tables(conn)
        serial = count_rows(conn, tables)
    assert len(tables) > 3 and sum(serial.values()) > 0
    for jobs in (1, 3, 50):
        assert count_rows_concurrently(url, tables, jobs) == serial
    assert count_rows_concurrently(url, [], 3) == {}
