"""docs/ is generated from the code and stays current; the schemas accept exactly what
drkit accepts; ``--help`` reads like the reference in docs/cli.md.

Everything runs through real entry points: ``python -m drkit.docgen`` and
``python -m drkit ... --help`` in subprocesses, the real policy and rules loaders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.config import parse_policy
from drkit.errors import EXIT_CODES, DrkitError, PolicyError, RulesError
from drkit.sanitize import parse_rules

try:
    import jsonschema
except ImportError:  # pragma: no cover - a missing test dependency fails, never skips
    jsonschema = None

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SCHEMAS = DOCS / "schemas"
POLICIES = sorted((REPO / "policies").glob("*.yaml"))
RULES = sorted((REPO / "sanitize_rules").glob("*.yaml"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "100"
    return env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120
    )


def validator(name: str) -> Any:
    assert jsonschema is not None, "install jsonschema: pip install -e '.[test]'"
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(name: str, document: Any) -> list[str]:
    return [error.message for error in validator(name).iter_errors(document)]


# ---------------------------------------------------------------------------
# The committed docs are what the generator writes today
# ---------------------------------------------------------------------------


def test_committed_docs_are_current(tmp_path: Path) -> None:
    result = run("-m", "drkit.docgen", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "python -m drkit.docgen wrote nothing"
    stale = [
        str(relative)
        for relative in generated
        if not (DOCS / relative).is_file()
        or (DOCS / relative).read_text(encoding="utf-8")
        != (tmp_path / relative).read_text(encoding="utf-8")
    ]
    assert not stale, f"docs/ is stale ({', '.join(stale)}): run python -m drkit.docgen"


def test_docgen_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert run("-m", "drkit.docgen", "--out", str(tmp_path)).returncode == 0
    assert run("-m", "drkit.docgen", "--out", str(tmp_path), "--check").returncode == 0
    (tmp_path / "cli.md").write_text("old\n", encoding="utf-8")
    result = run("-m", "drkit.docgen", "--out", str(tmp_path), "--check")
    assert result.returncode == 1
    assert "cli.md" in result.stderr and "python -m drkit.docgen" in result.stderr
    assert (tmp_path / "cli.md").read_text(encoding="utf-8") == "old\n"  # --check writes nothing


def test_every_key_has_a_meaning() -> None:
    result = run("-m", "drkit.docgen", "--out", str(REPO / "docs"), "--check")
    assert "no meaning written" not in result.stderr, result.stderr


def test_cli_reference_covers_every_command_and_option() -> None:
    from drkit.cli import click_command

    text = (DOCS / "cli.md").read_text(encoding="utf-8")

    def walk(command: Any, path: str) -> None:
        assert f"## `{path}`" in text, f"{path} missing from docs/cli.md"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt != "--help":
                    assert f"`{opt}`" in text, f"{path} {opt} missing from docs/cli.md"
        for name, sub in getattr(command, "commands", {}).items():
            default = name == getattr(command, "default_command", None)
            walk(sub, "drkit sanitize SRC DST" if default else f"{path} {name}")

    walk(click_command(), "drkit")


# ---------------------------------------------------------------------------
# Schemas: the shipped files pass, broken ones fail, as the loaders decide
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_shipped_policy_is_valid_against_the_schema(path: Path) -> None:
    assert schema_errors("policy", yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_shipped_rules_are_valid_against_the_schema(path: Path) -> None:
    assert schema_errors("sanitize-rules", yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("path", POLICIES + RULES, ids=lambda p: p.name)
def test_shipped_files_name_their_schema_for_editors(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{path.name}: first line must be '# yaml-language-server: $schema=...'"
    expected = "policy" if path.parent.name == "policies" else "sanitize-rules"
    target = (path.parent / match.group(1)).resolve()
    assert target == (SCHEMAS / f"{expected}.schema.json").resolve()
    assert target.is_file()


POLICY = {
    "environment": "staging",
    "database": {"url": "postgresql://app@db/app"},
    "repository": {"url": "file:///var/lib/drkit/repo"},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return document


BROKEN_POLICIES = [
    ("unknown top-level key", _with(POLICY, "retension", {"daily": 3})),
    ("unknown nested key", _with(POLICY, "repository.compresion", {"level": 3})),
    ("number as a string", _with(POLICY, "retention.daily", "thirty")),
    ("negative count", _with(POLICY, "retention.daily", -1)),
    ("bool as a word", _with(POLICY, "wal_archiving", "yes please")),
    ("unknown algorithm", _with(POLICY, "repository.compression.algorithm", "lz4")),
    ("duration in words", _with(POLICY, "objectives.rpo", "one hour")),
    ("rank as a string", _with(POLICY, "rank", "2")),
    ("protected as a variable", _with(POLICY, "protected", "${PROTECT:-true}")),
    ("protected as a word", _with(POLICY, "protected", "yes")),
    ("missing database", {k: v for k, v in POLICY.items() if k != "database"}),
    ("sql check without query", _with(POLICY, "drill.checks.sql", [{"name": "x"}])),
    ("database list as a string", _with(POLICY, "database.databases", "app")),
]


@pytest.mark.parametrize(("why", "document"), BROKEN_POLICIES, ids=[b[0] for b in BROKEN_POLICIES])
def test_a_broken_policy_fails_the_schema_and_the_loader(why: str, document: Any) -> None:
    assert schema_errors("policy", document), f"the schema accepts a policy with {why}"
    with pytest.raises(PolicyError):
        parse_policy("staging", document, "staging.yaml")


GOOD_POLICIES = [
    ("minimal", POLICY),
    (
        "no environment key: the file's stem",
        {k: v for k, v in POLICY.items() if k != "environment"},
    ),
    ("${VAR} where a number goes", _with(POLICY, "retention.daily", "${DAILY:-7}")),
    ("${VAR} where a bool goes", _with(POLICY, "wal_archiving", "${ARCHIVE:-true}")),
    ("${VAR} for an algorithm", _with(POLICY, "repository.compression.algorithm", "${ALG:-gzip}")),
    ("duration as seconds", _with(POLICY, "objectives.rpo", 3600)),
    ("duration combined", _with(POLICY, "objectives.rto", "1h30m")),
    ("custom env with rank", {**POLICY, "environment": "qa", "rank": 1}),
    ("protected staging", _with(POLICY, "protected", True)),
]


@pytest.mark.parametrize(("why", "document"), GOOD_POLICIES, ids=[g[0] for g in GOOD_POLICIES])
def test_a_valid_policy_passes_the_schema_and_the_loader(why: str, document: Any) -> None:
    assert schema_errors("policy", document) == []
    parse_policy("staging", document, "staging.yaml")


RULES_DOC = {
    "version": 1,
    "from": "prod",
    "to": "staging",
    "salt": "0123456789abcdef",
    "tables": {
        "user": {
            "columns": {
                "id": "keep",
                "email": {"strategy": "email"},
                "name": {"strategy": "fake", "provider": "name"},
                "note": {"strategy": "json", "paths": {"$.a": "nullify"}},
            }
        },
        "vulnerability": {"copy": True, "columns": ["id", "cve"]},
        "audit": "skip",
    },
}

BROKEN_RULES = [
    ("unknown top-level key", {**RULES_DOC, "tabels": {}}),
    ("unknown strategy", _with(RULES_DOC, "tables.user.columns.id", "shred")),
    (
        "unknown strategy option",
        _with(RULES_DOC, "tables.user.columns.id", {"strategy": "hash", "size": 3}),
    ),
    ("strategy without its option", _with(RULES_DOC, "tables.user.columns.id", "constant")),
    ("mapping without strategy", _with(RULES_DOC, "tables.user.columns.id", {"value": 1})),
    (
        "hash too short",
        _with(RULES_DOC, "tables.user.columns.id", {"strategy": "hash", "length": 2}),
    ),
    ("unknown table key", _with(RULES_DOC, "tables.user.filter", "id > 1")),
    ("rows neither all nor none", _with(RULES_DOC, "tables.user.rows", "some")),
    (
        "template at a JSON path",
        _with(
            RULES_DOC,
            "tables.user.columns.note",
            {"strategy": "json", "paths": {"$.a": {"strategy": "template", "template": "x"}}},
        ),
    ),
    ("bad unlisted_tables", _with(RULES_DOC, "defaults.unlisted_tables", "maybe")),
    ("unknown pii kind", _with(RULES_DOC, "tables.user.columns.id", {"pii": ["zip"]})),
    (
        "a review on a masking strategy",
        _with(RULES_DOC, "tables.user.columns.id", {"strategy": "hash", "pii": "none"}),
    ),
    ("missing to", {k: v for k, v in RULES_DOC.items() if k != "to"}),
]


@pytest.mark.parametrize(("why", "document"), BROKEN_RULES, ids=[b[0] for b in BROKEN_RULES])
def test_broken_rules_fail_the_schema_and_the_loader(why: str, document: Any) -> None:
    assert schema_errors("sanitize-rules", document), f"the schema accepts rules with {why}"
    with pytest.raises(RulesError):
        parse_rules(document, "rules.yaml")


GOOD_RULES = [
    ("full", RULES_DOC),
    ("empty defaults and rules", {**RULES_DOC, "defaults": None, "tables": {"t": None}}),
    ("null columns and where", _with(RULES_DOC, "tables.t", {"columns": None, "where": None})),
    ("copy shorthand", _with(RULES_DOC, "tables.t", "copy")),
    (
        "${VAR} for an option",
        _with(RULES_DOC, "tables.t.columns.a", {"strategy": "hash", "length": "${LEN:-16}"}),
    ),
    ("mask by name", _with(RULES_DOC, "tables.t.columns.a", "mask")),
    ("a review", _with(RULES_DOC, "tables.t.columns.a", {"strategy": "keep", "pii": "none"})),
    ("a review, short", _with(RULES_DOC, "tables.t.columns.a", {"pii": ["ip", "phone"]})),
    ("where and rows", _with(RULES_DOC, "tables.t", {"rows": "none", "where": "id > 3"})),
    ("subset", {**RULES_DOC, "subset": {"start": {"table": "user", "where": "id % 10 = 0"}}}),
]


@pytest.mark.parametrize(("why", "document"), GOOD_RULES, ids=[g[0] for g in GOOD_RULES])
def test_valid_rules_pass_the_schema_and_the_loader(why: str, document: Any) -> None:
    assert schema_errors("sanitize-rules", document) == []
    parse_rules(document, "rules.yaml")


# ---------------------------------------------------------------------------
# Help texts, through the real CLI
# ---------------------------------------------------------------------------


def help_of(*args: str) -> str:
    result = run("-m", "drkit", *args, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def all_command_paths() -> list[list[str]]:
    from drkit.cli import click_command

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            default = name == getattr(command, "default_command", None)
            walk(sub, path + (["prod", "staging"] if default else [name]))

    walk(click_command(), [])
    return paths


def test_every_help_shows_names_not_python_types_and_ends_with_exit_codes() -> None:
    for path in all_command_paths():
        text = help_of(*path)
        where = "drkit " + " ".join(path)
        assert not re.search(r"<[a-z][a-z0-9 _\[\]|,]*>", text), (
            f"{where} --help shows a type:\n{text}"
        )
        assert not re.search(r"\{[a-z_]+\}", text), f"{where} --help shows {{name}}:\n{text}"
        assert "Exit codes:" in text, f"{where} --help does not give the exit codes"
        assert "130" in text.split("Exit codes:", 1)[1]
        assert "DESIGN" not in text, f"{where} --help points to DESIGN.md, outside the repository"


def test_main_help_lists_every_exit_code_with_its_meaning() -> None:
    text = " ".join(help_of().split())
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {' '.join(meaning.split())}" in text


def test_the_command_table_lists_every_command_as_it_describes_itself() -> None:
    """``drkit --help`` lists the commands from drkit.cli.app.COMMANDS without importing
    their modules: the table must hold every command, in help order, with its own help."""
    from importlib import import_module

    import typer
    from typer.core import TyperGroup

    from drkit.cli import click_command
    from drkit.cli.app import COMMANDS

    root = click_command()
    assert list(root.commands) == list(COMMANDS)
    for module in {listed.module for listed in COMMANDS.values()}:
        registered = typer.main.get_group(import_module(f"drkit.cli.{module}").commands)
        assert set(registered.commands) <= set(COMMANDS), f"drkit.cli.{module}: not in COMMANDS"
    for name, listed in COMMANDS.items():
        first = (root.commands[name].help or "").split("\n\n")[0]
        assert " ".join(first.split()) == " ".join(listed.help.split()), name
    for width in (40, 80, 200):
        ctx = typer.Context(root, info_name="drkit", terminal_width=width)
        from_table, from_commands = ctx.make_formatter(), ctx.make_formatter()
        root.format_commands(ctx, from_table)
        TyperGroup.format_commands(root, ctx, from_commands)
        assert from_table.getvalue() == from_commands.getvalue()


def test_every_drkit_error_code_is_documented() -> None:
    def classes(cls: type[DrkitError]) -> list[type[DrkitError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in classes(sub))]

    for cls in classes(DrkitError):
        assert cls.exit_code in EXIT_CODES, f"{cls.__name__}: exit {cls.exit_code} undocumented"


def test_sanitize_src_dst_help_reads_as_the_command_people_type() -> None:
    text = help_of("sanitize", "prod", "staging")
    assert text.startswith("Usage: drkit sanitize SRC DST [OPTIONS]")
    assert "sanitize run" not in text
    for flag in ("--rules FILE", "--from-backup ID|latest", "--jobs N", "--dry-run"):
        assert flag in text


def test_a_usage_error_in_sanitize_points_to_the_right_help() -> None:
    result = run("-m", "drkit", "sanitize", "prod", "staging", "--no-such-flag")
    assert result.returncode == 2
    assert "sanitize run" not in result.stderr
    assert "(see: drkit sanitize SRC DST --help)" in result.stderr


def test_demo_help_describes_every_step() -> None:
    text = " ".join(help_of("demo").split()).lower()
    steps = ["backup", "verify", "restore", "drill", "sanitize", "wal archiving", "base backup"]
    positions = [text.find(step) for step in [*steps, "point-in-time recovery"]]
    assert -1 not in positions, text
    assert positions == sorted(positions), f"steps out of order: {text}"


def test_restore_help_uses_the_contract_metavars() -> None:
    text = help_of("restore")
    assert "Usage: drkit restore [OPTIONS] ENV [ID|latest]" in text
    for flag in ("--table T", "--target-db URL", "--point-in-time TS|latest", "--jobs N"):
        assert flag in text


# ---------------------------------------------------------------------------
# User-facing files point inside the repository
# ---------------------------------------------------------------------------

USER_FACING = [
    REPO / "README.md",
    *sorted((REPO / "runbooks").glob("*.md")),
    *sorted(DOCS.glob("*.md")),
    *POLICIES,
    *RULES,
]


@pytest.mark.parametrize("path", USER_FACING, ids=lambda p: str(p.relative_to(REPO)))
def test_user_facing_files_link_only_to_files_in_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text, f"{path.name} points to DESIGN.md, outside the repository"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_drafted_rules_do_not_point_outside_the_repository() -> None:
    from drkit.sanitize import draft

    assert "DESIGN" not in Path(draft.__file__).read_text(encoding="utf-8")
