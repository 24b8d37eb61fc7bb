"""The ``drkit`` process entry: PostgreSQL's WAL commands take a lean path.

``archive_command`` and ``restore_command`` start drkit once per WAL file, so the command
line framework (typer, click, rich: a few hundred milliseconds of imports) is skipped
for the plain forms PostgreSQL runs::

    drkit [--policy-dir DIR] wal-push ENV PATH [--policy-dir DIR]
    drkit [--policy-dir DIR] wal-fetch ENV NAME PATH [--policy-dir DIR]

Anything else (``--json``, ``-v``, ``--help``, another command, a malformed line) goes to
:mod:`drkit.cli`, which owns every other behaviour.  The lean path keeps the CLI's
contract: one ``drkit: error: …`` line with secrets masked, the error's exit code, 130 on
Ctrl-C, and wal-fetch's "1 when it does not exist".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

_OWN = {"wal-push": 2, "wal-fetch": 3}  # command -> number of positional arguments


def parse_wal_command(args: Sequence[str]) -> tuple[str, list[str], str | None] | None:
    """(command, positionals, policy dir) for a plain WAL command line, else None."""
    command: str | None = None
    positionals: list[str] = []
    policy_dir: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--policy-dir":
            if i + 1 >= len(args):
                return None
            policy_dir = args[i + 1]
            i += 2
            continue
        if arg.startswith("--policy-dir="):
            policy_dir = arg.split("=", 1)[1]
        elif arg.startswith("-") and arg != "-":
            return None  # --json, -v, --help, unknown options: the full CLI
        elif command is None:
            if arg not in _OWN:
                return None
            command = arg
        else:
            positionals.append(arg)
        i += 1
    if command is None or len(positionals) != _OWN[command] or policy_dir == "":
        return None
    return command, positionals, policy_dir


def internal_error_line(exc: BaseException) -> str:
    """The one line an unexpected exception gets (first line only, secrets masked)."""
    from drkit.redact import mask_url

    text = mask_url(str(exc).splitlines()[0]) if str(exc) else ""
    return f"drkit: internal error: {type(exc).__name__}: {text} (rerun with -v for details)"


def run_wal_command(command: str, positionals: list[str], policy_dir: str | None) -> int:
    from drkit.errors import DrkitError, Interrupted
    from drkit.redact import mask_url
    from drkit.wal import load_wal_policy, push_wal, run_fetch

    if command == "wal-fetch":
        env, name, dest = positionals
        code, message = run_fetch(lambda: load_wal_policy(env, policy_dir), name, dest, policy_dir)
        if message:
            sys.stderr.write(f"drkit: wal-fetch {name}: {mask_url(message)}\n")
        return code
    env, path = positionals
    try:
        push_wal(load_wal_policy(env, policy_dir), path)
    except DrkitError as exc:
        sys.stderr.write(f"drkit: error: {mask_url(str(exc))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("drkit: interrupted\n")
        return Interrupted.exit_code
    except Exception as exc:  # the last line of defence, as in drkit.cli
        sys.stderr.write(internal_error_line(exc) + "\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    parsed = parse_wal_command(args)
    if parsed is not None:
        import logging

        from drkit.redact import install_log_redaction

        logging.basicConfig(
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        install_log_redaction()
        raise SystemExit(run_wal_command(*parsed))
    from drkit.cli import main as cli_main

    cli_main(args)
