"""The one exception tree of drkit; every class carries the exit code of DESIGN.md §1.

Core modules raise these; only ``drkit.cli`` turns them into a message and an exit code.
Messages are one line, say what failed, on which object, and what to do, and never
contain a secret.
"""

from __future__ import annotations


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


class NotImplementedYet(DrkitError):
    """The command is part of the contract but its issue has not landed."""


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
