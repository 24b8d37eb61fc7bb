"""Rows in COPY text form through a table's strategies (:class:`RowTransformer`), or
only their originals to the run's sink (:func:`row_originals`).

Fields the rules keep stay raw bytes; only masked fields (and those a template reads)
are decoded, transformed and escaped again.  NULL stays NULL for every strategy.
A template column that renders e-mail addresses registers each output as the pseudonym
of the address it replaced (:meth:`Compiler.register_email`).

The originals pass (:class:`RowOriginals`) reads the same fields and hands the sink what
the transformer's strategies would, through each strategy's
:meth:`~drkit.sanitize.strategies.base.Strategy.originals_fn`, without computing what is
written: the strategies themselves run once, in the pass that writes.  A template over
kept fields is rendered in both passes (its output decides whether the field is an
original), so while the e-mail map is being filled the originals pass registers the
outputs of e-mail templates as the transformer would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Literal, TypeVar, overload

from drkit.sanitize.copytext import NULL, escape, field_fn, unescape
from drkit.sanitize.strategies import Compiler, Keep, Strategy, Template
from drkit.sanitize.strategies.base import OriginalsFn

_T = TypeVar("_T")


class RowTransformer:
    def __init__(
        self,
        columns: Sequence[tuple[str, Strategy]],
        compiler: Compiler,
        observe: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        """``observe``: column -> a function handed each original value of that masked
        column (the run's person names)."""
        names = [name for name, _ in columns]
        index = {name: i for i, name in enumerate(names)}
        self.width = len(names)
        # column -> its strategy over COPY text fields (NULL in, NULL out)
        self.simple: list[tuple[int, Callable[[bytes], bytes]]] = []
        self.templates: list[tuple[int, Template, list[tuple[str, int]]]] = []
        self.sink = compiler.sink
        # the writing pass's sink drops what it is handed: a template's original is then
        # decoded only where the e-mail map registers it
        self.records = compiler.records
        self.register = compiler.register_email
        # template columns that render e-mail addresses: their output is the address's
        # pseudonym everywhere (see drkit.sanitize.strategies.compiler)
        self.email_templates: set[int] = set()
        for i, (_name, strategy) in enumerate(columns):
            if isinstance(strategy, Keep):
                continue
            if isinstance(strategy, Template):
                refs = [(field, index[field]) for field in strategy.fields()]
                self.templates.append((i, strategy, refs))
                if strategy.renders_email() and not compiler.emails_primed:
                    self.email_templates.add(i)
            else:
                fn = compiler.value_fn(strategy)
                seen = (observe or {}).get(_name)
                if seen is not None:
                    fn = _observed(fn, seen)
                self.simple.append((i, field_fn(fn)))

    @property
    def passthrough(self) -> bool:
        return not self.simple and not self.templates

    def line(self, line: bytes) -> bytes:
        fields = line.split(b"\t")
        if len(fields) != self.width:
            raise ValueError(f"a row has {len(fields)} fields, expected {self.width}")
        for i, fn in self.simple:
            fields[i] = fn(fields[i])
        for i, template, refs in self.templates:
            raw = fields[i]
            if raw == NULL:
                continue
            values: dict[str, str | None] = {}
            for name, j in refs:  # (a loop: no comprehension call per row)
                field = fields[j]
                values[name] = None if field == NULL else unescape(field)
            out = Compiler.template(template, values)
            if self.records or i in self.email_templates:
                original = unescape(raw)
                if out != original:
                    self.sink(original)
                if out is not None and i in self.email_templates:
                    self.register(original, out)
            fields[i] = escape(out)
        return b"\t".join(fields)

    def block(self, data: bytes) -> bytes:
        """Transform complete lines (``data`` ends with a newline)."""
        lines = data.split(b"\n")
        lines.pop()  # after the final newline
        transform = self.line
        return b"\n".join([transform(line) for line in lines]) + b"\n"


class RowOriginals:
    """The originals pass over rows of COPY text: each masked field's originals to the
    sink, nothing written (the interface of :class:`RowTransformer`, for the pump)."""

    passthrough = False

    def __init__(
        self,
        columns: Sequence[tuple[str, Strategy]],
        compiler: Compiler,
        observe: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        index = {name: i for i, (name, _) in enumerate(columns)}
        self.width = len(columns)
        # masked columns: (index, originals function, the function observing its values)
        self.fields: list[tuple[int, OriginalsFn, Callable[[str], None] | None]] = []
        self.templates: list[tuple[int, Template, list[tuple[str, int]]]] = []
        self.sink = compiler.sink
        self.register = compiler.register_email
        # template columns that render e-mail addresses, while the map is being filled:
        # this pass registers their outputs (as the transformer would)
        self.email_templates: set[int] = set()
        for i, (name, strategy) in enumerate(columns):
            if isinstance(strategy, Keep):
                continue
            if isinstance(strategy, Template):
                self.templates.append((i, strategy, [(f, index[f]) for f in strategy.fields()]))
                if strategy.renders_email() and not compiler.emails_primed:
                    self.email_templates.add(i)
                continue
            self.fields.append((i, strategy.originals_fn(compiler), (observe or {}).get(name)))

    def block(self, data: bytes) -> bytes:
        """Complete lines (``data`` ends with a newline); returns them as they are.

        Column by column: the block's fields are split at once (every row checked to have
        the table's width first), each masked column's
        values decoded at once (:func:`_values`) and handed to its originals function
        one after the other; only templates, which read other fields of their row, go
        row by row."""
        lines = data.split(b"\n")
        lines.pop()
        if not lines:
            return data
        width = self.width
        tabs = set(map(bytes.count, lines, repeat(b"\t")))  # (C loops, no list per row)
        if tabs != {width - 1}:
            bad = next(line.count(b"\t") + 1 for line in lines if line.count(b"\t") != width - 1)
            raise ValueError(f"a row has {bad} fields, expected {width}")
        fields = b"\t".join(lines).split(b"\t")  # row r's field i is fields[r * width + i]
        columns = [fields[i::width] for i in range(width)]
        for i, fn, seen in self.fields:
            present = _values(columns[i])
            if seen is not None:
                deque(map(seen, present), maxlen=0)
            deque(map(fn, present), maxlen=0)  # (a loop in C)
        for i, template, refs in self.templates:
            sink, register = self.sink, self.register
            registers = i in self.email_templates
            names = [name for name, _ in refs]
            originals = _values(columns[i], nulls=True)
            read = [_values(columns[j], nulls=True) for _, j in refs]
            rows_read = zip(*read, strict=True) if read else [()] * len(originals)
            for original, row in zip(originals, rows_read, strict=True):
                if original is None:
                    continue
                out = Compiler.template(template, dict(zip(names, row, strict=True)))
                if out != original:
                    sink(original)
                if out is not None and registers:
                    register(original, out)
        return data


@overload
def _values(fields: Sequence[bytes]) -> list[str]: ...
@overload
def _values(fields: Sequence[bytes], *, nulls: Literal[True]) -> list[str | None]: ...
def _values(fields: Sequence[bytes], *, nulls: bool = False) -> list[str] | list[str | None]:
    """The values of a column's COPY text fields, NULLs left out (``nulls``: kept, as
    None): decoded at once where no field holds an escape (each NULL holds one
    backslash) nor a NUL (COPY text never does)."""
    present = [f for f in fields if f != NULL]
    taken = fields if nulls else present
    joined = b"\x00".join(taken)
    escapes = len(taken) - len(present)
    if joined.count(b"\\") != escapes or joined.count(b"\x00") != len(taken) - 1:
        if nulls:
            return [None if f == NULL else unescape(f) for f in fields]
        return [unescape(f) for f in present]
    if not taken:
        return []
    values = joined.decode("utf-8").split("\x00")
    if not escapes:
        return values
    return [None if v == "\\N" else v for v in values]


def row_originals(
    columns: Sequence[tuple[str, Strategy]],
    compiler: Compiler,
    observe: Mapping[str, Callable[[str], None]] | None = None,
) -> RowOriginals | RowTransformer:
    """What reads the originals of rows whose fields are ``columns``: a
    :class:`RowOriginals`, or the whole transformer (its output dropped) where a
    template reads a column a strategy changes (it renders that column's output).
    Either registers the e-mail pseudonyms of template columns while the map is not
    yet filled (``Compiler.emails_primed``)."""
    strategies = dict(columns)
    for _name, strategy in columns:
        if isinstance(strategy, Template) and any(
            not isinstance(strategies.get(f), Keep) for f in strategy.fields()
        ):
            return RowTransformer(columns, compiler, observe)
    return RowOriginals(columns, compiler, observe)


def _observed(fn: Callable[[str], _T], seen: Callable[[str], None]) -> Callable[[str], _T]:
    def observed(value: str) -> _T:
        seen(value)
        return fn(value)

    return observed
