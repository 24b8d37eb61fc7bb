"""How a command line ends: its exit code, the one error line on stderr, and under
``--json`` the one document on stdout.

A DrkitError carries its own code and an unexpected exception is 1, both through
:func:`drkit.errors.failure` (the lean WAL entries end through it too); here are the
endings only the command-line framework has: usage errors are 2 with a pointer to the
command's help, Ctrl-C is 130, a closed stdout is 1 without a word (0 once the outcome
is settled: a published copy is not undone by a reader gone), and ``-v`` adds the
traceback, secrets masked.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from typing import Any

import typer

from drkit.cli.common import err, state
from drkit.errors import INTERRUPTED_LINE, Interrupted, failure
from drkit.redact import mask_url

try:  # typer >= 0.20 ships its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exc  # type: ignore[no-redef]


def invoke(command: Any, args: list[str], *, verbose: bool) -> tuple[int, str | None]:
    """Run ``command`` (the root of the tree) on ``args``: (exit code, the one error line
    or None)."""
    try:
        result = command.main(args=args, prog_name="drkit", standalone_mode=False)
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
        quiet_stdout()
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


def finish(code: int, line: str | None, *, json_mode: bool) -> None:
    """Write the error line, and under ``--json`` the command's document."""
    if line:
        err.print(line, markup=False, highlight=False)
    if json_mode:
        message = line.removeprefix("drkit: error: ").removeprefix("drkit: ") if line else None
        if code != 0 and message is None:
            message = f"exit status {code}"
        write_document(state.document or {}, code, message)


def write_document(document: dict[str, Any], code: int, message: str | None) -> None:
    """Write the command's ``--json`` document with ``ok`` first (and ``error`` on failure)."""
    document = dict(document)
    document["ok"] = bool(document.get("ok", True)) and code == 0
    if code != 0 and message is not None and "error" not in document:
        # a report with its own "error" field (a drill's) keeps it as it is
        document["error"] = {"code": code, "message": message}
    document = {"ok": document.pop("ok"), **document}
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_traceback() -> None:
    """The current exception's traceback (``-v``), secrets masked."""
    err.print(mask_url(traceback.format_exc()).rstrip(), markup=False, highlight=False)


def quiet_stdout() -> None:
    """stdout is gone (a closed pipe): whatever is still written goes nowhere, so neither
    a later write nor the flush at exit fails."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def lost_stdout(code: int) -> int:
    """The exit code once stdout turned out closed: the output is lost, so a success is
    a failure (1), unless the outcome was settled before (a published copy: 0)."""
    quiet_stdout()
    return code if state.settled else code or 1
