"""``drkit policy check``: policies and the sanitize rules files beside them validated
offline, the resolved config printed with secrets masked (``drkit check`` is the online
counterpart)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from drkit.cli.common import JsonOpt, PolicyDirOpt, emit_json, out, settle, state
from drkit.errors import DrkitError, PolicyError

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()

policy_app = typer.Typer(help="Validate policies and rules files.", no_args_is_help=True)
commands.add_typer(policy_app, name="policy")


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
