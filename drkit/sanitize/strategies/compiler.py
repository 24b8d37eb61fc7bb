"""Strategies made into value functions for one run, and the run's one pseudonym per
address.

:class:`Compiler` holds what a run's strategies share: the :class:`~.pseudonymizer.Pseudonymizer`
(keys and pools, pure functions of the salt), the sink that receives every original a
function replaced (for the leak scan), the choice of which column strategy gives the
pseudonym of an address found inside text (:class:`PiiConfig`), and the e-mail map.

The run's e-mail map.  A ``template`` column whose literal text holds an ``@`` renders
e-mail addresses; its output for a row is registered as *the* pseudonym of the address it
replaced (:meth:`Compiler.register_email`), and ``email`` columns, ``fake`` columns with
a Faker e-mail provider and ``replace_pii`` give that pseudonym for that address in any
spelling (keyed by :func:`~.piitext.email_key`); an address no template covers gets the
pseudonym of the file's ``email`` strategy (else of its Faker e-mail strategy, else
``email`` with example.com).  So that the result never depends on which table is copied
first, the run fills the map from the source before any row moves
(:mod:`drkit.sanitize.emailmap` reads the template columns of the whole table); when one
address appears in several template rows the smallest output wins, whatever the order.
The map is therefore a function of (salt, rules, the source's template columns): the
same in every table of a run, and in every run over the same source rows.

Case twins.  A key may hold two addresses that differ only in letter case (a
case-sensitive unique column: two rows), and a foreign key names one of them exactly; a
citext key is referenced in any case.  So a lookup takes the pseudonym registered for the
address's exact spelling (:func:`~.piitext.email_spelling`) first, else the smallest one
registered for any spelling with the same case-folded key.  A child row naming ``cy@x``
gets the pseudonym of the parent row ``cy@x``, never that of its twin ``Cy@x``; a citext
child naming ``ANN@x`` gets that of the parent ``Ann@x``.  The map holds a template's
output under the exact spelling and, smallest wins, under the folded key; but a spelling
that is already its own folded key (most addresses) is held once, under its exact entry,
and a lookup by folded key takes the smaller of the folded entry and that exact one, so
the map holds one entry per such address rather than two.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from drkit.sanitize.strategies.base import Sink, Strategy, ValueFn
from drkit.sanitize.strategies.email import Email
from drkit.sanitize.strategies.fake import Fake
from drkit.sanitize.strategies.piitext import email_spelling, phone_key
from drkit.sanitize.strategies.pseudomap import PseudonymMap, PutLog
from drkit.sanitize.strategies.pseudonymizer import TAG_BYTES, Pseudonymizer
from drkit.sanitize.strategies.replace_pii import ReplacePii
from drkit.sanitize.strategies.template import Template

CACHE_SIZE = 1 << 16
#: the e-mail map's entries for an exact spelling start with this; a folded key never
#: does (it is stripped of white space)
_EXACT = "\t"


def _no_sink(_value: str) -> None:
    return None


@dataclass(frozen=True)
class PiiConfig:
    """Which column strategy gives the pseudonym of each kind found in text."""

    email: Email | Fake = field(default_factory=Email)  # Email, or a Faker e-mail provider
    phone: Fake = field(default_factory=lambda: Fake(provider="phone_number"))
    ipv4: Fake = field(default_factory=lambda: Fake(provider="ipv4"))
    ipv6: Fake = field(default_factory=lambda: Fake(provider="ipv6"))

    @classmethod
    def from_strategies(cls, strategies: Iterable[Strategy]) -> PiiConfig:
        """Take the file's own email / phone / ip strategies, so pseudonyms agree."""
        email: Email | None = None
        fake_email: Fake | None = None
        phone: Fake | None = None
        ipv4: Fake | None = None
        ipv6: Fake | None = None
        for s in strategies:
            if isinstance(s, Email) and email is None:
                email = s
            elif isinstance(s, Fake):
                if fake_email is None and "email" in s.provider:
                    fake_email = s
                elif phone is None and "phone" in s.provider:
                    phone = s
                elif ipv4 is None and s.provider.startswith("ipv4"):
                    ipv4 = s
                elif ipv6 is None and s.provider == "ipv6":
                    ipv6 = s
        default = cls()
        return cls(
            email=email or fake_email or default.email,
            phone=phone or default.phone,
            ipv4=ipv4 or default.ipv4,
            ipv6=ipv6 or default.ipv6,
        )


class Compiler:
    """Turns strategies into ``str -> str | None`` functions for one run.

    ``sink`` receives every original value a function replaced (whole values, and the
    e-mails/phones/IPs found inside text), for the leak scan.
    """

    def __init__(
        self, pseudo: Pseudonymizer, pii: PiiConfig | None = None, sink: Sink | None = None
    ) -> None:
        self.pseudo = pseudo
        self.pii = pii or PiiConfig()
        self.sink: Sink = sink or _no_sink
        # e-mail key -> the pseudonym a template column gave that address (see module doc)
        self.emails: PseudonymMap | PutLog = PseudonymMap()
        # set once the run filled the map from the whole table (drkit.sanitize.emailmap):
        # the copy's own template rows then need not register again
        self.emails_primed = False
        # kind -> the pseudonym function of addresses of that kind found in text
        self._pii_fns: dict[str, Callable[[str], str]] = {}

    @classmethod
    def for_rules(
        cls, pseudo: Pseudonymizer, strategies: list[Strategy], sink: Sink | None = None
    ) -> Compiler:
        """A compiler whose pseudonyms of addresses in text agree with the rules' own
        column strategies (:meth:`PiiConfig.from_strategies`)."""
        return cls(pseudo, PiiConfig.from_strategies(strategies), sink)

    def register_email(self, original: str, pseudonym: str) -> None:
        """A template column turned ``original`` into ``pseudonym``: use it everywhere.

        When rows disagree (the same address in two rows), the smallest pseudonym wins,
        so the map does not depend on the order rows are read in.  The exact spelling is
        registered too (see the module docstring: case twins).
        """
        spelling = email_spelling(original)
        key = spelling.lower()
        if "@" not in key:
            return
        self.emails.put_min(_EXACT + spelling, pseudonym)
        if spelling != key:  # else its exact entry stands for the folded key too
            self.emails.put_min(key, pseudonym)

    def registered(self, value: str) -> tuple[str, str | None]:
        """(the folded key of an address, the pseudonym a template registered for it:
        for its exact spelling first, else the smallest for any spelling of its folded
        key)."""
        spelling = email_spelling(value)
        key = spelling.lower()
        exact = _EXACT + spelling
        if spelling == key:
            return key, self.emails.first_or_smallest(exact, (key,))
        return key, self.emails.first_or_smallest(exact, (key, _EXACT + key))

    def may_be_own_pseudonym(self, value: str, domain: str) -> bool:
        """Could :meth:`email_pseudonym` of ``value`` (with ``domain``) be ``value``
        itself?  False is certain, and costs no lookup in the map: the pseudonym is then
        neither a template's output (the map never held ``value``) nor drkit's own
        ``u<tag>@domain`` spelling."""
        if self.emails.may_hold_value(value):
            return True
        return (
            len(value) == len(domain) + 2 + 2 * TAG_BYTES
            and value[0] == "u"
            and value.endswith("@" + domain)
        )

    def text_email_may_stay(self, value: str) -> bool:
        """Could the pseudonym ``replace_pii`` gives the address ``value`` be ``value``
        itself?  False is certain (see :meth:`may_be_own_pseudonym`)."""
        email = self.pii.email
        if isinstance(email, Email):
            return self.may_be_own_pseudonym(value, email.domain)
        return True  # a Faker e-mail provider: its pool may hold anything

    def email_pseudonym(self, value: str, domain: str) -> str:
        """The one pseudonym of an address, in whatever spelling ``value`` has it (but a
        case twin's own, when a template registered it)."""
        key, found = self.registered(value)
        return found or self.pseudo.email(key, domain)

    def writing(self) -> Compiler:
        """This compiler for the pass that writes: the same pseudonyms and e-mail map,
        and a sink that drops what it is handed (the originals were all handed over in
        the originals pass, before the first row was written)."""
        return self.handing(_no_sink, self.emails)

    def handing(self, sink: Sink, emails: PseudonymMap | PutLog) -> Compiler:
        """This compiler with its originals handed to ``sink`` and its e-mail map's puts
        and reads made through ``emails`` (the same pseudonyms)."""
        other = copy.copy(self)
        other.sink = sink
        other.emails = emails
        other._pii_fns = {}  # its e-mail function reads through this compiler
        return other

    def close(self) -> None:
        """Free the run's e-mail map (its spill file, if any)."""
        self.emails.close()

    # the functions of strategies --------------------------------------------------------

    def value_fn(self, strategy: Strategy) -> ValueFn:
        """The function for a column (templates are row-level: see :meth:`template`)."""
        return strategy.value_fn(self)

    #: a template's output for one row's (already sanitized) values; NULL if a field is
    template = staticmethod(Template.render)

    @property
    def records(self) -> bool:
        """Whether the sink keeps what it is handed (False in the writing pass: a
        function need not even compute what it would hand it)."""
        return self.sink is not _no_sink

    def recorded(self, fn: ValueFn) -> ValueFn:
        """``fn`` handing each value it changes to the sink: a strategy that replaces
        whole values (``fn`` itself where the sink drops everything).  Not cached: a
        keyed MAC costs less than a cache miss."""
        sink = self.sink
        if not self.records:
            return fn

        def recorded(value: str) -> str | None:
            out = fn(value)
            if out != value:
                sink(value)
            return out

        return recorded

    def cached(self, fn: ValueFn) -> ValueFn:
        """``fn`` behind a bounded cache: a strategy that parses and rewrites parts of a
        value (and hands what it replaces to the sink itself)."""
        return functools.lru_cache(maxsize=CACHE_SIZE)(fn)

    def record_json(self, v: Any) -> None:
        """Hand the strings of a JSON value a strategy dropped or replaced to the sink."""
        if isinstance(v, str):
            self.sink(v)
        elif isinstance(v, dict | list):
            for leaf in _leaves(v):
                self.sink(leaf)

    # addresses ------------------------------------------------------------------------

    def email_fn(self, strategy: Email | Fake) -> Callable[[str], str]:
        """An e-mail strategy's function: the registered pseudonym, else its own, by key."""
        if isinstance(strategy, Email):
            domain = strategy.domain
            return lambda v: self.email_pseudonym(v, domain)
        fake = self.pseudo.fake_fn(strategy)

        def fake_email(value: str) -> str:
            key, found = self.registered(value)
            return found or fake(key)

        return fake_email

    def pii_fn(self, kind: str) -> Callable[[str], str]:
        """The pseudonym function of an address of ``kind`` found inside text (``email``,
        ``phone``, ``ipv6``; any other kind is an IPv4 address), made on first use
        (a kind's pool only when text holds one) and then once per compiler."""
        fn = self._pii_fns.get(kind)
        if fn is None:
            if kind == "email":
                fn = self.email_fn(self.pii.email)
            elif kind == "phone":
                fn = _by_phone_key(self.pseudo.fake_fn(self.pii.phone))
            elif kind == "ipv6":
                fn = self.pseudo.fake_fn(self.pii.ipv6)
            else:
                fn = self.pseudo.fake_fn(self.pii.ipv4)
            self._pii_fns[kind] = fn
        return fn


def _by_phone_key(fake: Callable[[str], str]) -> Callable[[str], str]:
    return lambda value: fake(phone_key(value))


def _leaves(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            found.append(current)
        elif isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


def pool_values(pseudo: Pseudonymizer, strategies: Iterable[Strategy]) -> set[str]:
    """Every value a strategy gives whatever its input (a fake pool, a constant): the
    leak scan cannot tell an original equal to one from drkit's own output."""
    values: set[str] = set()
    for s in strategies:
        values.update(s.outputs(pseudo))
    return values


def fake_specs(strategies: Iterable[Strategy]) -> list[Fake]:
    """The ``fake`` strategies a run may need pools for: the file's own, and those
    ``replace_pii`` gives found values when the file replaces personal data in text."""
    found = list(strategies)
    specs = [s for s in found if isinstance(s, Fake)]
    if any(isinstance(s, ReplacePii) for s in found):
        pii = PiiConfig.from_strategies(found)
        specs += [s for s in (pii.email, pii.phone, pii.ipv4, pii.ipv6) if isinstance(s, Fake)]
    return specs
