"""The ``drkit`` process entry: PostgreSQL's WAL commands take a lean path.

``archive_command`` and ``restore_command`` start drkit once per WAL file, so the command
line framework (typer, click, rich: a few hundred milliseconds of imports) is skipped
for the plain forms PostgreSQL runs::

    drkit [--policy-dir DIR] wal-push ENV PATH [--policy-dir DIR]
    drkit [--policy-dir DIR] wal-fetch ENV NAME PATH [--policy-dir DIR]

:mod:`drkit.wal.entry` recognises and runs them, keeping the CLI's contract.  Anything
else (``--json``, ``-v``, ``--help``, another command, a malformed line) goes to
:mod:`drkit.cli`, which owns every other behaviour.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from drkit.wal import entry as wal_entry


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    parsed = wal_entry.parse(args)
    if parsed is not None:
        raise SystemExit(wal_entry.run(parsed))
    from drkit.cli import main as cli_main

    cli_main(args)
