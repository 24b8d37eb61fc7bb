"""``keep``: the value is copied unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from drkit.sanitize.strategies.base import Rewrite, Strategy, ValueFn

if TYPE_CHECKING:
    from drkit.sanitize.strategies.compiler import Compiler


class Keep(Strategy):
    strategy: Literal["keep"] = "keep"

    DOC = "The value is copied unchanged."
    MASKS = False

    def value_fn(self, run: Compiler) -> ValueFn:
        return _identity

    def json_rewrite(self, run: Compiler) -> Rewrite:
        return _identity_json


def _identity(value: str) -> str:
    return value


def _identity_json(value: Any) -> Any:
    return value
