"""The scheduler: ``schedule run`` (the daemon) and ``schedule show``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from drkit.cli.common import JsonOpt, PolicyDirOpt, emit_json, out, settle
from drkit.errors import UsageError

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()

schedule_app = typer.Typer(help="The scheduler daemon.", no_args_is_help=True)
commands.add_typer(schedule_app, name="schedule")


@schedule_app.command("run")
def schedule_run(
    envs: Annotated[list[str] | None, typer.Argument(metavar="[ENV...]")] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port", metavar="PORT", help="HTTP port for /, /metrics, /healthz and /status."
        ),
    ] = 9187,
    bind: Annotated[
        str,
        typer.Option(
            "--bind",
            metavar="ADDRESS",
            help="Address to listen on (a container binds 0.0.0.0 explicitly).",
        ),
    ] = "127.0.0.1",
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="A file holding a bearer token every path but /healthz then requires.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Run the scheduler daemon (the container's entry point)."""
    # lazy: APScheduler, ~0.5 s
    from drkit.schedule import read_token, run_daemon

    state = settle(json_out, policy_dir)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a TCP port (0-65535)")
    if not state.verbose:  # a daemon reports its jobs: INFO on stderr
        logging.getLogger("drkit").setLevel(logging.INFO)
    token = read_token(token_file) if token_file is not None else None
    run_daemon(envs or None, state.policy_dir, bind=bind, port=port, token=token)


@schedule_app.command("show")
def schedule_show(
    envs: Annotated[list[str] | None, typer.Argument(metavar="[ENV...]")] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Each scheduled job and its next run times."""
    from drkit.schedule import show_schedule  # lazy: APScheduler, ~0.5 s

    state = settle(json_out, policy_dir)
    shown = show_schedule(envs or None, state.policy_dir)
    if state.json:
        emit_json(shown)
        return
    if not shown.jobs:
        out.print("no scheduled jobs (no schedule entries in the policies)", markup=False)
        return
    for job in shown.jobs:
        runs = ", ".join(
            datetime.fromisoformat(r)
            .astimezone(ZoneInfo(job.timezone))
            .strftime("%a %Y-%m-%d %H:%M %Z")
            for r in job.next_runs
        )
        out.print(
            f"{job.env}/{job.job:<16} {job.cron:<14} ({job.timezone})  next: {runs or 'never'}",
            markup=False,
            highlight=False,
        )
