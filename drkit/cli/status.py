"""``drkit status``: the objectives against what the repository holds (RPO exposure, last
backup, last archived WAL, last drill); exit 3 when one is breached."""

from __future__ import annotations

import typer

from drkit.cli.common import (
    EnvArg,
    JsonOpt,
    PolicyDirOpt,
    RepoOpt,
    emit_json,
    load,
    out,
    settle,
    state,
)
from drkit.errors import CheckFailed

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()


@commands.command("status")
def status(
    env: EnvArg,
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Current RPO exposure, last backup, last archived WAL, last drill, objectives."""
    from drkit.status import collect_status, render_status  # lazy: pydantic, ~0.3 s

    settle(json_out, policy_dir)
    report = collect_status(load(env, repo_name))
    if state.json:
        emit_json(report.document())
    else:
        for line in render_status(report):
            out.print(line, markup=False, highlight=False)
    if report.breached:
        raise CheckFailed(f"{env}: objective breached: {'; '.join(report.breached)}")
