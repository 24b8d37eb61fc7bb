"""``replace_pii``: e-mail addresses, phone numbers and IP addresses found inside free
text and JSON strings (:data:`~.piitext.PII_RE`), each replaced by the very pseudonym
the column strategies give that value (the run's choice: ``Compiler.pii_fn``),
so joins by value keep working.

A value that parses as a JSON object or array is walked, keys included
(``{"anna@corp.example": {...}}``), and written back as JSON.  An IPv6 address is
keyed by its compressed form; an IPv4-mapped one (``::ffff:10.1.2.3``,
``::ffff:a01:203``) is its IPv4 address, written back as ``::ffff:<IPv4 pseudonym>``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import Field

from drkit.sanitize.strategies.base import (
    KeptFn,
    OriginalsFn,
    Rewrite,
    Strategy,
    ValueFn,
    needs_text,
)
from drkit.sanitize.strategies.piitext import MAY_HOLD_PII, PII_RE, email_key, looks_like_phone

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler

PiiKind = Literal["email", "phone", "ip"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "ip")


class ReplacePii(Strategy):
    strategy: Literal["replace_pii"] = "replace_pii"
    kinds: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS), min_length=1)

    DOC = (
        "For free text and JSON: finds e-mail addresses, phone numbers and IP "
        "addresses inside the text and replaces each with the pseudonym the column strategies "
        "give it."
    )
    FIELD_DOCS = {"kinds": "What to look for: email, phone, ip. Default: all three."}

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        return needs_text(self, column)

    def reads_email_map(self) -> bool:
        return "email" in self.kinds

    def value_fn(self, run: Compiler) -> ValueFn:
        kinds = frozenset(self.kinds)
        text, walk = text_rewriter(run, kinds), json_walker(run, kinds)
        dumps = _DUMPS

        def fn(value: str) -> str:
            if _opens_json(value):
                try:
                    doc = json.loads(value)
                except ValueError:
                    doc = None
                if isinstance(doc, dict | list):
                    return dumps(walk(doc))
            return text(value)

        return run.cached(fn)

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        """What :meth:`value_fn` hands the sink, without writing the text back (nor JSON
        encoding it), and looking up only the addresses that may be their own
        pseudonyms.  Cached like :meth:`value_fn` (free text repeats: its originals
        are handed once)."""
        text, node = originals_reader(run, frozenset(self.kinds))

        def originals(value: str) -> None:
            if _opens_json(value):
                doc = _strings_of_json(value)
                if isinstance(doc, dict | list):
                    node(doc)
                    return
            text(value)

        return run.cached(originals)

    def json_rewrite(self, run: Compiler) -> Rewrite:
        return json_walker(run, frozenset(self.kinds))


#: ``json.dumps(doc, ensure_ascii=False)`` without making an encoder per call
_DUMPS = json.JSONEncoder(ensure_ascii=False).encode


def _strings_of_json(value: str) -> Any:
    """``json.loads(value)`` for a reader of its strings alone (keys and string values),
    None when ``value`` is no JSON.  orjson (C, about four times faster) wherever it
    parses the value: it gives the same strings in the same order, and where its numbers
    differ from json's (an integer beyond 64 bits becomes a float) no string is read
    from them.  json's own parse where orjson refuses what json takes (NaN, infinities,
    lone surrogates).  The write pass keeps json's parse: it writes the numbers back."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(value)
    except ValueError:
        return None


_OPENS = ("{", "[")


def _opens_json(value: str) -> bool:
    """The value's first non-blank character opens a JSON object or array (the blank
    strip only when the value starts with one: no copy of every value)."""
    first = value[:1]
    return first in _OPENS or (first.isspace() and value.lstrip()[:1] in _OPENS)


def text_rewriter(run: Compiler, kinds: frozenset[str]) -> Callable[[str], str]:
    """``text -> text`` with every address of ``kinds`` replaced by its pseudonym (each
    original to the sink): the search and the pseudonym functions resolved once."""
    search, sub = MAY_HOLD_PII.search, PII_RE.sub
    one = _replacement(run, kinds, output=True)

    def rewrite(text: str) -> str:
        if search(text) is None:
            return text
        return sub(one, text)

    return rewrite


#: strings a JSON walker remembers as holding no PII character, and how long they may be
#: (bounded: keys and enumerations repeat, free text need not be remembered)
_CLEAN_STRINGS = 4096
_CLEAN_LENGTH = 64


def json_walker(run: Compiler, kinds: frozenset[str]) -> Rewrite:
    """A parsed JSON value with every string (keys too: ``{"anna@corp.example": ...}``)
    through :func:`text_rewriter`.  A string or scalar member is handled in place,
    without a call of its own; a short string without a PII character (the same keys
    and statuses in every document) is remembered, and is then itself without a search."""
    rewrite = text_rewriter(run, kinds)
    search = MAY_HOLD_PII.search
    clean: set[str] = set()

    def text(value: str) -> str:
        if search(value) is None:  # what ``rewrite`` returns as it is, handing nothing
            if len(value) <= _CLEAN_LENGTH and len(clean) < _CLEAN_STRINGS:
                clean.add(value)
            return value
        return rewrite(value)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                # the key first, as the sink met them in a dict display
                key = k if k in clean else text(k)
                if isinstance(v, str):
                    if v not in clean:
                        v = text(v)
                elif isinstance(v, dict | list):
                    v = walk(v)
                out[key] = v
            return out
        if isinstance(node, list):
            items = []
            for v in node:
                if isinstance(v, str):
                    if v not in clean:
                        v = text(v)
                elif isinstance(v, dict | list):
                    v = walk(v)
                items.append(v)
            return items
        if isinstance(node, str):
            return node if node in clean else text(node)
        return node

    return walk


def _replacement(
    run: Compiler, kinds: frozenset[str], *, output: bool
) -> Callable[[re.Match[str]], str]:
    """One match's replacement, its originals to the sink.  ``output`` False: only the
    originals count, so an address that cannot be its own pseudonym is not looked up
    (the returned text then means nothing).  A run's writing pass, whose sink drops
    everything, does not compute what it would hand it."""
    sink = run.sink
    records = run.records
    pseudonym = run.pii_fn
    may_stay = run.text_email_may_stay
    ip_wanted = "ip" in kinds

    def one(match: re.Match[str]) -> str:
        kind = match.lastgroup or ""
        if kind in ("local", "at", "domain"):
            kind = "email"
        found = match.group(kind)
        if kind == "ip":
            if not ip_wanted:
                return found
            out = pseudonym("ip")(found)
        elif kind == "ipv6":
            if not ip_wanted:
                return found
            try:  # the parse is the check: times like 10:15:00 do not parse
                address = ipaddress.IPv6Address(found)
            except ValueError:
                return found
            mapped = address.ipv4_mapped
            if mapped is not None:  # ::ffff:10.1.2.3 is 10.1.2.3
                sink(found)
                sink(str(mapped))
                return "::ffff:" + pseudonym("ip")(str(mapped)) if output else found
            out = pseudonym("ipv6")(address.compressed)
        elif kind not in kinds:
            return found
        elif kind == "phone":
            if not looks_like_phone(found):
                return found
            out = pseudonym("phone")(found)
        elif not output and not may_stay(found):
            out = ""  # certainly not ``found``: its pseudonym is not needed
        else:
            out = pseudonym("email")(found)
        if records and out != found:
            sink(found)
            if kind == "email" and (key := email_key(found)) != found:
                sink(key)
        return out

    return one


def originals_reader(
    run: Compiler, kinds: frozenset[str]
) -> tuple[Callable[[str], None], Callable[[Any], None]]:
    """(text -> None, parsed JSON value -> None): what :func:`text_rewriter` and
    :func:`json_walker` hand the sink, without their output (the same matches: ``sub``
    and ``finditer`` find the same ones); the search and the replacement resolved once,
    not per string."""
    search, finditer = MAY_HOLD_PII.search, PII_RE.finditer
    one = _replacement(run, kinds, output=False)
    clean: set[str] = set()  # as the walker's: short strings without a PII character

    def text(value: str) -> None:
        if search(value) is None:
            if len(value) <= _CLEAN_LENGTH and len(clean) < _CLEAN_STRINGS:
                clean.add(value)
            return
        for match in finditer(value):
            one(match)

    def node(value: Any) -> None:
        if isinstance(value, str):
            if value not in clean:
                text(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                if k not in clean:
                    text(k)
                if isinstance(v, str):
                    if v not in clean:
                        text(v)
                elif isinstance(v, dict | list):
                    node(v)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    if v not in clean:
                        text(v)
                elif isinstance(v, dict | list):
                    node(v)

    return text, node
