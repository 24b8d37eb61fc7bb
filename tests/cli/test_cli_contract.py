"""The command line's contract (docs/cli.md, docs/json.md, docs/exit-codes.md), through
the real CLI entry run in the test's process (``run_cli``: nothing here is about the
process itself).

Global options work before or after the command; under ``--json`` stdout holds exactly
one document with ``ok``, and a failure is ``{"ok": false, "error": {"code", "message"}}``;
``--log-format json`` gives one JSON object per log line; ``backups`` never cuts an id
and a repository that does not exist is an error, not "no backups".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget


def test_global_options_go_before_or_after_the_command(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    sample_db: tuple[str, str],
) -> None:
    policy_dir = make_policy("staging", sample_db[1], file_repo)
    for args in (
        ("--json", "-v", "backup", "staging"),
        ("backup", "staging", "--json", "-v"),
        ("backup", "staging", "-q", "--json", "--log-level", "info", "--log-format=json"),
    ):
        result = run_cli(*args, policy_dir=policy_dir)
        assert result.code == 0, (args, result.stderr)
        doc = result.json()
        assert doc["ok"] is True and doc["id"].endswith("-logical")
    info = run_cli(
        "backup", "staging", "--log-level", "info", "--log-format", "json", policy_dir=policy_dir
    )
    assert info.code == 0, info.stderr
    lines = [line for line in info.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any("started" in r["message"] and r["level"] == "info" for r in records)
    assert all(r["ts"].endswith("Z") for r in records)
    listed = run_cli("backups", "staging", "--json", policy_dir=policy_dir)
    assert listed.code == 0
    doc = listed.json()
    assert doc["ok"] is True and len(doc["backups"]) == 4
    contradictory = run_cli("backups", "staging", "-v", "-q", policy_dir=policy_dir)
    assert contradictory.code == 2


def test_failures_under_json_are_one_document_with_the_error(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    tmp_path: Path,
) -> None:
    policy_dir = make_policy("staging", "postgresql://u:pw@127.0.0.1:1/db", file_repo)
    unknown = run_cli("backups", "nosuchenv", "--json", policy_dir=policy_dir)
    assert unknown.code == 2
    doc = unknown.json()
    assert doc == {"ok": False, "error": {"code": 2, "message": doc["error"]["message"]}}
    assert "nosuchenv" in doc["error"]["message"]
    bad_flag = run_cli("--json", "backups", "staging", "--no-such-flag", policy_dir=policy_dir)
    assert bad_flag.code == 2 and bad_flag.json()["error"]["code"] == 2
    # a repository that does not exist is an error naming it, not "no backups"
    assert file_repo.root is not None
    shutil.rmtree(file_repo.root)
    missing = run_cli("backups", "staging", "--json", policy_dir=policy_dir)
    assert missing.code == 1
    error = missing.json()["error"]
    assert error["code"] == 1 and str(file_repo.root) in error["message"]
    text = run_cli("backups", "staging", policy_dir=policy_dir)
    assert text.code == 1 and "no backups" not in text.stdout
    assert str(file_repo.root) in text.stderr


def test_backups_never_cuts_an_id_on_a_narrow_terminal(
    run_cli: DrkitRunner,
    make_policy: PolicyWriter,
    file_repo: RepoTarget,
    sample_db: tuple[str, str],
) -> None:
    policy_dir = make_policy("staging", sample_db[1], file_repo)
    made = run_cli("backup", "staging", "--json", policy_dir=policy_dir, check=True).json()
    for columns in ("60", "80", "120"):
        listed = run_cli("backups", "staging", policy_dir=policy_dir, env={"COLUMNS": columns})
        assert listed.code == 0
        assert made["id"] in listed.stdout, (columns, listed.stdout)
