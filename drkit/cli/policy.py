"""Policy and set-up commands: ``policy check`` (offline), ``check`` (the chain end to
end) and ``archive-command`` (the lines PostgreSQL runs)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from drkit.cli.app import app
from drkit.cli.common import EnvArg, JsonOpt, PolicyDirOpt, emit_json, load, out, settle, state
from drkit.errors import CheckFailed, DrkitError, PolicyError, UsageError
from drkit.pg.cluster import cluster_os_user
from drkit.walcmd import archive_command, prepare_file_repository, reachable_by, restore_command

# -- policy ------------------------------------------------------------------------

policy_app = typer.Typer(help="Validate policies and rules files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    env: Annotated[str | None, typer.Argument(help="Only this environment.")] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Validate policies (and sanitize rules files); print the resolved config, secrets masked."""
    from drkit.config import Policy, check_policies  # lazy: pydantic costs ~0.3 s

    st = settle(json_out, policy_dir)
    results: dict[str, Any] = {}
    problems: list[str] = []
    for name, outcome in check_policies([env] if env else None, st.policy_dir):
        if isinstance(outcome, Policy):
            results[name] = {"ok": True, "policy": outcome.masked()}
        else:
            results[name] = {"ok": False, "error": outcome.message}
            problems.append(outcome.message)
    rules = _check_rules_files(env)
    problems += [message for message in rules.values() if message]
    if st.json:
        emit_json(
            {
                "ok": not problems,
                "policies": results,
                "rules": {p: {"ok": not m, "error": m} for p, m in rules.items()},
            }
        )
    else:
        import yaml  # lazy: only here, and drkit.config has loaded it by now

        for name, result in results.items():
            if result["ok"]:
                out.print(f"[green]✓[/green] policy [bold]{name}[/bold]")
                out.print(yaml.safe_dump(result["policy"], sort_keys=False).rstrip(), markup=False)
            else:
                out.print(f"[red]✗[/red] policy [bold]{name}[/bold]: ", end="")
                out.print(result["error"], markup=False)
        for path, message in rules.items():
            if message:
                out.print(f"[red]✗[/red] rules {path}: ", end="")
                out.print(message, markup=False)
            else:
                out.print(f"[green]✓[/green] rules {path}")
    if problems:
        raise PolicyError(
            problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )


def _check_rules_files(env: str | None) -> dict[str, str]:
    """Validate the sanitize rules files next to the policies (offline)."""
    from drkit.config import resolve_policy_dir  # lazy: pydantic costs ~0.3 s
    from drkit.sanitize import load_rules  # lazy: psycopg, numpy, sqlglot

    candidates = [
        Path("sanitize_rules"),
        resolve_policy_dir(state.policy_dir).parent / "sanitize_rules",
    ]
    seen: dict[str, str] = {}
    for directory in candidates:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            key = str(path.resolve())
            if key in {str(Path(p).resolve()) for p in seen}:
                continue
            if (
                env
                and not path.stem.startswith(f"{env}-to-")
                and not path.stem.endswith(f"-to-{env}")
            ):
                continue
            try:
                load_rules(path)
                seen[str(path)] = ""
            except DrkitError as exc:
                seen[str(path)] = str(exc)
    return seen


# -- online checks and archiving set-up ------------------------------------------------


@app.command("check")
def check(env: EnvArg, json_out: JsonOpt = False, policy_dir: PolicyDirOpt = None) -> None:
    """Prove the chain end to end: login, privileges, archive round trip, repository, keys.

    One line per check; exit 3 when any fails.  `drkit policy check` stays offline."""
    from drkit.preflight import run_checks  # lazy: pydantic and psycopg

    st = settle(json_out, policy_dir)
    report = run_checks(load(env), st.policy_dir)
    if st.json:
        emit_json(report.to_dict())
    else:
        for result in report.results:
            mark = {"PASS": "[green]PASS[/green]", "WARN": "[yellow]WARN[/yellow]"}.get(
                result.status, "[red]FAIL[/red]"
            )
            out.print(f"{mark} {result.name}: ", end="")
            out.print(result.detail, markup=False, highlight=False)
    if not report.ok:
        first = report.failures[0]
        more = len(report.failures) - 1
        raise CheckFailed(
            f"{env}: {first.name}: {first.detail}" + (f" (and {more} more)" if more else "")
        )


@app.command("archive-command")
def archive_command_lines(
    env: EnvArg,
    os_user: Annotated[
        str | None,
        typer.Option(
            "--os-user",
            metavar="USER",
            help="The OS user the PostgreSQL server runs as (default: postgres when run as "
            "root, else the current user).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Print archive_command and restore_command lines that work for this install.

    The lines are tested: the server's OS user must be able to start drkit and, for a
    file:// repository, write into it (drkit prepares both where it can)."""
    from drkit.config import resolve_policy_dir  # lazy: pydantic costs ~0.3 s

    st = settle(json_out, policy_dir)
    policy = load(env)
    user = os_user or cluster_os_user()
    if user is not None and user == _current_user():
        user = None
    if policy.repository.url.startswith("file://"):
        prepare_file_repository(policy.repository.url, env, user)
    directory = resolve_policy_dir(st.policy_dir)
    policy_file = directory / f"{env}.yaml"
    if user is not None and not reachable_by(policy_file, user):
        raise UsageError(
            f"{policy_file} is not reachable by the OS user {user}, who runs archive_command: "
            "move the policies to a directory it can read (e.g. /etc/drkit/policies) "
            "and pass --policy-dir"
        )
    archive = archive_command(env, directory, user)
    restore_line = restore_command(env, directory, user)
    if st.json:
        emit_json(
            {
                "ok": True,
                "environment": env,
                "os_user": user or _current_user(),
                "archive_mode": "on",
                "archive_command": archive,
                "restore_command": restore_line,
            }
        )
        return
    quote = "'"
    out.print("# postgresql.conf (or ALTER SYSTEM SET ...), then restart the server", markup=False)
    out.print("archive_mode = on", markup=False, highlight=False)
    for name, line in (("archive_command", archive), ("restore_command", restore_line)):
        out.print(
            f"{name} = {quote}{line.replace(quote, quote * 2)}{quote}",
            markup=False,
            highlight=False,
        )


def _current_user() -> str:
    return getpass.getuser()
