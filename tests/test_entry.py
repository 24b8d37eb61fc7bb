"""The lean entry for PostgreSQL's WAL commands: which lines take it, and that it keeps
the CLI's contract (exit codes, one-line errors) without importing the CLI framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drkit.wal.entry import parse as parse_wal_command


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["wal-push", "prod", "pg_wal/0001"], ("wal-push", ["prod", "pg_wal/0001"], None)),
        (
            ["--policy-dir", "/p", "wal-push", "prod", "x"],
            ("wal-push", ["prod", "x"], "/p"),
        ),
        (
            ["wal-fetch", "prod", "0001", "pg_wal/RECOVERYXLOG", "--policy-dir=/p"],
            ("wal-fetch", ["prod", "0001", "pg_wal/RECOVERYXLOG"], "/p"),
        ),
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
    argv: list[str], expected: tuple[str, list[str], str | None] | None
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
