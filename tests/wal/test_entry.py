"""The lean entry for PostgreSQL's WAL commands: which lines take it, and that it keeps
the CLI's contract (exit codes, one-line errors) without importing the CLI framework."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from drkit.errors import OperationError, UsageError
from drkit.wal.commands import COMMAND_ENV, restore_command
from drkit.wal.entry import parse as parse_wal_command
from drkit.wal.envfile import apply_env_file, write_env_file


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["wal-push", "prod", "pg_wal/0001"],
            ("wal-push", ["prod", "pg_wal/0001"], None, None, None),
        ),
        (
            ["--policy-dir", "/p", "wal-push", "prod", "x"],
            ("wal-push", ["prod", "x"], "/p", None, None),
        ),
        (
            ["wal-fetch", "prod", "0001", "pg_wal/RECOVERYXLOG", "--policy-dir=/p"],
            ("wal-fetch", ["prod", "0001", "pg_wal/RECOVERYXLOG"], "/p", None, None),
        ),
        (
            ["wal-fetch", "--repo", "offsite", "prod", "0001", "pg_wal/RECOVERYXLOG"],
            ("wal-fetch", ["prod", "0001", "pg_wal/RECOVERYXLOG"], None, None, "offsite"),
        ),
        (["wal-push", "prod", "x", "--repo", "offsite"], None),  # the full CLI refuses it
        (["wal-fetch", "prod", "0001", "x", "--repo="], None),
        (
            ["wal-push", "prod", "x", "--policy-dir", "/p", "--env-file", "/e/prod.json"],
            ("wal-push", ["prod", "x"], "/p", "/e/prod.json", None),
        ),
        (["wal-push", "prod", "x", "--env-file="], None),
        (["wal-push", "prod", "x", "--json"], None),  # machine output: the full CLI
        (["-v", "wal-push", "prod", "x"], None),
        (["wal-push", "prod"], None),  # a usage error is the CLI's to explain
        (["wal-fetch", "prod", "a"], None),
        (["wal-push", "prod", "x", "--policy-dir"], None),
        (["backup", "prod"], None),
        (["wal-push", "--help"], None),
        ([], None),
    ],
)
def test_which_lines_take_the_lean_path(
    argv: list[str], expected: tuple[str, list[str], str | None, str | None, str | None] | None
) -> None:
    assert parse_wal_command(argv) == expected


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_lean_path_does_not_load_the_cli_and_keeps_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "prod.yaml").write_text("environment: prod\nrepository: {url: 'file:///nowhere'\n")
    probe = (
        "import sys\n"
        "from drkit.cli.entry import main\n"
        "try:\n"
        f"    main(['wal-fetch', 'prod', '000000010000000000000001', '{tmp_path}/x',"
        f" '--policy-dir', '{tmp_path}'])\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'typer' in sys.modules, 'rich' in sys.modules)\n"
    )
    done = _run(probe)
    assert done.stdout.split() == ["1", "False", "False"], done.stderr
    assert done.stderr.startswith("drkit: wal-fetch 000000010000000000000001: ")
    assert "Traceback" not in done.stderr
    push = _run(
        probe.replace("'wal-fetch', 'prod', '000000010000000000000001'", "'wal-push', 'prod'")
    )
    assert push.stdout.split() == ["2", "False", "False"], push.stderr  # a broken policy: 2
    assert push.stderr.startswith("drkit: error: ") and len(push.stderr.splitlines()) == 1
    assert "prod.yaml" in push.stderr


def _modules_after(call: str) -> set[str]:
    """The modules a fresh interpreter holds after ``call`` of drkit.cli's main or run
    (SystemExit caught)."""
    probe = (
        "import sys\n"
        f"from drkit.cli import {call.split('(')[0]}\n"
        f"try:\n    {call}\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = _run(probe)
    return set(done.stderr.split())


def test_version_is_answered_before_the_cli_is_imported() -> None:
    done = _run("from drkit.cli import main\nmain(['--version'])")
    assert done.returncode == 0 and done.stdout == "drkit 0.1.0\n", done.stderr
    loaded = _modules_after("main(['--version'])")
    assert "typer" not in loaded and "rich" not in loaded and "drkit.cli.app" not in loaded


def test_a_command_imports_its_own_module_only() -> None:
    commands = {"backup", "check", "demo", "drill", "policy", "restore", "sanitize",
                "schedule", "status", "wal"}  # fmt: skip
    listed = _modules_after("run(['--help'])")
    assert not {f"drkit.cli.{m}" for m in commands} & listed  # the table says it all
    assert "rich" not in listed and "pydantic" not in listed
    backup = _modules_after("run(['backup', '--help'])")
    assert {f"drkit.cli.{m}" for m in commands} & backup == {"drkit.cli.backup"}
    assert "rich" not in backup


def test_an_env_file_is_applied_only_when_nobody_else_could_have_written_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What archive_command reads before the policy decides where WAL goes: a file in a
    tree others can write, open to others, another user's or not drkit's is refused."""
    monkeypatch.setenv("DRKIT_ENV_DIR", str(tmp_path / "env"))  # below /tmp: anyone's
    with pytest.raises(UsageError, match="writable by group or others"):
        write_env_file("prod", tmp_path, {"DRKIT_I21_A": "x"}, None)
    Path("/var/lib/drkit").mkdir(parents=True, exist_ok=True)
    safe = Path(tempfile.mkdtemp(prefix="envfile-test-", dir="/var/lib/drkit"))
    try:
        monkeypatch.setenv("DRKIT_ENV_DIR", str(safe / "env"))
        monkeypatch.setenv("DRKIT_I21_A", "from the server's environment")
        monkeypatch.setenv("DRKIT_I21_B", "stale")
        values = {"DRKIT_I21_A": "resolved", "DRKIT_I21_B": None}
        path = write_env_file("prod", tmp_path, values, None)
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        assert sorted(apply_env_file(path)) == ["DRKIT_I21_A", "DRKIT_I21_B"]
        assert os.environ["DRKIT_I21_A"] == "resolved" and "DRKIT_I21_B" not in os.environ
        path.chmod(0o640)
        with pytest.raises(OperationError, match="open to others"):
            apply_env_file(path)
        path.chmod(0o600)
        os.chown(path, 65534, 65534)
        with pytest.raises(OperationError, match="owned by uid 65534"):
            apply_env_file(path)
        os.chown(path, 0, 0)
        path.write_text('{"set": {"A": 1}}')
        with pytest.raises(OperationError, match="not one drkit wrote"):
            apply_env_file(path)
        path.unlink()
        with pytest.raises(OperationError, match="is missing") as missing:
            apply_env_file(path)
        assert "resolved" not in str(missing.value)
    finally:
        shutil.rmtree(safe, ignore_errors=True)


def test_a_restore_command_from_a_copy_names_it_in_both_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean = shlex.split(restore_command("prod", tmp_path, None, repo="offsite"))
    at = lean.index("fetch")
    assert lean[at : at + 4] == ["fetch", "--repo", "offsite", "prod"]
    primary = shlex.split(restore_command("prod", tmp_path, None))
    assert "--repo" not in primary  # older lines and primary ones keep their shape
    monkeypatch.setenv(COMMAND_ENV, "drkit")
    plain = shlex.split(restore_command("prod", tmp_path, None, repo="offsite"))
    parsed = parse_wal_command(plain[1:])
    assert parsed is not None and parsed[0] == "wal-fetch" and parsed[4] == "offsite"
