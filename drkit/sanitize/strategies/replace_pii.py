"""``replace_pii``: e-mail addresses, phone numbers and IP addresses found inside free
text and JSON strings (:data:`~.piitext.PII_RE`), each replaced by the very pseudonym
the column strategies give that value (the run's choice: ``Compiler.pii_pseudonym``),
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
from typing import TYPE_CHECKING, Any, Literal

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

        def fn(value: str) -> str:
            stripped = value.lstrip()
            if stripped[:1] in ("{", "["):
                try:
                    doc = json.loads(value)
                except ValueError:
                    doc = None
                if isinstance(doc, dict | list):
                    return json.dumps(walk(run, doc, kinds), ensure_ascii=False)
            return replace_in_text(run, value, kinds)

        return run.cached(fn)

    def originals_fn(self, run: Compiler) -> OriginalsFn:
        """What :meth:`value_fn` hands the sink, without writing the text back (nor JSON
        encoding it), and looking up only the addresses that may be their own
        pseudonyms.  Cached like :meth:`value_fn` (free text repeats: its originals
        are handed once)."""
        kinds = frozenset(self.kinds)

        def originals(value: str) -> None:
            if value.lstrip()[:1] in ("{", "["):
                try:
                    doc = json.loads(value)
                except ValueError:
                    doc = None
                if isinstance(doc, dict | list):
                    originals_in(run, doc, kinds)
                    return
            originals_in_text(run, value, kinds)

        return run.cached(originals)

    def json_rewrite(self, run: Compiler) -> Rewrite:
        kinds = frozenset(self.kinds)
        return lambda v: walk(run, v, kinds)


def replace_in_text(run: Compiler, text: str, kinds: frozenset[str]) -> str:
    """``text`` with every address of ``kinds`` replaced; each original to the sink."""
    if MAY_HOLD_PII.search(text) is None:
        return text
    return PII_RE.sub(lambda match: _replace(run, match, kinds, output=True), text)


def originals_in_text(run: Compiler, text: str, kinds: frozenset[str]) -> None:
    """What :func:`replace_in_text` hands the sink for ``text``, without its output (the
    same matches: ``sub`` and ``finditer`` find the same ones)."""
    if MAY_HOLD_PII.search(text) is None:
        return
    for match in PII_RE.finditer(text):
        _replace(run, match, kinds, output=False)


def _replace(run: Compiler, match: re.Match[str], kinds: frozenset[str], *, output: bool) -> str:
    """One match's replacement, its originals to the sink.  ``output`` False: only the
    originals count, so an address that cannot be its own pseudonym is not looked up
    (the returned text then means nothing)."""
    sink = run.sink
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
            return "::ffff:" + run.pii_pseudonym("ip", str(mapped)) if output else found
        out = run.pii_pseudonym("ipv6", address.compressed)
    elif kind == "email" and not output and not run.text_email_may_stay(found):
        out = ""  # certainly not ``found``: its pseudonym is not needed
    else:
        out = run.pii_pseudonym(kind, found)
    if out != found:
        sink(found)
        if kind == "email" and (key := email_key(found)) != found:
            sink(key)
    return out


def originals_in(run: Compiler, node: Any, kinds: frozenset[str]) -> None:
    """What :func:`walk` hands the sink for a parsed JSON value, without its output."""
    if isinstance(node, str):
        originals_in_text(run, node, kinds)
    elif isinstance(node, dict):
        for k, v in node.items():
            originals_in_text(run, k, kinds)
            originals_in(run, v, kinds)
    elif isinstance(node, list):
        for v in node:
            originals_in(run, v, kinds)


def walk(run: Compiler, node: Any, kinds: frozenset[str]) -> Any:
    """A parsed JSON value with the addresses in every string (keys too) replaced."""
    if isinstance(node, str):
        return replace_in_text(run, node, kinds)
    if isinstance(node, dict):  # keys too: {"anna@corp.example": {...}}
        return {replace_in_text(run, k, kinds): walk(run, v, kinds) for k, v in node.items()}
    if isinstance(node, list):
        return [walk(run, v, kinds) for v in node]
    return node
