"""The command tree and the process entry: the one place exceptions become exit codes.

DrkitError subclasses carry their own code; usage errors are 2; Ctrl-C is 130; anything
unexpected is 1, with a traceback only under -v (DESIGN.md §1).  Importing the command
modules here registers them; :data:`HELP_ORDER` fixes the order ``drkit --help`` lists
them in.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

# importing a command module registers its commands on the app
from drkit.commands import backup, demo, drill, policy, restore, sanitize, schedule  # noqa: F401
from drkit.commands.app import app
from drkit.commands.common import err, state
from drkit.commands.render import print_traceback, write_document
from drkit.errors import Interrupted
from drkit.helptext import polish
from drkit.outcome import INTERRUPTED_LINE, failure

try:  # typer >= 0.20 ships its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exc  # type: ignore[no-redef]

#: the order ``drkit --help`` lists the commands, then the groups, in, whatever order the
#: command modules were imported in; a command missing here comes last
HELP_ORDER = (
    "check",
    "archive-command",
    "backup",
    "backups",
    "verify",
    "prune",
    "restore",
    "wal-push",
    "promote-timeline",
    "wal-fetch",
    "drill",
    "status",
    "demo",
    "policy",
    "sanitize",
    "schedule",
)


def _help_rank(info: Any) -> int:
    return HELP_ORDER.index(info.name) if info.name in HELP_ORDER else len(HELP_ORDER)


app.registered_commands.sort(key=_help_rank)
app.registered_groups.sort(key=_help_rank)


def click_command() -> Any:
    """The click command tree of :data:`app`, its help polished (drkit.helptext)."""
    return polish(typer.main.get_command(app))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    code = run(args)
    try:
        sys.stdout.flush()
    except OSError:  # stdout is gone (a closed pipe): the output is lost
        _quiet_stdout()
        code = code if state.settled else code or 1
    raise SystemExit(code)


def _quiet_stdout() -> None:
    """stdout is gone (a closed pipe): whatever is still written goes nowhere, so neither
    a later write nor the flush at exit fails."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


#: global options that may also follow the command (DESIGN.md §1)
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
    code, line = _run_app(args, verbose)
    if state.settled:  # e.g. a published copy whose report met a closed stdout
        code, line = 0, None
    if line:
        err.print(line, markup=False, highlight=False)
    if json_mode or state.json:
        message = line.removeprefix("drkit: error: ").removeprefix("drkit: ") if line else None
        if code != 0 and message is None:
            message = f"exit status {code}"
        try:
            write_document(state.document or {}, code, message)
        except OSError:  # stdout is gone (a closed pipe): the document is lost
            _quiet_stdout()
            code = code if state.settled else code or 1
    return code


def _run_app(args: list[str], verbose: bool) -> tuple[int, str | None]:
    """(exit code, the one error line or None)."""
    try:
        result = click_command().main(args=args, prog_name="drkit", standalone_mode=False)
        code = int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = int(exc.exit_code)
    except typer.Abort:
        return Interrupted.exit_code, INTERRUPTED_LINE
    except click_exc.ClickException as exc:
        message = exc.format_message()
        hint = ""
        if isinstance(exc, click_exc.UsageError) and exc.ctx is not None:
            hint = f" (see: {exc.ctx.command_path} --help)"
        return (
            2 if isinstance(exc, click_exc.UsageError) else exc.exit_code,
            f"drkit: error: {message}{hint}",
        )
    except BrokenPipeError:
        _quiet_stdout()
        return 1, None
    except SystemExit:  # rich ends the process this way when stdout is a closed pipe
        if state.settled:
            return 0, None
        raise
    except (Exception, KeyboardInterrupt) as exc:  # one line; a traceback only with -v
        if verbose and not isinstance(exc, KeyboardInterrupt):
            print_traceback()
        return failure(exc)
    # typer turns Ctrl-C into Exit(130)
    return code, INTERRUPTED_LINE if code == Interrupted.exit_code else None
