"""The one exception tree of drkit, each class carrying its exit code, and the one line
an exception that ends a command becomes.

Core modules raise these and never print them.  Messages are one line, say what failed,
on which object, and what to do, and never contain a secret.  :func:`failure` turns any
exception into the exit code and the ``drkit: error: …`` line, secrets masked; the
command line (:mod:`drkit.cli`) and the lean entries PostgreSQL runs (``wal-push``,
``wal-fetch``) both end through it, so the two paths cannot drift apart.  The codes and
their meanings are published in ``drkit --help`` and docs/exit-codes.md (see
ARCHITECTURE.md, Command line).
"""

from __future__ import annotations

from drkit.redact import mask_url


class DrkitError(Exception):
    """Root of drkit's errors: the operation failed (exit 1)."""

    exit_code = 1


class OperationError(DrkitError):
    """A database, storage or subprocess operation failed (exit 1)."""


class DatabaseError(OperationError):
    """PostgreSQL could not be reached or a statement failed."""


class StorageError(OperationError):
    """The repository could not be read or written."""


class ObjectNotFound(StorageError):
    """A repository object does not exist."""


class ObjectExists(StorageError):
    """A store that must not replace found the key already taken."""


class SubprocessError(OperationError):
    """An external program (pg_dump, pg_restore, age, ...) failed."""


class NotFoundError(OperationError):
    """A backup, drill or environment named on the command line does not exist."""


class UsageError(DrkitError):
    """A wrong flag or argument (exit 2)."""

    exit_code = 2


class PolicyError(UsageError):
    """A policy file is invalid (exit 2)."""


class RulesError(UsageError):
    """A sanitize rules file is invalid (exit 2)."""


class CheckFailed(DrkitError):
    """A check failed: verify mismatch, drill objective, leak, unreachable PITR target (exit 3)."""

    exit_code = 3


class SafetyRefused(DrkitError):
    """A safety guard refused the operation (exit 4)."""

    exit_code = 4


class Interrupted(DrkitError):
    """The operation was interrupted (exit 130)."""

    exit_code = 130


#: what each exit code means, for ``drkit --help`` and docs/exit-codes.md
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "the operation failed (database, storage, subprocess error)",
    2: "usage, policy or rules file invalid",
    3: "a check failed: verify mismatch, drill objective breached or validation failed, "
    "sanitize leak or coverage failure, PITR target not reachable",
    4: "refused by a safety guard (direction guard, restore over a live database without "
    "--force, encryption configured but unavailable)",
    130: "interrupted",
}


# -- the one error line ---------------------------------------------------------------

INTERRUPTED_LINE = "drkit: interrupted"


def internal_error_line(exc: BaseException) -> str:
    """The one line an unexpected exception gets (first line only, secrets masked)."""
    text = mask_url(str(exc).splitlines()[0]) if str(exc) else ""
    return f"drkit: internal error: {type(exc).__name__}: {text} (rerun with -v for details)"


def failure(exc: BaseException) -> tuple[int, str]:
    """(exit code, error line) for an exception that ends a command: a DrkitError's own
    code, 130 for Ctrl-C, 1 for anything unexpected."""
    if isinstance(exc, DrkitError):
        return exc.exit_code, f"drkit: error: {mask_url(str(exc))}"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted.exit_code, INTERRUPTED_LINE
    return 1, internal_error_line(exc)
