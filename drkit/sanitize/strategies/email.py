"""``email``: a deterministic, unique address for each original address.

The address is keyed by its canonical spelling (:func:`~.piitext.email_key`), and the
run's e-mail map decides its pseudonym: the one a template column rendered for it, else
``u<tag>@domain`` (see :mod:`.compiler`), so one address has one pseudonym wherever and
however it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import field_validator

from drkit.sanitize.strategies.base import KeptFn, OriginalsFn, Strategy, ValueFn, needs_text

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler


class Email(Strategy):
    strategy: Literal["email"] = "email"
    domain: str = "example.com"

    DOC = (
        "A deterministic, unique address; the same original address maps to the same "
        "pseudonym everywhere it appears."
    )
    FIELD_DOCS = {"domain": "Domain of the generated addresses."}

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not v or "@" in v or any(c.isspace() for c in v) or "." not in v:
            raise ValueError(f"{v!r} is not a mail domain")
        return v.lower()

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        return needs_text(self, column)

    def value_fn(self, run: Compiler) -> ValueFn:
        return run.recorded(run.email_fn(self))

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        """An address is an original unless it may be its own pseudonym: only then is
        the pseudonym computed (the e-mail map is not read for the others)."""
        full, sink, domain = self.value_fn(run), run.sink, self.domain
        may_stay = run.may_be_own_pseudonym

        def originals(value: str) -> None:
            if may_stay(value, domain):
                full(value)
            else:
                sink(value)

        return originals
