"""The application: the typer app with its global options, the table of commands, and
:func:`run`, which runs one command line.

A command's module is imported only when that command runs (click's LazyGroup pattern):
``drkit backup`` pays for the backup commands, not for the scheduler, the drill or
sanitize.  ``drkit --help`` lists every command from :data:`COMMANDS`, which holds each
command's module and the first paragraph of its help, in the order the help lists them.
A new command is a function on its group module's ``commands`` Typer and a line in
:data:`COMMANDS` (tests/cli/test_docs.py fails on a command the table does not list).

The global options (-v, -q, --json, --log-level, --log-format, --policy-dir) work before
or after the command: :func:`hoist_global_options` moves those written after it in front.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group_from_info
from typer.models import TyperInfo

from drkit import VERSION_LINE
from drkit.cli.common import JsonOpt, PolicyDirOpt, state
from drkit.cli.helptext import polish
from drkit.cli.outcome import finish, invoke, lost_stdout
from drkit.errors import UsageError
from drkit.logconfig import configure_logging


@dataclass(frozen=True)
class Listed:
    """A command as ``drkit --help`` lists it before its module is imported."""

    #: ``drkit.cli.<module>`` registers it on its ``commands`` Typer
    module: str
    #: the first paragraph of its help (tests/cli/test_docs.py holds it to the command's own)
    help: str


#: every command and group, in the order ``drkit --help`` lists them
COMMANDS: dict[str, Listed] = {
    "check": Listed(
        "check",
        "Prove the chain end to end: login, privileges, archive round trip, repository, keys.",
    ),
    "archive-command": Listed(
        "wal", "Print archive_command and restore_command lines that work for this install."
    ),
    "backup": Listed(
        "backup",
        "Take a logical backup (pg_dump per database) or, with --physical, a base backup.",
    ),
    "backups": Listed(
        "backup", "List backups: id, kind, started, duration, size, databases, retention tiers."
    ),
    "restore-point": Listed(
        "backup", "Create a named restore point, wait until its WAL is archived, and record it."
    ),
    "verify": Listed(
        "backup",
        "Re-read stored objects: sizes, sha256, decoding, and the WAL chain of physical backups.",
    ),
    "prune": Listed("backup", "Apply the retention policy (grandfather-father-son)."),
    "copy": Listed(
        "backup", "Copy the backups and WAL each copy lacks into the policy's copies, verified."
    ),
    "keep": Listed(
        "backup",
        "Keep one backup through prune, until a date or until released (shown in backups).",
    ),
    "delete": Listed(
        "backup",
        "Delete one backup; refuses the newest, a parent of an incremental, a kept or locked one.",
    ),
    "restore": Listed(
        "restore", "Logical restore, or with --point-in-time a physical point-in-time recovery."
    ),
    "wal-search": Listed(
        "restore",
        "List the transactions that touched a table in the archived WAL, with restore flags.",
    ),
    "wal-push": Listed("wal", "Archive one WAL segment or history file (archive_command)."),
    "promote-timeline": Listed(
        "wal", "Record a timeline as production's: `latest` restores and drills follow it."
    ),
    "wal-fetch": Listed(
        "wal",
        "Fetch one WAL file from the archive (restore_command); exit 1 when it does not exist.",
    ),
    "wal-receive": Listed(
        "wal",
        "Stream WAL from the slot drkit_ENV into the repository (policy: wal_streaming).",
    ),
    "drill": Listed(
        "drill",
        "Restore drill: restore into a scratch cluster, measure RTO/RPO, validate, report.",
    ),
    "status": Listed(
        "status", "Current RPO exposure, last backup, last archived WAL, last drill, objectives."
    ),
    "demo": Listed(
        "demo", "Self-contained sandbox: the whole workflow on a throwaway PostgreSQL, no setup."
    ),
    "policy": Listed("policy", "Validate policies and rules files."),
    "sanitize": Listed(
        "sanitize",
        "Copy SRC's data into DST through the sanitize rules: drkit sanitize SRC DST "
        "[OPTIONS] (--rules, --from-backup, --dry-run, --json and the others: drkit sanitize "
        "SRC DST --help), or the subcommands check, scan and init.",
    ),
    "schedule": Listed("schedule", "The scheduler daemon."),
}


class CommandTable(TyperGroup):
    """The root group: every command known from :data:`COMMANDS`, each built from its
    module's ``commands`` Typer the first time it is asked for."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        #: module -> the click group of its commands, built once
        self._groups: dict[str, TyperGroup] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        listed = COMMANDS.get(cmd_name)
        if listed is not None and cmd_name not in self.commands:
            self.commands[cmd_name] = self._module_group(listed.module).commands[cmd_name]
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in COMMANDS:  # a typo: typer suggests from every command
            self.load_all()
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The list ``drkit --help`` shows, from the table: no command module imported."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, TyperCommand(name=name, help=listed.help).get_short_help_str(limit))
            for name, listed in COMMANDS.items()
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def load_all(self) -> None:
        """Build every command, in the table's order (the docs and tests walk them all)."""
        built = {name: self.get_command(None, name) for name in COMMANDS}
        self.commands.clear()
        self.commands.update(built)

    def _module_group(self, module: str) -> TyperGroup:
        """The click group of ``drkit.cli.<module>``'s commands, built as typer builds the
        root's own (the root's markup and exception settings), its help polished."""
        if module not in self._groups:
            commands = import_module(f"drkit.cli.{module}").commands
            group = get_group_from_info(
                TyperInfo(commands),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
            for command in group.commands.values():
                polish(command, root=False)
            self._groups[module] = group
        return self._groups[module]


app = typer.Typer(
    name="drkit",
    cls=CommandTable,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(VERSION_LINE + "\n")
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


def root_command() -> CommandTable:
    """The root of the command tree, its help polished (:mod:`drkit.cli.helptext`); its
    commands are built as they are asked for."""
    root = typer.main.get_command(app)
    assert isinstance(root, CommandTable)
    polish(root)
    return root


def click_command() -> CommandTable:
    """The whole command tree, every command built (the docs generator walks it)."""
    root = root_command()
    root.load_all()
    return root


#: global options that may also follow the command
_GLOBAL_FLAGS = frozenset({"-v", "--verbose", "-q", "--quiet", "--json"})
_GLOBAL_VALUED = frozenset({"--log-level", "--log-format", "--policy-dir"})


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options written after the command in front of it (up to ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        elif "=" in arg and arg.split("=", 1)[0] in _GLOBAL_VALUED:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def run(args: list[str]) -> int:
    """Run one command line; returns the exit code.  Under ``--json`` stdout gets exactly
    one document with ``ok`` (and ``error`` on failure), whatever happened."""
    args = hoist_global_options(list(args))
    verbose = "-v" in args or "--verbose" in args
    json_mode = "--json" in args
    state.document = None
    state.settled = False
    code, line = invoke(root_command(), args, verbose=verbose)
    if state.settled:  # e.g. a published copy whose report met a closed stdout
        code, line = 0, None
    try:
        finish(code, line, json_mode=json_mode or state.json)
    except OSError:  # stdout is gone (a closed pipe): the document is lost
        code = lost_stdout(code)
    return code
