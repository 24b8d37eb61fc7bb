"""``hash``: a keyed hash of the value (see :mod:`.pseudonymizer`), as hex."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from drkit.sanitize.strategies.base import KeptFn, OriginalsFn, Strategy, ValueFn, needs_text

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler


class Hash(Strategy):
    strategy: Literal["hash"] = "hash"
    length: int = Field(default=32, ge=8, le=64)

    DOC = "A keyed hash (HMAC with the salt), as hex."
    FIELD_DOCS = {"length": "Hex characters kept."}

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        if (problem := needs_text(self, column)) is not None:
            return problem
        if table.in_unique_key(column.name) and self.length < 16:
            return "hash on a unique column needs length >= 16 to never collide"
        return None

    def reads_email_map(self) -> bool:
        return False

    def value_fn(self, run: Compiler) -> ValueFn:
        return run.recorded(run.pseudo.hash_fn(self.length))

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        """A value that is not ``length`` lower-case hex digits is never its own hash:
        handed over without its MAC."""
        full, sink, length = self.value_fn(run), run.sink, self.length

        def originals(value: str) -> None:
            if len(value) == length and not value.strip(_HEX):
                full(value)
            else:
                sink(value)

        return originals


_HEX = "0123456789abcdef"
