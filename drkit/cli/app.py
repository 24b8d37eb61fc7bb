"""The typer app and its global options: -v, -q, --json, --log-level,
--log-format and --policy-dir, which :func:`drkit.cli.main.run` also accepts after
the command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from drkit import __version__
from drkit.cli.common import JsonOpt, PolicyDirOpt, state
from drkit.cli.logconfig import configure_logging
from drkit.errors import UsageError

app = typer.Typer(
    name="drkit",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"drkit {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    policy_dir: PolicyDirOpt = None,
    json_out: JsonOpt = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Debug logging and tracebacks.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Errors only: no progress, no warnings.")
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="debug|info|warning|error",
            help="Log level (default warning; -v is debug, -q is error).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", metavar="text|json", help="Log lines as text or one JSON object each."
        ),
    ] = "text",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Backups, point-in-time recovery, sanitized copies and restore drills for PostgreSQL.

    Global options (-v, -q, --json, --log-level, --log-format, --policy-dir) go before or
    after the command.  ENV is the stem of a policy file (policies/ENV.yaml).  Reference:
    docs/cli.md, docs/policy.md, docs/sanitize-rules.md; the exit codes follow."""
    if verbose and quiet:
        raise UsageError("-v and -q contradict each other: give one")
    state.policy_dir = policy_dir
    state.json = json_out
    state.verbose = verbose
    state.quiet = quiet
    level = "debug" if verbose else "error" if quiet else (log_level or "warning").lower()
    try:  # every record is masked (botocore's debug log prints credentials)
        configure_logging(level, log_format.lower())
    except ValueError as exc:
        raise UsageError(f"--log-level/--log-format: {exc}") from None
