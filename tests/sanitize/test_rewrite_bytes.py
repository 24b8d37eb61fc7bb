"""The write pass writes, byte for byte, what it wrote before it was made cheaper.

Pseudonyms are stable across runs and releases: the same salt and input give the same
output.  The functions the write pass runs per row (the keyed MACs of ``fake``, ``hash``
and ``email``, ``replace_pii`` over text and JSON, the COPY text fields through
:class:`RowTransformer`) were rewritten for speed; the plain versions they replaced are
copied here as oracles, and these tests hold the new ones equal to them on random and
adversarial values, with the originals each hands the sink.  A digest of one fixed block
of rows, as the code before the rewrite wrote it, pins the whole row path.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from hashlib import blake2b
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from drkit.sanitize.copytext import NULL, field_fn, unescape
from drkit.sanitize.rules import parse_strategy
from drkit.sanitize.strategies import (
    Compiler,
    Constant,
    Email,
    Fake,
    Hash,
    Keep,
    Nullify,
    Pseudonymizer,
    ReplacePii,
    Strategy,
    Template,
)
from drkit.sanitize.strategies.piitext import (
    MAY_HOLD_PII,
    PII_RE,
    email_key,
    looks_like_phone,
    phone_key,
)
from drkit.sanitize.transform import RowTransformer

PSEUDO = Pseudonymizer(b"rewrite-bytes-test-salt", pool_size=64)
REGISTERED = [
    ("Anna.Rossi@Corp.example", "user_7@example.com"),
    ("cy@x.example", "user_9@example.com"),
    ("Cy@x.example", "user_10@example.com"),
]

# -- the oracles: the functions as they were before the rewrite ----------------------


def old_fake(spec: Fake, value: str) -> str:
    ident = (spec.provider, json.dumps(spec.args, sort_keys=True, default=str), spec.locale)
    pool = PSEUDO.pool(spec)
    key = PSEUDO.key("fake/" + "/".join(ident))
    digest = blake2b(value.encode("utf-8", "surrogatepass"), key=key).digest()
    picked = pool[int.from_bytes(digest[:8], "big") & (len(pool) - 1)]
    if not spec.unique:
        return picked
    tag = digest[8:18].hex()
    if "@" in picked:
        local, _, domain = picked.partition("@")
        return f"{local}.{tag}@{domain}"
    return f"{picked}-{tag}"


def old_hash(value: str, length: int) -> str:
    key = PSEUDO.key("hash")
    return blake2b(value.encode("utf-8", "surrogatepass"), key=key, digest_size=32).hexdigest()[
        :length
    ]


def old_email(value: str, domain: str) -> str:
    key = PSEUDO.key("tag/email")
    digest = blake2b(value.encode("utf-8", "surrogatepass"), key=key, digest_size=32).digest()
    return f"u{digest[:10].hex()}@{domain}"


def old_pii(run: Compiler, kind: str, value: str) -> str:
    if kind == "email":
        return run.email_fn(run.pii.email)(value)
    if kind == "phone":
        return old_fake(run.pii.phone, phone_key(value))
    if kind == "ipv6":
        return old_fake(run.pii.ipv6, value)
    return old_fake(run.pii.ipv4, value)


def old_replace(run: Compiler, match: re.Match[str], kinds: frozenset[str]) -> str:
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
        try:
            address = ipaddress.IPv6Address(found)
        except ValueError:
            return found
        mapped = address.ipv4_mapped
        if mapped is not None:
            sink(found)
            sink(str(mapped))
            return "::ffff:" + old_pii(run, "ip", str(mapped))
        out = old_pii(run, "ipv6", address.compressed)
    else:
        out = old_pii(run, kind, found)
    if out != found:
        sink(found)
        if kind == "email" and (key := email_key(found)) != found:
            sink(key)
    return out


def old_in_text(run: Compiler, text: str, kinds: frozenset[str]) -> str:
    if MAY_HOLD_PII.search(text) is None:
        return text
    return PII_RE.sub(lambda match: old_replace(run, match, kinds), text)


def old_walk(run: Compiler, node: Any, kinds: frozenset[str]) -> Any:
    if isinstance(node, str):
        return old_in_text(run, node, kinds)
    if isinstance(node, dict):
        return {old_in_text(run, k, kinds): old_walk(run, v, kinds) for k, v in node.items()}
    if isinstance(node, list):
        return [old_walk(run, v, kinds) for v in node]
    return node


def old_replace_pii(run: Compiler, value: str, kinds: frozenset[str]) -> str:
    if value.lstrip()[:1] in ("{", "["):
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        if isinstance(doc, dict | list):
            return json.dumps(old_walk(run, doc, kinds), ensure_ascii=False)
    return old_in_text(run, value, kinds)


_OLD_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_OLD_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_OLD_NEEDS_ESCAPE = re.compile(r"[\\\n\r\t]")
_OLD_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _old_unescape_one(match: re.Match[str]) -> str:
    token = match.group(1)
    if token in _OLD_UNESCAPES:
        return _OLD_UNESCAPES[token]
    if token[0] == "x" and len(token) > 1:
        return chr(int(token[1:], 16))
    if token[0] in "01234567":
        return chr(int(token, 8) & 0xFF)
    return token


def old_unescape(field: bytes) -> str:
    text = field.decode("utf-8")
    if "\\" not in text:
        return text
    return _OLD_ESCAPE_RE.sub(_old_unescape_one, text)


def old_escape(value: str | None) -> bytes:
    if value is None:
        return NULL
    if _OLD_NEEDS_ESCAPE.search(value) is not None:
        value = _OLD_NEEDS_ESCAPE.sub(lambda m: _OLD_ESCAPES[m.group(0)], value)
    return value.encode("utf-8")


def old_block(columns: list[tuple[str, Strategy]], run: Compiler, block: bytes) -> bytes:
    """Rows as the transformer wrote them (the strategies' own functions, today's: they
    are held to their old selves above), one plain loop per field."""
    fns = {name: run.value_fn(s) for name, s in columns if not isinstance(s, Keep | Template)}
    index = {name: i for i, (name, _) in enumerate(columns)}
    out = []
    for line in block.split(b"\n")[:-1]:
        fields = line.split(b"\t")
        for name, fn in fns.items():
            i = index[name]
            if fields[i] != NULL:
                fields[i] = old_escape(fn(old_unescape(fields[i])))
        for i, (_name, strategy) in enumerate(columns):
            if not isinstance(strategy, Template) or fields[i] == NULL:
                continue
            values = {
                f: None if fields[index[f]] == NULL else old_unescape(fields[index[f]])
                for f in strategy.fields()
            }
            rendered = strategy.render(values)
            original = old_unescape(fields[i])
            if rendered != original:
                run.sink(original)
            fields[i] = old_escape(rendered)
        out.append(b"\t".join(fields) + b"\n")
    return b"".join(out)


# -- values to try -----------------------------------------------------------------

KEEP = parse_strategy("keep")
_PIECES = [
    *"ab8@._- +0123456789:%\\\t\n\r{}[]\"',",
    "anna.rossi@corp.example",
    "Cy@x.example",
    "user_7@example.com",
    "anna&#64;corp.example",
    "anna%40corp.example",
    "\\u0040",
    "\\\\",
    "\\x41",
    "\\101",
    "+39 347 123 4567",
    "0039-347-1234567",
    "10.1.2.3",
    "::ffff:10.1.2.3",
    "::ffff:a01:203",
    "2001:db8::1",
    "10:15:00",
    "1.2.3.4.5",
    "jürgen.müller@bücher.example",
    "＠",
    " [at] ",
]
texts = st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=12).map("".join)
json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """JSON as a jsonb column prints it, or as text spells it (escapes, blanks)."""
    doc = draw(json_docs)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    return draw(st.sampled_from(["", " ", "\n", "\t "])) + text


values = texts | json_texts() | st.sampled_from(["{", "[", "{not json", "[1,", " {}", "null"])
KINDS = [frozenset({"email", "phone", "ip"}), frozenset({"email"}), frozenset({"phone", "ip"})]


def compiler(found: list[str] | None = None, pii: list[Strategy] | None = None) -> Compiler:
    run = Compiler.for_rules(PSEUDO, pii or [], found.append if found is not None else None)
    for original, pseudonym in REGISTERED:
        run.register_email(original, pseudonym)
    return run


FAKE_EMAIL = [Fake(provider="company_email")]


# -- the attacks ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(8, 64))
@example("\ud800 a lone surrogate", 40)
def test_keyed_macs_give_todays_pseudonyms(value: str, length: int) -> None:
    """``fake`` (plain and unique), ``hash`` and ``email``: the same MAC of the value,
    the same pick from the pool, the same tag."""
    for spec in (
        Fake(provider="first_name"),
        Fake(provider="first_name", unique=True),
        Fake(provider="company_email", unique=True),
    ):
        assert PSEUDO.fake_fn(spec)(value) == old_fake(spec, value)
    assert PSEUDO.hash(value, length) == old_hash(value, length)
    assert PSEUDO.hash_fn(length)(value) == old_hash(value, length)
    assert PSEUDO.email(value, "example.com") == old_email(value, "example.com")


@settings(max_examples=400, deadline=None)
@given(values, st.sampled_from(KINDS), st.booleans())
@example('{"to": "anna\\u0040corp.example", "n": [1, 2.50, "10.1.2.3"]}', KINDS[0], False)
@example('{"anna.rossi@corp.example": {"cy@x.example": null}}', KINDS[0], True)
@example('{"a": "x", "a": "Cy@x.example"}', KINDS[0], False)
@example("{not json but anna.rossi@corp.example", KINDS[0], False)
@example('  ["+39 347 123 4567", 1e400, NaN]', KINDS[2], False)
def test_replace_pii_writes_todays_bytes(value: str, kinds: frozenset[str], faker: bool) -> None:
    """Text and JSON (escapes, ``\\u0040``, keys holding addresses, duplicate keys,
    non-JSON starting with ``{``): the same output, and the same originals handed to the
    sink, as the plain walk; the writing pass (a sink that drops) writes the same."""
    strategy = ReplacePii(kinds=sorted(kinds))  # type: ignore[arg-type]
    pii = FAKE_EMAIL if faker else None
    found: list[str] = []
    expected_found: list[str] = []
    expected = old_replace_pii(compiler(expected_found, pii), value, kinds)
    assert compiler(found, pii).value_fn(strategy)(value) == expected
    assert found == expected_found
    assert compiler(None, pii).writing().value_fn(strategy)(value) == expected


copy_fields = st.one_of(
    st.just(NULL),
    texts.map(old_escape),
    st.lists(
        st.sampled_from([b"a", b"\\", b"\\N", b"\\x4", b"\\101", b"\\\\", b"\\t", b"\xc3\xbc"])
    )
    .map(b"".join)
    .filter(lambda b: not b.endswith(b"\\")),
)
FNS: list[Callable[[str], str | None]] = [
    lambda v: v,
    lambda v: None,
    lambda v: v.upper() + "\t\\\n\r",
    lambda v: "",
]


@settings(max_examples=400, deadline=None)
@given(copy_fields, st.sampled_from(range(len(FNS))))
@example(b"\\N", 0)
@example(b"a\\\\N", 2)
@example(b"\\x41\\101\\q", 0)
def test_a_field_through_a_strategy_is_todays_bytes(raw: bytes, which: int) -> None:
    """A COPY text field unescaped, through the strategy, escaped again: the same bytes
    (NULL stays NULL, None becomes NULL) with or without anything to unescape."""
    fn = FNS[which]
    expected = raw if raw == NULL else old_escape(fn(old_unescape(raw)))
    assert field_fn(fn)(raw) == expected
    if raw != NULL:
        assert unescape(raw) == old_unescape(raw)


COLUMNS: list[tuple[str, Strategy]] = [
    ("id", KEEP),
    ("login", Template(template="user_{id}@example.com")),
    ("email", Email()),
    ("name", Fake(provider="first_name")),
    ("phone", Fake(provider="phone_number")),
    ("token", Hash(length=40)),
    ("secret", Constant(value="REDACTED")),
    ("ip", Nullify()),
    ("notes", ReplacePii()),
    ("handle", Template(template="{name}-{id}")),
]
rows = st.lists(
    st.tuples(st.integers(0, 99).map(str).map(str.encode), *[copy_fields] * (len(COLUMNS) - 1)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(rows)
def test_rows_are_todays_bytes(block_rows: list[tuple[bytes, ...]]) -> None:
    """Whole rows, templates over masked and kept columns included: the transformer
    writes what the plain per-field loop wrote, and hands the sink the same originals."""
    block = b"".join(b"\t".join(row) + b"\n" for row in block_rows)
    strategies = [s for _, s in COLUMNS]
    expected_found: list[str] = []
    old_run = compiler(expected_found, strategies)
    expected = old_block(COLUMNS, old_run, block)
    found: list[str] = []
    assert RowTransformer(COLUMNS, compiler(found, strategies)).block(block) == expected
    assert found == expected_found
    writer = compiler(None, strategies).writing()
    assert RowTransformer(COLUMNS, writer).block(block) == expected


def _pinned_block() -> bytes:
    rows = []
    for i in range(40):
        notes = json.dumps(
            {
                "to": f"p{i}.rossi@corp{i % 3}.example",
                "ip": f"10.0.{i}.{i * 3 % 250}",
                "n": [i, f"+39 347 {1000000 + i * 7919}", None],
                f"k{i}@x.example": "::ffff:10.1.2.3" if i % 2 else "2001:db8::1",
            },
            ensure_ascii=bool(i % 2),
        )
        rows.append(
            [
                str(i).encode(),
                f"P{i}@corp.example".encode(),
                f"P{i}.Rossi@Corp.example".encode() if i % 5 else NULL,
                f"Name {i}\\tTab".encode(),
                f"+39 30000{i:05d}".encode(),
                f"sk_live_{i:064x}".encode(),
                b"hunter2",
                b"10.0.0.1",
                old_escape(notes if i % 4 else f"call 0039-347-{i:07d} at 10:15:00\n{notes}"),
                b"x",
            ]
        )
    return b"".join(b"\t".join(row) + b"\n" for row in rows)


def test_a_fixed_block_is_written_as_before_the_rewrite() -> None:
    """The digest of a fixed block as the code before the rewrite wrote it (salt above,
    pools of 64): the pseudonyms of every strategy the write pass runs are pinned."""
    strategies = [s for _, s in COLUMNS]
    out = RowTransformer(COLUMNS, compiler(None, strategies).writing()).block(_pinned_block())
    assert hashlib.sha256(out).hexdigest() == PINNED


#: written by the code before the rewrite (commit 485eb2d) for the block above
PINNED = "40f6124f0ce329656643721a8c45acb61f61aa1e6d422adab91016f36f1a5f3b"
