"""The ``drkit`` process entry (the console script, ``python -m drkit``): PostgreSQL's WAL
commands and ``--version`` take a lean path.

``archive_command`` and ``restore_command`` start drkit once per WAL file, so the command
line framework (typer, click, rich: a few hundred milliseconds of imports) is skipped
for the plain forms PostgreSQL runs::

    drkit [--policy-dir DIR] wal-push ENV PATH [--policy-dir DIR]
    drkit [--policy-dir DIR] wal-fetch ENV NAME PATH [--policy-dir DIR]

:mod:`drkit.wal.entry` recognises and runs them, keeping the CLI's contract (one
``drkit: error: …`` line with secrets masked, the error's exit code, 130 on Ctrl-C, and
wal-fetch's "1 when it does not exist").  ``drkit --version`` alone is answered before
anything is imported.  Anything else (``--json``, ``-v``, ``--help``, another command, a
malformed line) goes to :func:`drkit.cli.app.run`, which owns every other behaviour.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from drkit import VERSION_LINE

        sys.stdout.write(VERSION_LINE + "\n")
        raise SystemExit(0)
    from drkit.wal import entry as wal_entry

    parsed = wal_entry.parse(args)
    if parsed is not None:
        raise SystemExit(wal_entry.run(parsed))
    from drkit.cli.app import run

    code = run(args)
    try:
        sys.stdout.flush()
    except OSError:  # stdout is gone (a closed pipe): the output is lost
        from drkit.cli.outcome import lost_stdout

        code = lost_stdout(code)
    raise SystemExit(code)
