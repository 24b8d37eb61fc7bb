"""``drkit check``: the chain proved end to end (database login and privileges, the
archive round trip, the repository, the keys), one line per check, exit 3 when any
fails.  ``drkit policy check`` is its offline counterpart."""

from __future__ import annotations

import typer

from drkit.cli.common import EnvArg, JsonOpt, PolicyDirOpt, emit_json, load, out, settle
from drkit.errors import CheckFailed

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()


@commands.command("check")
def check(env: EnvArg, json_out: JsonOpt = False, policy_dir: PolicyDirOpt = None) -> None:
    """Prove the chain end to end: login, privileges, archive round trip, repository, keys.

    One line per check; exit 3 when any fails.  `drkit policy check` stays offline."""
    from drkit.preflight import run_checks  # lazy: pydantic and psycopg

    st = settle(json_out, policy_dir)
    report = run_checks(load(env), st.policy_dir)
    if st.json:
        emit_json(report.document())
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
