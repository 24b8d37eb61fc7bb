"""``mask``: the value with its middle characters replaced."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from drkit.sanitize.strategies.base import KeptFn, Strategy, ValueFn, collision, needs_text

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler


class Mask(Strategy):
    strategy: Literal["mask"] = "mask"
    keep_start: int = Field(default=0, ge=0)
    keep_end: int = Field(default=0, ge=0)
    char: str = Field(default="*", min_length=1, max_length=1)

    DOC = (
        "The value with every character but the first keep_start and the last "
        "keep_end replaced by char."
    )
    FIELD_DOCS = {
        "keep_start": "Characters kept at the start.",
        "keep_end": "Characters kept at the end.",
        "char": "The mask character.",
    }

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        return needs_text(self, column) or collision(self, table, column)

    def reads_email_map(self) -> bool:
        return False

    def value_fn(self, run: Compiler) -> ValueFn:
        ks, ke, ch = self.keep_start, self.keep_end, self.char
        return run.recorded(lambda v: mask(v, ks, ke, ch))


def mask(value: str, keep_start: int, keep_end: int, char: str) -> str:
    n = len(value)
    if keep_start + keep_end >= n:
        return char * n
    return value[:keep_start] + char * (n - keep_start - keep_end) + value[n - keep_end :]
