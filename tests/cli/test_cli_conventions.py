"""The command line's conventions: a misspelt command names the nearest one (one line,
exit 2), and tables read by scripts — piped or redirected, ``drkit backups`` prints
plain, whole, greppable columns (one line a backup, no box, no fold, no ellipsis),
whatever the terminal width says."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from drkit.catalog import Manifest, make_backup_id, write_manifest
from drkit.config import load_policy
from drkit.storage.repository import Repository


def policy_with_backups(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """A file repository holding ``count`` logical backups of six long-named databases."""
    policies = tmp_path / "policies"
    policies.mkdir()
    doc = {
        "environment": "prod",
        "database": {"url": "postgresql://u:sekret@127.0.0.1:1/app"},
        "repository": {"url": f"file://{tmp_path}/a-rather-long-repository-directory-name"},
    }
    (policies / "prod.yaml").write_text(yaml.safe_dump(doc))
    repo = Repository.for_policy(load_policy("prod", policies))
    databases = [f"tenant_database_number_{i}" for i in range(6)]
    ids = []
    for n in range(count):
        started = datetime(2026, 11, 20 + n, 1, 0, tzinfo=UTC)
        backup_id = make_backup_id(started, "logical")
        objects = [
            repo.store(f"backups/{backup_id}/{db}.dump", io.BytesIO(b"d" * 1000))
            for db in databases
        ]
        write_manifest(
            repo,
            Manifest(
                id=backup_id,
                kind="logical",
                environment="prod",
                databases=databases,
                server_version="16.4",
                started_at=started,
                finished_at=started + timedelta(minutes=5),
                consistent_at=started,
                objects=objects,
            ),
        )
        ids.append(backup_id)
    return policies, ids


def test_backups_piped_are_whole_greppable_lines(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    policies, ids = policy_with_backups(tmp_path, 2)
    # a narrow terminal width must not matter when stdout is no terminal
    listed = run_cli("backups", "prod", policy_dir=policies, env={"COLUMNS": "50"})
    assert listed.code == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "…" not in listed.stdout and not re.search(r"[│┃━─┏┗]", listed.stdout)
    header = next(line for line in lines if line.split()[:2] == ["id", "kind"])
    assert header.split() == ["id", "kind", "started", "duration", "size", "databases", "tiers"]
    databases = ", ".join(f"tenant_database_number_{i}" for i in range(6))
    for backup_id in ids:
        (row,) = [line for line in lines if backup_id in line]  # one line a backup
        assert row.startswith(backup_id + "  ")
        assert databases in row and "logical" in row
    # columns line up: each header starts where its values start
    rows = [line for line in lines if line.split()[0] in ids]
    start = header.index("kind")
    assert all(row[start:].startswith("logical") for row in rows)
    assert "sekret" not in listed.stdout + listed.stderr


def test_sanitize_report_piped_is_plain_columns(capsys) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from drkit.cli.render import print_sanitize_report

    long_name = "public.a_table_with_a_name_long_enough_to_be_folded_by_any_terminal"
    table = SimpleNamespace(
        table=long_name,
        action="copy",
        rows=1234567,
        selection="all",
        strategies={"email": "email", "[bold]name[/bold]": "fake"},
    )
    report = SimpleNamespace(
        src="prod", dst="staging", mode="dry-run", source="live", tables=[table],
        unlisted_tables=[], unlisted_columns=[], pii_kept=[], target_tables=0, phases={},
        leak=None, rows=0,
    )  # fmt: skip
    print_sanitize_report(report)
    text = capsys.readouterr().out
    (row,) = [line for line in text.splitlines() if line.startswith(long_name)]
    assert row.split("  ")[0] == long_name and "1,234,567" in row
    assert "[bold]name[/bold]=fake" in row  # data, never markup
    assert "…" not in text and "│" not in text


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["backp", "prod"], "Did you mean 'backup'"),
        (["schedule", "rnu"], "Did you mean 'run'"),
        (["sanitize", "chek", "prod", "staging"], "'chek' is neither a command nor an "
         "environment (did you mean check?)"),
        (["sanitize", "sacn", "prod"], "(did you mean scan?)"),
    ],
)  # fmt: skip
def test_a_misspelt_command_names_the_nearest_one(
    argv: list[str],
    suggestion: str,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    result = run_cli(*argv)
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("drkit: error: ")
    assert suggestion in result.stderr


#: command modules whose --json documents are all models core returns (the others follow)
MODEL_ONLY = ("backup.py", "wal.py", "policy.py")


@pytest.mark.parametrize("module", MODEL_ONLY)
def test_a_command_emits_the_model_core_returns_never_a_dict_it_builds(module: str) -> None:
    """One description per document: a dict assembled in the command (a literal, a
    ``dict(...)``, a comprehension) is a second description of what the model says."""
    import ast

    path = Path(__file__).resolve().parents[2] / "drkit" / "cli" / module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    built = [
        f"{module}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "emit_json"
        and any(
            isinstance(arg, ast.Dict | ast.DictComp)
            or (isinstance(arg, ast.Call) and getattr(arg.func, "id", None) == "dict")
            for arg in node.args
        )
    ]
    assert not built, f"emit_json of a dict built in the command: {built}"
