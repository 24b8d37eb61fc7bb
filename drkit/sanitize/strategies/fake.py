"""``fake``: a Faker provider's output, deterministic.

The input's keyed MAC picks a value from the provider's pool (made once per run, see
:mod:`.pseudonymizer` and :mod:`.fakepool`), so the same input and salt give the same
output in every table and every run.  A provider whose name says ``email`` gives the
run's one pseudonym of the address (see :mod:`.compiler`); one whose name says
``phone`` reads the number by its key (:func:`~.piitext.phone_key`), so every spelling
of a number gets the same fake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Self

from drkit.sanitize.strategies.base import KeptFn, OriginalsFn, ParseFn, Strategy, ValueFn
from drkit.sanitize.strategies.fakepool import faker_for
from drkit.sanitize.strategies.piitext import phone_key

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler
    from drkit.sanitize.strategies.pseudonymizer import Pseudonymizer


class Fake(Strategy):
    strategy: Literal["fake"] = "fake"
    provider: str
    args: dict[str, Any] | list[Any] | None = None
    unique: bool = False
    locale: str = "en_US"

    DOC = (
        "A Faker provider's output, deterministic: the same input and salt give the same "
        "output in every table and every run."
    )
    FIELD_DOCS = {
        "provider": "Any Faker provider (name, phone_number, company, ...).",
        "args": "Arguments of the provider: a mapping (keyword) or a list (positional).",
        "unique": "Never give the same output for two different inputs.",
        "locale": "Faker locale.",
    }

    def describe(self) -> str:
        return f"fake:{self.provider}" + (" unique" if self.unique else "")

    def checked(self, parse: ParseFn) -> Self:
        """The provider exists and accepts the arguments (one trial call)."""
        try:
            faker = faker_for(self.locale)
        except AttributeError:
            raise ValueError(f"unknown Faker locale {self.locale!r}") from None
        if self.provider.startswith("_") or self.provider in {"seed", "seed_instance"}:
            raise ValueError(f"{self.provider!r} is not a Faker provider")
        try:
            method = getattr(faker, self.provider)
        except AttributeError:
            method = None
        if method is None or not callable(method):
            raise ValueError(f"unknown Faker provider {self.provider!r}")
        try:
            if isinstance(self.args, dict):
                method(**self.args)
            elif isinstance(self.args, list):
                method(*self.args)
            else:
                method()
        except Exception as exc:  # any failure of the trial call is a rules problem
            raise ValueError(
                f"Faker provider {self.provider!r} rejects its args: {type(exc).__name__}: {exc}"
            ) from None
        return self

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        if table.in_unique_key(column.name) and not self.unique:
            return "fake on a unique column needs unique: true"
        return None

    def reads_email_map(self) -> bool:
        return "email" in self.provider  # an e-mail provider gives the map's pseudonyms

    def value_fn(self, run: Compiler) -> ValueFn:
        fake = run.pseudo.fake_fn(self)  # the pool is made now, not in the first row
        if "email" in self.provider:
            return run.recorded(run.email_fn(self))
        if "phone" in self.provider:
            return run.recorded(lambda v: fake(phone_key(v)))
        return run.recorded(fake)

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        """Outside the pool a value is never its own pseudonym: handed over without
        its MAC (``unique`` and e-mail providers: the value function itself)."""
        full = self.value_fn(run)
        if self.unique or "email" in self.provider:
            return full
        pool, sink = frozenset(run.pseudo.pool(self)), run.sink

        def originals(value: str) -> None:
            if value in pool:
                full(value)
            else:
                sink(value)

        return originals

    def outputs(self, pseudo: Pseudonymizer) -> Iterable[str]:
        return () if self.unique else pseudo.pool(self)
