"""``keep``: the value is copied unchanged.

A kept value reaches the target as it is, so a run searches it for personal data by
content (:mod:`drkit.sanitize.scan.content`).  ``pii`` records a person's review of the
column: ``none`` (the column holds no personal data: not searched by content) or the
kinds the review accepts (``[ip]``: the addresses are servers, not people); the search
for originals of masked columns applies whatever the review says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator

from drkit.sanitize.scan.content import KINDS
from drkit.sanitize.strategies.base import Rewrite, Strategy, ValueFn

if TYPE_CHECKING:
    from drkit.sanitize.strategies.compiler import Compiler

#: what ``pii: none`` accepts: every kind the content search reports
ALL_KINDS: frozenset[str] = frozenset(KINDS)


class Keep(Strategy):
    strategy: Literal["keep"] = "keep"
    pii: Literal["none"] | list[str] | None = None

    DOC = (
        "The value is copied unchanged (and searched for personal data by content unless "
        "pii says a person reviewed it)."
    )
    FIELD_DOCS = {
        "pii": (
            "A person's review of the column: none (it holds no personal data: not searched "
            "by content; say why in a comment), or the kinds accepted ("
            + ", ".join(KINDS)
            + "). Originals of masked columns are searched for whatever it says."
        )
    }
    MASKS = False

    @field_validator("pii")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if isinstance(value, list):
            unknown = sorted(set(value) - set(KINDS))
            if unknown:
                raise ValueError(f"unknown kind {unknown[0]!r} (known: {', '.join(KINDS)})")
            if not value:
                raise ValueError("an empty list accepts nothing: leave pii out instead")
        return value

    def describe(self) -> str:
        if self.pii == "none":
            return "keep (reviewed: no personal data)"
        if self.pii:
            return "keep (reviewed: " + ", ".join(self.pii) + ")"
        return "keep"

    def accepted_pii(self) -> frozenset[str] | None:
        """The kinds a person's review accepts (None: no review)."""
        if self.pii is None:
            return None
        if self.pii == "none":
            return ALL_KINDS
        return frozenset(self.pii)

    def reads_email_map(self) -> bool:
        return False

    def value_fn(self, run: Compiler) -> ValueFn:
        return _identity

    def json_rewrite(self, run: Compiler) -> Rewrite:
        return _identity_json


def _identity(value: str) -> str:
    return value


def _identity_json(value: Any) -> Any:
    return value
