"""The forms an original is searched in stay exactly the set they were before the
originals pass was made cheaper: ``canonical_forms`` held equal, on random and
adversarial values, to a plain per-value oracle (the implementation it replaced,
copied here), and the leak filter's hashing of a batch held equal to a per-form
oracle of the same arithmetic."""

from __future__ import annotations

import html
import json
import re
import unicodedata

import numpy as np
import phonenumbers
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drkit.sanitize.copytext import escape_text
from drkit.sanitize.scan.inflight import NameIndex
from drkit.sanitize.scan.leakfilter import LONG, LeakFilter, tags_of
from drkit.sanitize.scan.leakscan import LeakIndex, canonical_forms
from drkit.sanitize.strategies.piitext import email_key

# -- the oracle: canonical_forms as it was, one value at a time ----------------------

_SPECIAL = re.compile(r"[\\\"'&<>\x00-\x1f\x7f]")
_COMPACT = b" -./()"
_PHONE_START = frozenset("+(0123456789")
_PHONE_LIKE = re.compile(r"(?:\+|00)?[\d\s().\-/]{7,}")
_NOT_PHONE = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?|\d{4}-\d\d-\d\d.*|\d\d?[./-]\d\d?[./-]\d{2,4}|[\d:. ]+"
)
_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def oracle_forms_of(value: str) -> list[bytes]:
    base = value.casefold()
    if _SPECIAL.search(base) is None:
        return [base.encode("utf-8", "surrogateescape")]
    spellings = {
        base,
        json.dumps(base, ensure_ascii=False)[1:-1],
        base.replace("'", "''"),
        base.replace('"', '""'),
        html.escape(base, quote=False),
    }
    return [escape_text(s).encode("utf-8", "surrogateescape") for s in spellings]


def oracle_forms_of_many(values: list[str]) -> list[bytes]:
    if not values:
        return []
    folded = "\x00".join(values).casefold()
    forms: list[bytes] = []
    for value in folded.split("\x00"):
        forms += oracle_forms_of(value)
    return forms


def oracle_phone_forms(value: str) -> list[str]:
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) < 7 or len(digits) > 17:
        return []
    found = [digits]
    text = value.strip()
    if text.startswith(("+", "00")):
        if text.startswith("00"):
            digits = digits[2:]
        found += ["+" + digits, "00" + digits]
        for length in (1, 2, 3):
            if int(digits[:length]) in _COUNTRY_CODES:
                national = digits[length:]
                if len(national) >= 6:
                    found += [national, "0" + national]
                break
    return found


def oracle(values: list[str]) -> set[bytes]:
    stripped = [v.strip() if v[:1].isspace() or v[-1:].isspace() else v for v in values]
    extra: list[str] = []
    for value in stripped:
        if not value.isascii():
            normal = unicodedata.normalize("NFKC", value)
            if normal != value:
                extra.append(normal)
        elif ("%" in value or "&" in value or "[" in value or "(" in value) and "@" not in value:
            key = email_key(value)
            if "@" in key:
                extra.append(key)
        if (
            value[:1] in _PHONE_START
            and _PHONE_LIKE.fullmatch(value)
            and not _NOT_PHONE.fullmatch(value)
        ):
            extra += oracle_phone_forms(value)
    forms = oracle_forms_of_many(stripped + extra)
    squeezed = [f.translate(None, _COMPACT) for f in forms]
    return set(forms + [f for f in squeezed if not f.lstrip(b"+").isdigit()])


# -- values an attacker would try ---------------------------------------------------

PIECES = [
    "anna",
    "Rossi",
    "ANNA.ROSSI",
    "x",
    "@",
    "%40",
    "&#64;",
    "&#x40;",
    "&commat;",
    " [at] ",
    "(at)",
    "\uff20",  # fullwidth @
    "example.org",
    ".com",
    "+",
    "00",
    "39",
    "347",
    "1234567",
    "0",
    "5",
    "(",
    ")",
    "-",
    ".",
    "/",
    " ",
    "  ",
    ":",
    "10.0.0.5",
    "2024-01-31",
    "\t",
    "\n",
    "\r",
    "\\",
    '"',
    "'",
    "&",
    "<",
    ">",
    "&amp;",
    "\x01",
    "\x1c",
    "\x1f",
    "\x0b",
    "\x0c",
    "\x7f",
    "\x00",
    "\u00a0",  # no-break space (NFKC: a space)
    "\u2003",  # em space
    "\u3000",  # ideographic space
    "ß",
    "ẞ",
    "İ",
    "Σ",
    "ﬁ",  # ligature (NFKC: fi)
    "Å",
    "A\u030a",  # A and a combining ring (NFKC composes)
    "\u0301",
    "é",
    "ＡＢＣ",  # fullwidth letters
    "１２３４５６７",  # fullwidth digits
    "٣٤٥٦٧٨٩",  # Arabic-Indic digits
    "²",
    "½",
    "jürgen",
    "$2b$12$",
    "sk_live_",
    "0123456789abcdef",
]

plain = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x3100), max_size=20
)


def joined(pieces: list[str]) -> str:
    return "".join(pieces)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=8).map(joined), max_size=12))
@example([])
@example([""])
@example(["", ""])
@example(["+39 347 123 4567", "0039 347 1234567", "(347) 123-4567", "347.123.4567"])
@example(["10.0.0.5", "10.0.0.5/24", "2024-01-31 12:00", "31/01/2024", "12:30:45"])
@example(["anna%40example.org", "anna&#64;example.org", "anna [at] example.org"])
@example(["  padded  ", "char(n)   ", "\u00a0nbsp\u00a0", "\x1cinfo\x1f"])
@example(["ａｎｎａ＠ｅｘａｍｐｌｅ．ｏｒｇ", "Ａnna", "ﬁle", "Straße"])
@example(["a\x00b", "+39 347\x00123 4567", "\x00", "12\x00+39 3471234567"])
@example(["O'Brien", 'say "hi"', "a\\b", "tab\there", "x<y>&z", "line\nbreak"])
@example(["1234567", "+1234567", "00123456789012345678", "+", "+++"])
def test_canonical_forms_equal_the_per_value_oracle(batch: list[str]) -> None:
    assert set(canonical_forms(batch)) == oracle(batch)


@settings(max_examples=500, deadline=None)
@given(st.lists(plain, max_size=12))
def test_canonical_forms_equal_the_oracle_on_any_text(batch: list[str]) -> None:
    assert set(canonical_forms(batch)) == oracle(batch)


def test_a_batch_is_the_union_of_its_values() -> None:
    """One value's forms never depend on its neighbours in the batch (the batch is
    joined and split: a separator inside a value must not leak into the next)."""
    batch = ["a\x00+39 347 123 4567", "  x  ", "anna%40example.org", "O'Brien", "+39 3471234567"]
    union: set[bytes] = set()
    for value in batch:
        union |= oracle([value])
    assert set(canonical_forms(batch)) == oracle(batch)
    assert oracle(batch) == union


# -- the filter's keys of a batch -----------------------------------------------------

_BASE = 0x100000001B3
_MASK = (1 << 64) - 1


def _mix(h: int, tag: int) -> int:
    h ^= (tag * 0x9E3779B97F4A7C15) & _MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def oracle_tag(form: bytes) -> int:
    """The whole filter's key: the polynomial hash of the first LONG bytes, mixed with
    their length."""
    piece = form[:LONG]
    h = sum(byte * pow(_BASE, i, 1 << 64) for i, byte in enumerate(piece)) & _MASK
    return _mix(h, len(piece))


# forms hold no NUL (canonical_forms splits on it), but one that did would be stored and
# hashed whole all the same
forms = st.lists(st.binary(min_size=0, max_size=90), max_size=30)


@settings(max_examples=300, deadline=None)
@given(forms)
def test_tags_equal_the_per_form_oracle(batch: list[bytes]) -> None:
    assert tags_of(batch).tolist() == [oracle_tag(f) for f in batch]


@settings(max_examples=200, deadline=None)
@given(forms)
@example([b"    ", b" abcd ", b"abc", b"\tabcd", b"abcd\x0b", b"x" * 200, b"ab\x00cd", b""])
def test_the_filter_keeps_what_it_kept_before(batch: list[bytes]) -> None:
    """Every form of 4 bytes or more (blanks around it not counted) is stored under its
    tag, truncated to LONG bytes; shorter ones are not stored."""
    leak_filter = LeakFilter()
    leak_filter.add(set(batch))
    kept = {f[:LONG] for f in batch if len(f) >= 4 and len(f[:LONG].strip()) >= 4}
    wanted = {f[:LONG] for f in batch} | {b"zzzz-never-added"}
    confirmed, _ = leak_filter.confirm(wanted, set())
    assert confirmed == kept
    assert leak_filter.distinct <= len(kept)
    leak_filter.close()


def test_index_and_names_hand_over_the_same_forms() -> None:
    """The leak index (with its memory of recent values) and the name index hand the
    filter exactly the canonical forms (the names': those without a space)."""
    batch = ["Anna Rossi", "Anna Rossi", "+39 347 123 4567", "ＡＮＮＡ", "x@y.org"] * 3
    handed: set[bytes] = set()
    index = LeakIndex(store=handed.update)  # where a worker's index hands its forms
    for value in batch:
        index.add(value)
    index.flush()
    assert handed == oracle(batch)
    names_handed: set[bytes] = set()
    names = NameIndex(store=names_handed.update)
    for value in ["Anna Rossi", "Mrs. O'Brien-Smith.", "  Ｊｏｈｎｓｏｎ  ", "solo"]:
        names.add(value)
    names.flush()
    last = ["Rossi", "O'Brien-Smith", "Ｊｏｈｎｓｏｎ", "solo"]
    assert names_handed == {f for f in oracle(last) if b" " not in f}


def test_prefix_and_whole_filters_hold_every_kept_form() -> None:
    """A long form is found at any place in a text, a short one as a whole token."""
    leak_filter = LeakFilter()
    leak_filter.add({b"anna.rossi@example.org", b"rossi", b"x" * 100, b"abc"})
    text = b"mail anna.rossi@example.org to rossi; " + b"x" * 100 + b" abc\n"
    pieces = {p for _, p in leak_filter.candidates(text)}
    assert {b"anna.rossi@example.org", b"rossi", b"x" * LONG} <= pieces
    assert b"abc" not in pieces
    assert np.asarray(tags_of([b"rossi"])).dtype == np.uint64
    leak_filter.close()
