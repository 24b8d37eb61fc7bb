"""``drkit policy check``: policies and the sanitize rules files beside them validated
offline, the resolved config printed with secrets masked (``drkit check`` is the online
counterpart)."""

from __future__ import annotations

from typing import Annotated

import typer

from drkit.cli.common import JsonOpt, PolicyDirOpt, emit_json, out, settle
from drkit.errors import PolicyError

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
    from drkit.policycheck import check_policy_files  # lazy: pydantic costs ~0.3 s

    st = settle(json_out, policy_dir)
    checked = check_policy_files(env, st.policy_dir)
    if st.json:
        emit_json(checked)
    else:
        import yaml  # lazy: only here, and drkit.config has loaded it by now

        for name, result in checked.policies.items():
            if result.ok:
                out.print(f"[green]✓[/green] policy [bold]{name}[/bold]")
                out.print(yaml.safe_dump(result.policy, sort_keys=False).rstrip(), markup=False)
            else:
                out.print(f"[red]✗[/red] policy [bold]{name}[/bold]: ", end="")
                out.print(result.error, markup=False)
        for path, rules in checked.rules.items():
            if rules.error:
                out.print(f"[red]✗[/red] rules {path}: ", end="")
                out.print(rules.error, markup=False)
            else:
                out.print(f"[green]✓[/green] rules {path}")
    problems = checked.problems()
    if problems:
        raise PolicyError(
            problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )
