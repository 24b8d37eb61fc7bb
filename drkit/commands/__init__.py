"""The ``drkit`` command line, one module per concern (the public entry is :mod:`drkit.cli`).

- :mod:`.common`: the shared state (``--json``, ``--policy-dir``, -v/-q), the consoles,
  the option types every command takes, ``settle``/``emit_json``/``load``;
- :mod:`.app`: the typer app and its global-option callback;
- :mod:`.render`: the drawing (sizes, times, progress, phase status, reports, the one
  ``--json`` document), kept apart from the work as Barman's ``output.py`` is;
- :mod:`.policy`, :mod:`.backup`, :mod:`.restore`, :mod:`.sanitize`, :mod:`.drill`,
  :mod:`.schedule`, :mod:`.demo`: the commands, each a thin call into a core module;
- :mod:`.main`: the command tree in help order, and ``run``/``main``, the one place
  exceptions become exit codes (through :mod:`drkit.outcome`).

Only this package (and :mod:`drkit.cli`) prints for people and exits; core modules never
import it.  The command modules import heavy core modules (pydantic, psycopg, sqlglot,
APScheduler) inside the command that needs them: every command line builds the whole
tree, so start-up pays only for the command that runs.
"""
