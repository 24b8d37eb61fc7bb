"""What a strategy is: every module of this package that defines one builds on this base.

A strategy module holds everything about one strategy, the way greenmask keeps a
transformer in one file:

- its options: a pydantic model subclassing :class:`Strategy`, whose ``strategy`` field
  is the name a rules file writes (a ``Literal``);
- ``DOC`` and ``FIELD_DOCS``: what it does and what each option means (the rules
  reference and its JSON Schema under ``docs/`` are generated from them);
- :meth:`Strategy.checked`: what can be checked when the rules load, before any
  connection (a Faker provider that exists, a template that parses);
- :meth:`Strategy.misfit`: the column types and keys it can serve, checked against
  SRC's schema before any row moves;
- :meth:`Strategy.value_fn`: its function over one value (text in, text or NULL out),
  made once per run by :class:`~drkit.sanitize.strategies.compiler.Compiler`, and
  :meth:`Strategy.json_rewrite`, the same applied at a JSON path;
- :meth:`Strategy.originals_fn`: what :meth:`~Strategy.value_fn` hands the sink for one
  value, without its output (the run's originals pass);
- :meth:`Strategy.reads_email_map`: False where its functions never read the run's
  e-mail map (its table may then be read while the map is being filled).

The registry in :mod:`drkit.sanitize.strategies` lists them: adding a strategy is its
module and one line there.

Every function a strategy makes hands each original it replaced to the run's sink, for
the leak scan: whole values through :meth:`Compiler.recorded`; strategies that rewrite
parts of a value (``replace_pii``, ``json``) record the parts they replace themselves.

A run knows every original before it writes a row, so it computes them first, in a pass
of their own, and runs the strategies once, in the pass that writes.  The originals
pass calls :meth:`Strategy.originals_fn`: by default the value function itself, its
output dropped; a strategy whose originals are cheaper to know than its output
(``nullify``, ``constant``, ``email``, ``replace_pii``) gives a function of its own,
which hands the sink exactly the values the value function would (a property test holds
the two together).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from drkit.config import StrictModel

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler
    from drkit.sanitize.strategies.pseudonymizer import Pseudonymizer

ValueFn = Callable[[str], "str | None"]  # one value's text -> its replacement, None is NULL
Sink = Callable[[str], None]  # receives the originals a function replaced
OriginalsFn = Callable[[str], object]  # one value's text -> its originals to the sink
Rewrite = Callable[[Any], Any]  # one parsed JSON value -> its replacement
KeptFn = Callable[[str], bool]  # is this column of the table copied as it is?
ParseFn = Callable[[Any], "Strategy"]  # a strategy at a JSON path, from its YAML


class Strategy(StrictModel):
    """A column's strategy as the rules file writes it (subclasses: one per module)."""

    strategy: str

    #: what the strategy does (the rules reference)
    DOC: ClassVar[str] = ""
    #: option -> what it means (the rules reference and the JSON Schema)
    FIELD_DOCS: ClassVar[Mapping[str, str]] = {}
    #: False only for ``keep``: the value reaches the target as it is
    MASKS: ClassVar[bool] = True
    #: may be given inside a ``json`` strategy's paths
    AT_JSON_PATH: ClassVar[bool] = True
    #: fields the loader fills, never read from the rules file (nor in its schema)
    LOADER_FIELDS: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """The strategy as a report names it."""
        return self.strategy

    def checked(self, parse: ParseFn) -> Self:
        """The strategy once what needs no database is checked (raises ValueError).

        ``parse`` reads a strategy given at a JSON path (for ``json``)."""
        return self

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        """Why the strategy cannot serve ``column`` of ``table``, or None when it can.

        ``kept`` tells whether another column of the table is copied as it is."""
        return None

    @abstractmethod
    def value_fn(self, run: Compiler) -> ValueFn:
        """The function over one value (never given NULL: NULL stays NULL)."""

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        """The function handing ``run``'s sink, for one value (never NULL), exactly the
        originals :meth:`value_fn` would hand it; what it returns means nothing.  By
        default the value function itself."""
        return run.value_fn(self)

    def reads_email_map(self) -> bool:
        """Whether its functions read the run's e-mail map (the pseudonyms template columns
        registered): a table with such a column is read only once the map is filled.  By
        default True (a strategy that says nothing waits for the map)."""
        return True

    def json_rewrite(self, run: Compiler) -> Rewrite:
        """The function over one value found at a JSON path: by default the value's text
        (a string as it is, anything else as JSON) through :meth:`value_fn`."""
        fn = run.value_fn(self)

        def rewrite(v: Any) -> Any:
            if v is None:
                return None
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            return fn(text)

        return rewrite

    def outputs(self, pseudo: Pseudonymizer) -> Iterable[str]:
        """Values the strategy may give whatever the input (a pool, a constant): an
        original equal to one of them cannot be told from drkit's own output."""
        return ()


def needs_text(strategy: Strategy, column: Column) -> str | None:
    """The rule of strategies that read the value as text."""
    if column.category == "S" or column.is_json:
        return None
    return f"{strategy.strategy} needs a text column, {column.name} is {column.type}"


def collision(strategy: Strategy, table: Table, column: Column) -> str | None:
    """The rule of strategies whose outputs repeat (``constant``, ``mask``): no column
    that a unique key, or an expression or partial unique index, reads."""
    for index in table.unique_indexes:
        if column.name in index.columns and (index.expression or index.partial):
            return (
                f"{strategy.strategy} would make rows collide under the unique index "
                f"{index.name} of {table.key} (it reads {column.name})"
            )
    if table.in_unique_key(column.name):
        return f"{strategy.strategy} would make the unique column {column.name} collide"
    return None
