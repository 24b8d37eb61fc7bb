"""One place where an exception becomes drkit's exit code and its one error line.

DESIGN.md §1: DrkitError subclasses carry their own exit code; Ctrl-C is 130; anything
unexpected is 1.  The line is one line, names what failed, and never holds a secret.
The typer CLI (:mod:`drkit.cli`) and the lean WAL entry (:mod:`drkit.wal.entry`) both use
these functions, so the two paths cannot drift apart.
"""

from __future__ import annotations

from drkit.errors import DrkitError, Interrupted
from drkit.redact import mask_url

INTERRUPTED_LINE = "drkit: interrupted"


def internal_error_line(exc: BaseException) -> str:
    """The one line an unexpected exception gets (first line only, secrets masked)."""
    text = mask_url(str(exc).splitlines()[0]) if str(exc) else ""
    return f"drkit: internal error: {type(exc).__name__}: {text} (rerun with -v for details)"


def failure(exc: BaseException) -> tuple[int, str]:
    """(exit code, error line) for an exception that ends a command."""
    if isinstance(exc, DrkitError):
        return exc.exit_code, f"drkit: error: {mask_url(str(exc))}"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted.exit_code, INTERRUPTED_LINE
    return 1, internal_error_line(exc)
