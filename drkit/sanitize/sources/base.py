"""Where a sanitize run's schema and rows come from: the protocol every source implements.

The orchestrator (:mod:`drkit.sanitize.pipeline`) calls a source and owns everything
else: the order of the steps, the strategies, the writing, the reports, the leak scan.
A source answers these calls and never calls back; nothing in it knows of reports,
phases or the run.

The rows a source serves are COPY text (tab-separated fields, ``\\N`` for NULL), in the
column order it says: the orchestrator sends them through the strategies and writes
them.  Raw values of masked columns exist only in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from drkit.pg import LARGE_OBJECT_KINDS, SECRET_KINDS
from drkit.sanitize.plan import Plan, TablePlan
from drkit.sanitize.schema import Schema
from drkit.sanitize.strategies import Compiler
from drkit.sanitize.subset import Selection

#: a sequence's value as ``setval`` takes it: (its name as regclass text, value, is_called)
SequenceValue = tuple[str, int, bool]

#: archive entries a sanitized copy never gets: credentials (user mappings), and the
#: bytes of large objects, which no rule can mask
NOT_COPIED = SECRET_KINDS + LARGE_OBJECT_KINDS


@dataclass(frozen=True, eq=False)
class Read:
    """Some columns of some rows of one table, as the orchestrator asks for them (each
    read is its own, however alike two are: equal and hashed by identity).

    A source that cannot filter rows (``Source.select`` gives None) is only asked for
    every row of a table, and may serve every column (its :class:`Rows` say which)."""

    table: TablePlan
    columns: list[str]
    selection: Selection


@dataclass(frozen=True)
class Rows:
    """A read as the source serves it: ``open()`` gives the COPY text lines (the input
    may be cut anywhere), whose fields are ``columns``, in that order."""

    read: Read
    columns: list[str]
    open: Callable[[], AbstractContextManager[Iterable[bytes | bytearray | memoryview]]]


class Source(Protocol):
    """SRC as a sanitize run reads it."""

    #: what the report calls the source ("live", "backup <id>")
    label: str
    #: the Rows of different reads may be opened at once, from other threads (else they
    #: come one after the other, each read to its end before the next is asked for)
    concurrent: bool

    def schema(self) -> Schema:
        """SRC's tables, columns, keys and sequences."""
        ...

    def check_fit(self, plan: Plan, compiler: Compiler) -> None:
        """Raise RulesError when the strategies' outputs would break a CHECK constraint,
        tried on a few of SRC's rows (a source without rows to try does nothing)."""
        ...

    def select(self, plan: Plan) -> dict[str, Selection] | None:
        """The rows of each table the copy keeps; None: the source cannot filter, every
        row is loaded and the orchestrator applies the filters in the build."""
        ...

    def count(self, table: TablePlan, selection: Selection) -> int | None:
        """How many rows ``selection`` holds, without reading them (a dry run)."""
        ...

    def pre_data(self, dsn: str) -> None:
        """SRC's DDL before the rows (types, tables, CHECK constraints) into ``dsn``."""
        ...

    def rows(self, reads: Sequence[Read], *, only_these: bool = False) -> Iterator[Rows]:
        """The rows of ``reads``, in the order the source reads them.

        ``only_these``: the caller wants nothing else of SRC's data from this pass (the
        e-mail templates before the copy), so a source that reads all of it at once may
        read only their tables."""
        ...

    def post_data(self, dsn: str, jobs: int) -> None:
        """SRC's DDL after the rows (indexes, keys, triggers) into ``dsn``."""
        ...

    def sequences(self) -> list[SequenceValue]:
        """SRC's sequence values, known once the rows are read."""
        ...
