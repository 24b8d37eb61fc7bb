"""How ``drkit --help`` reads: applied once to the click tree built from the typer app.

typer derives what help shows from type annotations, which leaks Python into the
terminal (``--table <list[str]>``, ``{env} <str>``).  :func:`polish` walks the tree
after it is built, so a command or flag added later reads the same way without anyone
remembering to:

- an option that takes a value shows a metavar (its own, else ``N`` for a number, else
  its name in capitals);
- an argument shows its name in capitals: ``ENV``, ``[ID|latest]``, ``[ENV...]``;
- every command's help ends with the exit codes (:data:`drkit.errors.EXIT_CODES`),
  the root's in full.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from typer.core import TyperArgument

from drkit.errors import EXIT_CODES


class PlainArgument(TyperArgument):
    """An argument shown by its metavar alone: ``ENV``, not ``{env}`` and ``env <str>``."""

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        return [usage_name(self)]

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def usage_name(argument: Any) -> str:
    """``ENV``, ``[ID|latest]`` (optional), ``ENV...``/``[ENV...]`` (repeatable)."""
    name = str(argument.metavar or argument.name.upper())
    if name.startswith("["):
        return name
    if argument.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if argument.required else f"[{name}]"


def exit_code_summary() -> str:
    """One line: every exit code with the head of its meaning."""
    parts = [f"{code} {re.split(r'[:(]', text)[0].strip()}" for code, text in EXIT_CODES.items()]
    return "Exit codes: " + ", ".join(parts) + " (details: drkit --help)."


def exit_code_table() -> str:
    """The root command's epilog; ``\\b`` keeps click from re-wrapping the lines."""
    width = max(len(str(code)) for code in EXIT_CODES)
    lines = []
    for code, text in EXIT_CODES.items():
        lead = f"  {code:<{width}}  "
        lines += textwrap.wrap(text, 78, initial_indent=lead, subsequent_indent=" " * len(lead))
    return "\b\nExit codes:\n" + "\n".join(lines)


def _is_integer(param: Any) -> bool:
    """An ``int`` option, in typer's own click (type_descriptor) or in click's (type)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return getattr(descriptor, "annotation", None) is int
    return getattr(getattr(param, "type", None), "name", "") in ("integer", "integer range")


def polish(command: Any, *, root: bool = True) -> Any:
    """Set metavars and epilogs on ``command`` and every command below it; returns it."""
    if command.epilog is None:
        command.epilog = exit_code_table() if root else exit_code_summary()
    for param in command.params:
        if param.param_type_name == "argument":
            if param.metavar is None:
                param.metavar = param.name.upper()
            if isinstance(param, TyperArgument) and not isinstance(param, PlainArgument):
                param.__class__ = PlainArgument
        elif param.param_type_name == "option" and not param.is_flag and param.metavar is None:
            param.metavar = "N" if _is_integer(param) else param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        polish(sub, root=False)
    return command
