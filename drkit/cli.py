"""The ``drkit`` command line: the public entry (``drkit.cli:main``, the console script).

The commands live in :mod:`drkit.commands`, one module per concern, with the drawing in
:mod:`drkit.commands.render`; :func:`run` (in :mod:`drkit.commands.main`) is the one
place exceptions become exit codes (DESIGN.md §1): DrkitError subclasses carry their own
code; usage errors are 2; Ctrl-C is 130; anything unexpected is 1, with a traceback only
under -v.  This module re-exports what callers (the console script, drkit.entry,
drkit.docgen, tests, benchmarks) import from here.
"""

from __future__ import annotations

from drkit.commands.app import app, main_options
from drkit.commands.backup import backup_summary
from drkit.commands.common import (
    EnvArg,
    JsonOpt,
    PolicyDirOpt,
    State,
    emit_json,
    err,
    load,
    out,
    settle,
)
from drkit.commands.main import click_command, hoist_global_options, main, run
from drkit.commands.render import live_progress, ts_text
from drkit.commands.sanitize import (
    DefaultRunGroup,
    SanitizeRunCommand,
    SanitizeRunContext,
)
from drkit.progress import human_size

__all__ = [
    "DefaultRunGroup",
    "EnvArg",
    "JsonOpt",
    "PolicyDirOpt",
    "SanitizeRunCommand",
    "SanitizeRunContext",
    "State",
    "app",
    "backup_summary",
    "click_command",
    "emit_json",
    "err",
    "hoist_global_options",
    "human_size",
    "live_progress",
    "load",
    "main",
    "main_options",
    "out",
    "run",
    "settle",
    "ts_text",
]
