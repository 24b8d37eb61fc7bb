"""``email``: a deterministic, unique address for each original address.

The address is keyed by its canonical spelling (:func:`~.piitext.email_key`), and the
run's e-mail map decides its pseudonym: the one a template column rendered for it, else
``u<tag>@domain`` (see :mod:`.compiler`), so one address has one pseudonym wherever and
however it is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import field_validator

from drkit.sanitize.strategies.base import KeptFn, Strategy, ValueFn, needs_text

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
