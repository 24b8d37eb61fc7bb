"""``nullify``: SQL NULL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from drkit.sanitize.strategies.base import KeptFn, OriginalsFn, Rewrite, Strategy, ValueFn

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler


class Nullify(Strategy):
    strategy: Literal["nullify"] = "nullify"

    DOC = "SQL NULL."

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        if column.not_null:
            return "nullify on a NOT NULL column: use constant or fake"
        for index in table.unique_indexes:
            if index.nulls_not_distinct and index.columns == (column.name,):
                return (
                    f"nullify would make rows collide under the unique index {index.name} of "
                    f"{table.key} (NULLS NOT DISTINCT)"
                )
        return None

    def reads_email_map(self) -> bool:
        return False

    def value_fn(self, run: Compiler) -> ValueFn:
        return run.recorded(lambda _v: None)

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        return run.sink  # every value is replaced

    def json_rewrite(self, run: Compiler) -> Rewrite:
        def nullify(v: Any) -> Any:
            if v is not None:
                run.record_json(v)
            return None

        return nullify
