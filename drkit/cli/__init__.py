"""The ``drkit`` command line: the only layer that prints for people and exits.

Its face, each name imported on first use (:func:`drkit.lazy_face`) so that ``drkit.cli.entry`` (every ``wal-push``
PostgreSQL starts) never pays for typer or rich:

- :func:`main`: the process entry (the ``drkit`` console script, ``python -m drkit``);
- :func:`run`: one command line in-process, returning its exit code;
- :func:`click_command`: the whole command tree, help polished (the docs generator);
- :data:`DOCUMENTS`, :data:`SCHEMA_VERSION`, :class:`Failure` and
  :func:`exit_code_summary`: what the docs generator publishes of the ``--json``
  documents and the exit codes.

The modules, one concern each:

- :mod:`.entry`: the process entry: the lean path for PostgreSQL's WAL commands first,
  then everything else;
- :mod:`.app`: the typer app, its global options, the table of commands (each
  command's module imported only when it runs) and :func:`run`;
- :mod:`.outcome`: how a command line ends: the exit code, the one error line, the
  ``--json`` document (a DrkitError's code and line come from
  :func:`drkit.errors.failure`, as on the lean path);
- :mod:`.common`: the shared state (``--json``, ``--policy-dir``, -v/-q), the consoles,
  the option types every command takes, ``settle``/``emit_json``/``load``;
- :mod:`.render` and :mod:`.progress`: the drawing (sizes, times, progress, reports, the
  one ``--json`` document), kept apart from the work;
- the command groups, each a thin call into a core module: :mod:`.policy` (policy
  check), :mod:`.check`, :mod:`.backup` (backup, backups, verify, prune), :mod:`.restore`,
  :mod:`.wal` (archive-command, wal-push, promote-timeline, wal-fetch), :mod:`.sanitize`,
  :mod:`.drill`, :mod:`.status`, :mod:`.schedule` and :mod:`.demo`;
- :mod:`.documents`: the published shape of every ``--json`` document;
- :mod:`.helptext`: how help reads (where log records go is :mod:`drkit.logconfig`,
  shared with the lean WAL entry).

Core modules never import this package.  The command modules import heavy core modules
(pydantic, psycopg, sqlglot, APScheduler) inside the command that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face

if TYPE_CHECKING:
    from drkit.cli.app import click_command as click_command
    from drkit.cli.app import run as run
    from drkit.cli.documents import DOCUMENTS as DOCUMENTS
    from drkit.cli.documents import SCHEMA_VERSION as SCHEMA_VERSION
    from drkit.cli.documents import Failure as Failure
    from drkit.cli.entry import main as main
    from drkit.cli.helptext import exit_code_summary as exit_code_summary

#: the face's names, by the module of this package that defines them
__all__ = lazy_face(
    __name__,
    {
        "app": "click_command run",
        "documents": "DOCUMENTS SCHEMA_VERSION Failure",
        "entry": "main",
        "helptext": "exit_code_summary",
    },
)
