"""The strategies of DESIGN.md §5 as fast, deterministic value functions.

Every pseudonym is a function of (salt, strategy options, input value) only: a keyed
MAC, never Python's ``hash()``.  Per-purpose keys are derived from the salt with
HMAC-SHA256; values are then MACed with keyed BLAKE2b (RFC 7693 keyed mode, a MAC by
design and about three times faster than HMAC-SHA256 per call in CPython), so the same value gets the same pseudonym in
every table, column and run, and another salt gives other pseudonyms.

``fake`` never calls Faker once per row: for each (salt, provider, args, locale) a pool
of values is generated once from a Faker seeded by the salt, and the HMAC of the input
picks one.  Unique outputs (``email``, ``hash``, ``fake`` with ``unique: true``) carry an
80-bit keyed tag of the input, so two distinct inputs collide with probability below
1e-12 even for ten million values; should it ever happen, PostgreSQL refuses the unique
index when the constraints are created and the run fails, it never copies duplicates.

``replace_pii`` finds e-mail addresses, phone numbers and IP addresses inside text and
JSON strings and gives each the very pseudonym the column strategies give that value
(:class:`PiiConfig` says which), so joins by value keep working.

One pseudonym per address, whatever its spelling.  Every strategy keys an address by one
canonical form before MACing it: e-mails by :func:`email_key` (percent-encoding and HTML
entities decoded, ``%40``/``&#64;``/``&#x40;``/``[at]``/``(at)`` read as ``@``, lower
case: mail systems treat case as insignificant, so two addresses differing only in case
share a pseudonym and a case-sensitive unique column holding both fails at its
constraint); phone numbers by :func:`phone_key` (``+`` and the digits, ``00`` read as
``+``), in ``replace_pii`` and in every ``fake`` column whose provider is a phone one;
IPv6 by its compressed form, and an IPv4-mapped IPv6 (``::ffff:10.1.2.3``,
``::ffff:a01:203``) as its IPv4 address (written back as ``::ffff:<IPv4 pseudonym>``).
Local parts and domains may be Unicode: no part of ``jürgen.müller@...`` survives.

The run's e-mail map.  A ``template`` column whose literal text holds an ``@`` renders
e-mail addresses; its output for a row is registered as *the* pseudonym of the address it
replaced (:meth:`Compiler.register_email`), and ``email`` columns, ``fake`` columns with
a Faker e-mail provider and ``replace_pii`` give that pseudonym for that address in any
spelling; an address no template covers gets the pseudonym of the file's ``email``
strategy (else of its Faker e-mail strategy, else ``email`` with example.com).  So that the result never depends on which table is
copied first, each source fills the map before any row moves
(:mod:`drkit.sanitize.emailmap` reads the template columns of the whole table); when one
address appears in several template rows the smallest output wins, whatever the order.
The map is therefore a function of (salt, rules, the source's template columns): the
same in every table of a run, and in every run over the same source rows.
"""

from __future__ import annotations

import functools
import hmac
import html
import ipaddress
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from hashlib import blake2b
from typing import Any
from urllib.parse import unquote

from drkit.sanitize.fakers import faker_for
from drkit.sanitize.jsonpath import apply_path
from drkit.sanitize.pseudomap import PseudonymMap
from drkit.sanitize.rules import (
    Constant,
    Email,
    Fake,
    Hash,
    JsonPaths,
    Keep,
    Mask,
    Nullify,
    ReplacePii,
    Strategy,
    Template,
)

POOL_SIZE = 4096  # a power of two: the MAC picks an entry without bias
TAG_BYTES = 10  # 80 bits, 20 hex characters
CACHE_SIZE = 1 << 16

ValueFn = Callable[[str], "str | None"]
Sink = Callable[[str], None]


def _no_sink(_value: str) -> None:
    return None


_faker_lock = threading.Lock()


def to_text(value: Any) -> str | None:
    """A Python value (Faker's output, a constant) as PostgreSQL input text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, list | tuple | dict | set):
        return json.dumps(list(value) if isinstance(value, set | tuple) else value, default=str)
    return str(value)


# ---------------------------------------------------------------------------
# Keyed pseudonyms
# ---------------------------------------------------------------------------


class Pseudonymizer:
    """Keyed, deterministic pseudonyms for one salt."""

    def __init__(self, salt: bytes, pool_size: int = POOL_SIZE) -> None:
        if pool_size & (pool_size - 1):
            raise ValueError("pool_size must be a power of two")
        self._salt = salt
        self._keys: dict[str, bytes] = {}
        self._pools: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self._pool_size = pool_size
        self._email_key: bytes | None = None
        self._fake_fns: dict[tuple[str, ...], Callable[[str], str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the salt
        return "Pseudonymizer(salt=***)"

    def key(self, purpose: str) -> bytes:
        found = self._keys.get(purpose)
        if found is None:
            found = hmac.digest(self._salt, b"drkit-sanitize/" + purpose.encode(), "sha256")
            self._keys[purpose] = found
        return found

    @staticmethod
    def mac(key: bytes, value: str) -> bytes:
        return blake2b(value.encode("utf-8", "surrogatepass"), key=key, digest_size=32).digest()

    def tag(self, purpose: str, value: str) -> str:
        return self.mac(self.key("tag/" + purpose), value)[:TAG_BYTES].hex()

    # -- fake -----------------------------------------------------------------------

    @staticmethod
    def _fake_id(spec: Fake) -> tuple[str, str, str]:
        args = json.dumps(spec.args, sort_keys=True, default=str)
        return spec.provider, args, spec.locale

    def pool(self, spec: Fake) -> tuple[str, ...]:
        ident = self._fake_id(spec)
        found = self._pools.get(ident)
        if found is not None:
            return found
        with self._lock:
            found = self._pools.get(ident)
            if found is None:
                found = self._make_pool(spec, ident)
                self._pools[ident] = found
        return found

    def _make_pool(self, spec: Fake, ident: tuple[str, str, str]) -> tuple[str, ...]:
        seed = int.from_bytes(self.key("pool/" + "/".join(ident))[:8], "big")
        with _faker_lock:
            faker = faker_for(spec.locale)
            faker.seed_instance(seed)
            method = getattr(faker, spec.provider)
            if isinstance(spec.args, dict):
                values = [method(**spec.args) for _ in range(self._pool_size)]
            elif isinstance(spec.args, list):
                values = [method(*spec.args) for _ in range(self._pool_size)]
            else:
                values = [method() for _ in range(self._pool_size)]
            faker.seed_instance(None)
        return tuple(to_text(v) or "" for v in values)

    def fake(self, spec: Fake, value: str) -> str:
        return self.fake_fn(spec)(value)

    def fake_fn(self, spec: Fake) -> Callable[[str], str]:
        """The ``fake`` pseudonym function of ``spec``, pool and key resolved once."""
        ident = self._fake_id(spec)
        cached = self._fake_fns.get((*ident, str(spec.unique)))
        if cached is not None:
            return cached
        pool = self.pool(spec)
        key = self.key("fake/" + "/".join(ident))
        mask = len(pool) - 1

        def plain(value: str) -> str:
            digest = blake2b(value.encode("utf-8", "surrogatepass"), key=key).digest()
            return pool[int.from_bytes(digest[:8], "big") & mask]

        def unique(value: str) -> str:
            digest = blake2b(value.encode("utf-8", "surrogatepass"), key=key).digest()
            picked = pool[int.from_bytes(digest[:8], "big") & mask]
            tag = digest[8 : 8 + TAG_BYTES].hex()
            if "@" in picked:
                local, _, domain = picked.partition("@")
                return f"{local}.{tag}@{domain}"
            return f"{picked}-{tag}"

        fn = unique if spec.unique else plain
        self._fake_fns[(*ident, str(spec.unique))] = fn
        return fn

    # -- the others ----------------------------------------------------------------

    def email(self, value: str, domain: str) -> str:
        key = self._email_key
        if key is None:
            key = self._email_key = self.key("tag/email")
        digest = blake2b(value.encode("utf-8", "surrogatepass"), key=key, digest_size=32).digest()
        return f"u{digest[:TAG_BYTES].hex()}@{domain}"

    def hash(self, value: str, length: int) -> str:
        return self.mac(self.key("hash"), value).hex()[:length]


def mask(value: str, keep_start: int, keep_end: int, char: str) -> str:
    n = len(value)
    if keep_start + keep_end >= n:
        return char * n
    return value[:keep_start] + char * (n - keep_start - keep_end) + value[n - keep_end :]


# ---------------------------------------------------------------------------
# Personal data inside text
# ---------------------------------------------------------------------------

# An e-mail address in any spelling: Unicode local parts and domains, and the ``@``
# written as ``%40``, ``&#64;``, ``&#x40;``, ``&commat;``, a full-width ``＠``,
# `` [at] `` or ``(at)``.
_AT = r"(?:@|\uff20|%40|&\#0*64;|&\#[xX]0*40;|&commat;|\s?[\[(][aA][tT][\])]\s?)"
_EMAIL = (
    r"(?<![\w%.+\-'])"
    r"(?P<local>\w[\w.%+\-']*)"
    r"(?P<at>" + _AT + r")"
    r"(?P<domain>(?:[^\W_][\w\-]*\.)+[^\W\d_]{2,})"
)
_IPV4_CORE = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = r"(?<![\w.])" + _IPV4_CORE + r"(?![\w.]*\d)"
_IPV6 = (
    r"(?<![\w:])(?:"
    r"(?:[0-9A-Fa-f]{0,4}:){2,6}" + _IPV4_CORE + r"(?![\w.]*\d)"  # ::ffff:10.1.2.3
    r"|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"
    r")"
)
_SEP = r"[\s./\-]?"
_PHONE = (
    r"(?<![\w+.\-/])"
    r"(?:\+\d{1,3}" + _SEP + r"|00\d{1,3}" + _SEP + r")?"
    r"(?:\(\d{1,4}\)" + _SEP + r")?"
    r"\d{2,4}(?:" + _SEP + r"\d{2,4}){1,4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?"
    r"(?![\w\-/])"
)
PII_RE = re.compile(
    f"(?P<email>{_EMAIL})|(?P<ip>{_IPV4})|(?P<ipv6>{_IPV6})|(?P<phone>{_PHONE})",
)
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[./-]\d{2}[./-]\d{4}")
_NATIONAL = re.compile(r"0[1-9]\d{8,12}|00[1-9]\d{7,13}")
_NOT_DIGIT = re.compile(r"\D+")
_AT_SPELLING = re.compile(_AT)


def looks_like_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if digits < 7 or digits > 15:
        return False
    if _DATE_LIKE.fullmatch(text.strip()):
        return False
    # a bare run of digits is an id or an amount, not a phone number, unless it starts
    # with a trunk prefix (0151..., 0049...)
    return not text.isdigit() or _NATIONAL.fullmatch(text) is not None


_PHONE_PUNCT = b" .-/()\t"


def phone_key(value: str) -> str:
    """One spelling per phone number: ``+`` and the digits (``00`` read as ``+``)."""
    compact = value.encode("utf-8", "surrogatepass").translate(None, _PHONE_PUNCT)
    plus = compact[:1] == b"+"
    digits = compact[1:] if plus else compact
    if not digits.isdigit():  # an extension, letters, other separators: the slow way
        text = _NOT_DIGIT.sub("", value)
        plus = value.lstrip().startswith("+")
    else:
        text = digits.decode("ascii")
    if len(text) < 5:
        return value
    if plus:
        return "+" + text
    if text.startswith("00"):
        return "+" + text[2:]
    return text


def email_key(value: str) -> str:
    """One spelling per e-mail address: decoded, ``@`` restored, lower case."""
    if "%" in value:
        value = unquote(value)
    if "&" in value:
        value = html.unescape(value)
    if "@" not in value:
        value = _AT_SPELLING.sub("@", value.replace("\uff20", "@"), count=1)
    return value.strip().lower()


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


# ---------------------------------------------------------------------------
# Compiling strategies into value functions
# ---------------------------------------------------------------------------


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
        self.emails = PseudonymMap()
        # set once a source filled the map from the whole table (drkit.sanitize.emailmap):
        # the copy's own template rows then need not register again
        self.emails_primed = False
        self._text_email: Callable[[str], str] | None = None

    def register_email(self, original: str, pseudonym: str) -> None:
        """A template column turned ``original`` into ``pseudonym``: use it everywhere.

        When rows disagree (the same address in two rows), the smallest pseudonym wins,
        so the map does not depend on the order rows are read in.
        """
        key = email_key(original)
        if "@" not in key:
            return
        self.emails.put_min(key, pseudonym)

    def email_pseudonym(self, value: str, domain: str) -> str:
        """The one pseudonym of an address, in whatever spelling ``value`` has it."""
        key = email_key(value)
        return self.emails.get(key) or self.pseudo.email(key, domain)

    def close(self) -> None:
        """Free the run's e-mail map (its spill file, if any)."""
        self.emails.close()

    # whole values --------------------------------------------------------------------

    def value_fn(self, strategy: Strategy) -> ValueFn:
        """The function for a column (templates are row-level: see :meth:`template`)."""
        if isinstance(strategy, Keep):
            return _identity
        if isinstance(strategy, Template):
            raise TypeError("templates need the row: use Compiler.template")
        if isinstance(strategy, ReplacePii):
            return self._cached(self._replace_pii_fn(strategy), record=False)
        if isinstance(strategy, JsonPaths):
            return self._cached(self._json_fn(strategy), record=False)
        return self._cached(self._plain_fn(strategy), record=True)

    def _cached(self, fn: ValueFn, *, record: bool) -> ValueFn:
        sink = self.sink

        if record:

            def recorded(value: str) -> str | None:
                out = fn(value)
                if out != value:
                    sink(value)
                return out

            # a keyed MAC costs less than a cache miss: plain strategies are not cached
            return recorded
        return functools.lru_cache(maxsize=CACHE_SIZE)(fn)

    def _plain_fn(self, strategy: Strategy) -> ValueFn:
        pseudo = self.pseudo
        if isinstance(strategy, Nullify):
            return lambda _v: None
        if isinstance(strategy, Constant):
            constant = to_text(strategy.value)
            return lambda _v: constant
        if isinstance(strategy, Fake):
            fake = pseudo.fake_fn(strategy)  # the pool is generated now, not in the first row
            if "email" in strategy.provider:
                return self.email_fn(strategy)
            if "phone" in strategy.provider:
                return lambda v: fake(phone_key(v))
            return fake
        if isinstance(strategy, Hash):
            length = strategy.length
            return lambda v: pseudo.hash(v, length)
        if isinstance(strategy, Mask):
            ks, ke, ch = strategy.keep_start, strategy.keep_end, strategy.char
            return lambda v: mask(v, ks, ke, ch)
        if isinstance(strategy, Email):
            return self.email_fn(strategy)
        raise TypeError(f"no value function for {type(strategy).__name__}")

    # personal data inside text -------------------------------------------------------

    def email_fn(self, strategy: Email | Fake) -> Callable[[str], str]:
        """An e-mail strategy's function: the registered pseudonym, else its own, by key."""
        emails = self.emails
        if isinstance(strategy, Email):
            domain = strategy.domain
            return lambda v: self.email_pseudonym(v, domain)
        fake = self.pseudo.fake_fn(strategy)

        def fake_email(value: str) -> str:
            key = email_key(value)
            return emails.get(key) or fake(key)

        return fake_email

    def pii_pseudonym(self, kind: str, value: str) -> str:
        if kind == "email":
            fn = self._text_email
            if fn is None:
                fn = self._text_email = self.email_fn(self.pii.email)
            return fn(value)
        if kind == "phone":
            return self.pseudo.fake_fn(self.pii.phone)(phone_key(value))
        if kind == "ipv6":
            return self.pseudo.fake_fn(self.pii.ipv6)(value)
        return self.pseudo.fake_fn(self.pii.ipv4)(value)

    def replace_pii_text(self, text: str, kinds: frozenset[str]) -> str:
        sink = self.sink

        def substitute(match: re.Match[str]) -> str:
            kind = match.lastgroup or ""
            if kind in ("local", "at", "domain"):
                kind = "email"
            found = match.group(kind)
            base = "ip" if kind in ("ip", "ipv6") else kind
            if base not in kinds:
                return found
            if kind == "phone" and not looks_like_phone(found):
                return found
            if kind == "ipv6":
                try:  # the parse is the check: times like 10:15:00 do not parse
                    address = ipaddress.IPv6Address(found)
                except ValueError:
                    return found
                mapped = address.ipv4_mapped
                if mapped is not None:  # ::ffff:10.1.2.3 is 10.1.2.3
                    sink(found)
                    sink(str(mapped))
                    return "::ffff:" + self.pii_pseudonym("ip", str(mapped))
                out = self.pii_pseudonym("ipv6", address.compressed)
            else:
                out = self.pii_pseudonym(kind, found)
            if out != found:
                sink(found)
                if kind == "email" and (key := email_key(found)) != found:
                    sink(key)
            return out

        return PII_RE.sub(substitute, text)

    def _replace_pii_fn(self, strategy: ReplacePii) -> ValueFn:
        kinds = frozenset(strategy.kinds)

        def fn(value: str) -> str:
            stripped = value.lstrip()
            if stripped[:1] in ("{", "["):
                try:
                    doc = json.loads(value)
                except ValueError:
                    doc = None
                if isinstance(doc, dict | list):
                    return json.dumps(self._walk_pii(doc, kinds), ensure_ascii=False)
            return self.replace_pii_text(value, kinds)

        return fn

    def _walk_pii(self, node: Any, kinds: frozenset[str]) -> Any:
        if isinstance(node, str):
            return self.replace_pii_text(node, kinds)
        if isinstance(node, dict):  # keys too: {"anna@corp.example": {...}}
            return {
                self.replace_pii_text(k, kinds): self._walk_pii(v, kinds) for k, v in node.items()
            }
        if isinstance(node, list):
            return [self._walk_pii(v, kinds) for v in node]
        return node

    # json paths ---------------------------------------------------------------------

    def _json_rewrite(self, strategy: Strategy) -> Callable[[Any], Any]:
        if isinstance(strategy, Keep):
            return lambda v: v
        if isinstance(strategy, Nullify):

            def nullify(v: Any) -> Any:
                if v is not None:
                    self._record_json(v)
                return None

            return nullify
        if isinstance(strategy, Constant):
            constant = strategy.value

            def const(v: Any) -> Any:
                if v is not None and v != constant:
                    self._record_json(v)
                return constant if v is not None else None

            return const
        if isinstance(strategy, ReplacePii):
            kinds = frozenset(strategy.kinds)
            return lambda v: self._walk_pii(v, kinds)
        fn = self.value_fn(strategy)

        def rewrite(v: Any) -> Any:
            if v is None:
                return None
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            return fn(text)

        return rewrite

    def _record_json(self, v: Any) -> None:
        if isinstance(v, str):
            self.sink(v)
        elif isinstance(v, dict | list):
            for leaf in _leaves(v):
                self.sink(leaf)

    def _json_fn(self, strategy: JsonPaths) -> ValueFn:
        steps = [(path_steps, self._json_rewrite(sub)) for _, path_steps, sub in strategy.compiled]

        def fn(value: str) -> str:
            try:
                doc = json.loads(value)
            except ValueError:
                raise ValueError("the column holds text that is not JSON") from None
            for path_steps, rewrite in steps:
                doc = apply_path(doc, path_steps, rewrite)
            return json.dumps(doc, ensure_ascii=False)

        return fn

    # templates ------------------------------------------------------------------------

    @staticmethod
    def template(strategy: Template, values: dict[str, str | None]) -> str | None:
        """Render a template from the row's (already sanitized) values; NULL if a field is."""
        if any(values.get(name) is None for name in strategy.fields()):
            return None
        return strategy.template.format_map(values)


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


def _identity(value: str) -> str:
    return value


def pool_values(pseudo: Pseudonymizer, strategies: Iterable[Strategy]) -> set[str]:
    """Every value a fake pool or constant can produce (for the leak scan's coincidences)."""
    values: set[str] = set()
    for s in strategies:
        if isinstance(s, Fake) and not s.unique:
            values.update(pseudo.pool(s))
        elif isinstance(s, Constant) and (text := to_text(s.value)) is not None:
            values.add(text)
    return values
