"""``constant``: the same value in every row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from drkit.sanitize.strategies.base import (
    KeptFn,
    OriginalsFn,
    Rewrite,
    Strategy,
    ValueFn,
    collision,
)
from drkit.sanitize.strategies.fakepool import to_text

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler
    from drkit.sanitize.strategies.pseudonymizer import Pseudonymizer


class Constant(Strategy):
    strategy: Literal["constant"] = "constant"
    value: str | int | float | bool | None

    DOC = "The same value in every row."
    FIELD_DOCS = {"value": "The value written."}

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        return collision(self, table, column)

    def reads_email_map(self) -> bool:
        return False

    def value_fn(self, run: Compiler) -> ValueFn:
        constant = to_text(self.value)
        return run.recorded(lambda _v: constant)

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        constant, sink = to_text(self.value), run.sink

        def originals(value: str) -> None:
            if value != constant:  # what run.recorded compares
                sink(value)

        return originals

    def json_rewrite(self, run: Compiler) -> Rewrite:
        constant = self.value  # a JSON value of its own type, not its text

        def const(v: Any) -> Any:
            if v is not None and v != constant:
                run.record_json(v)
            return constant if v is not None else None

        return const

    def outputs(self, pseudo: Pseudonymizer) -> Iterable[str]:
        text = to_text(self.value)
        return () if text is None else (text,)
