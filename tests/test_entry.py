"""The lean entry for PostgreSQL's WAL commands: which lines take it, and that it keeps
the CLI's contract (exit codes, one-line errors) without importing the CLI framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drkit.cli.entry import parse_wal_command


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
