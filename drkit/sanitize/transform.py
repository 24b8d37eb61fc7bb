"""Rows in COPY text form through a table's strategies.

Fields the rules keep stay raw bytes; only masked fields (and those a template reads)
are decoded, transformed and escaped again.  NULL stays NULL for every strategy.
A template column that renders e-mail addresses registers each output as the pseudonym
of the address it replaced (:meth:`Compiler.register_email`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from drkit.sanitize.copytext import NULL, escape, unescape
from drkit.sanitize.strategies import Compiler, Keep, Strategy, Template, ValueFn


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
        self.simple: list[tuple[int, ValueFn]] = []
        self.templates: list[tuple[int, Template, list[tuple[str, int]]]] = []
        self.sink = compiler.sink
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
                self.simple.append((i, fn))

    @property
    def passthrough(self) -> bool:
        return not self.simple and not self.templates

    def line(self, line: bytes) -> bytes:
        fields = line.split(b"\t")
        if len(fields) != self.width:
            raise ValueError(f"a row has {len(fields)} fields, expected {self.width}")
        for i, fn in self.simple:
            raw = fields[i]
            if raw != NULL:
                fields[i] = escape(fn(unescape(raw)))
        for i, template, refs in self.templates:
            raw = fields[i]
            if raw == NULL:
                continue
            values = {name: None if fields[j] == NULL else unescape(fields[j]) for name, j in refs}
            out = Compiler.template(template, values)
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


def _observed(
    fn: Callable[[str], str | None], seen: Callable[[str], None]
) -> Callable[[str], str | None]:
    def observed(value: str) -> str | None:
        seen(value)
        return fn(value)

    return observed
