"""The ``drkit`` process entry (the console script, ``python -m drkit``): PostgreSQL's WAL
commands and ``--version`` take a lean path.

``archive_command`` and ``restore_command`` start drkit once per WAL file, so the command
line framework (typer, click, rich: a few hundred milliseconds of imports) is skipped
for the plain forms PostgreSQL runs::

    drkit [--policy-dir DIR] wal-push ENV PATH [--policy-dir DIR]
    drkit [--policy-dir DIR] wal-fetch ENV NAME PATH [--policy-dir DIR]

``drkit --version`` alone is answered before anything is imported.  Anything else
(``--json``, ``-v``, ``--help``, another command, a malformed line) goes to
:func:`drkit.cli.app.run`, which owns every other behaviour.  The lean path keeps the
CLI's contract: one ``drkit: error: …`` line with secrets masked, the error's exit code,
130 on Ctrl-C, and wal-fetch's "1 when it does not exist".
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


def run_wal_command(command: str, positionals: list[str], policy_dir: str | None) -> int:
    from drkit.errors import failure, wal_fetch_line
    from drkit.wal import load_wal_policy, run_fetch
    from drkit.walasync import archive_wal

    if command == "wal-fetch":
        env, name, dest = positionals
        code, message = run_fetch(lambda: load_wal_policy(env, policy_dir), name, dest, policy_dir)
        if message:
            sys.stderr.write(wal_fetch_line(name, message) + "\n")
        return code
    env, path = positionals
    try:
        archive_wal(load_wal_policy(env, policy_dir), path, policy_dir)
    except (Exception, KeyboardInterrupt) as exc:  # the last line of defence, as in run()
        code, line = failure(exc)
        sys.stderr.write(line + "\n")
        return code
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from drkit import VERSION_LINE

        sys.stdout.write(VERSION_LINE + "\n")
        raise SystemExit(0)
    parsed = parse_wal_command(args)
    if parsed is not None and parsed[0] == "wal-push":
        from drkit.walack import fast_push

        env, path = parsed[1]
        if fast_push(env, path, parsed[2]):  # acknowledged by the async archiver's worker
            raise SystemExit(0)
    if parsed is not None:
        from drkit.cli.logconfig import configure_logging

        configure_logging("warning", "text")
        raise SystemExit(run_wal_command(*parsed))
    from drkit.cli.app import run

    code = run(args)
    sys.stdout.flush()
    raise SystemExit(code)
