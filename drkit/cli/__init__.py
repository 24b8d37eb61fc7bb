"""The ``drkit`` command line: the only layer that prints for people and exits.

Its face, imported on first use so that ``drkit.cli.entry`` (every ``wal-push``
PostgreSQL starts) never pays for typer or rich:

- :func:`run`: one command line in-process, returning its exit code;
- :func:`click_command`: the whole command tree, help polished (the docs generator).

The modules, one concern each:

- :mod:`.entry`: the process entry: the lean path for PostgreSQL's WAL commands first,
  then everything else;
- :mod:`.app`: the typer app and its global options;
- :mod:`.main`: the command tree in help order, and :func:`run`, the one place a command
  line ends (exceptions become exit codes through :func:`drkit.errors.failure`);
- :mod:`.common`: the shared state (``--json``, ``--policy-dir``, -v/-q), the consoles,
  the option types every command takes, ``settle``/``emit_json``/``load``;
- :mod:`.render` and :mod:`.progress`: the drawing (sizes, times, progress, reports, the
  one ``--json`` document), kept apart from the work;
- the command groups, each a thin call into a core module: :mod:`.policy` (policy
  check), :mod:`.check`, :mod:`.backup` (backup, backups, verify, prune), :mod:`.restore`,
  :mod:`.wal` (archive-command, wal-push, promote-timeline, wal-fetch), :mod:`.sanitize`,
  :mod:`.drill`, :mod:`.status`, :mod:`.schedule` and :mod:`.demo`;
- :mod:`.documents`: the published shape of every ``--json`` document;
- :mod:`.helptext` and :mod:`.logconfig`: how help reads, where log records go.

Core modules never import this package.  The command modules import heavy core modules
(pydantic, psycopg, sqlglot, APScheduler) inside the command that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drkit.cli.main import click_command, run

__all__ = ["click_command", "run"]


def __getattr__(name: str) -> Any:
    """The face's names, each imported when first asked for."""
    if name in ("run", "click_command"):
        from drkit.cli import main as tree

        return getattr(tree, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
