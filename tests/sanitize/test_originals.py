"""The originals pass hands the leak index exactly what the strategies would.

A run computes every original before it writes a row (:class:`RowOriginals`, through each
strategy's ``originals_fn``) and runs the strategies once, afterwards, with a sink that
drops what it is handed.  So an original the originals pass missed would be searched for
nowhere, and one it added that the strategies keep (a value that is its own pseudonym:
a template's output read again, the constant itself) would fail a clean run.  These
tests hold the two together on the values where they could part."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.sanitize.copytext import escape
from drkit.sanitize.rules import parse_strategy
from drkit.sanitize.strategies import (
    Compiler,
    Constant,
    Email,
    Fake,
    Hash,
    JsonPaths,
    Mask,
    Nullify,
    Pseudonymizer,
    ReplacePii,
    Strategy,
    Template,
)
from drkit.sanitize.strategies.pseudomap import PseudonymMap
from drkit.sanitize.transform import RowOriginals, RowTransformer, row_originals

PSEUDO = Pseudonymizer(b"originals-test-salt-01", pool_size=64)
KEEP = parse_strategy("keep")
TEMPLATE = Template(template="user_{id}@example.com")
NAMES = Fake(provider="first_name")
PATHS = parse_strategy({"strategy": "json", "paths": {"$.to": "email", "$.ip": "nullify"}})
assert isinstance(PATHS, JsonPaths)

COLUMNS: list[tuple[str, Strategy]] = [
    ("id", KEEP),
    ("login", TEMPLATE),
    ("email", Email()),
    ("name", NAMES),
    ("phone", Fake(provider="phone_number")),
    ("token", Hash(length=16)),
    ("code", Mask(keep_end=2)),
    ("secret", Constant(value="REDACTED")),
    ("ip", Nullify()),
    ("notes", ReplacePii()),
    ("doc", PATHS),
]

#: what the e-mail map holds before the copy: template outputs for the source's rows,
#: one of them an address that is its own pseudonym (a copy of an already sanitized
#: database), and case twins
REGISTERED = [
    ("Anna.Rossi@Corp.example", "user_7@example.com"),
    ("user_8@example.com", "user_8@example.com"),
    ("cy@x.example", "user_9@example.com"),
    ("Cy@x.example", "user_10@example.com"),
]


def _own_email() -> str:
    """An address in drkit's own ``u<tag>@domain`` form (looked up, not assumed)."""
    return PSEUDO.email("someone@corp.example", "example.com")


TRICKY = [
    "user_8@example.com",  # registered as itself
    "USER_8@EXAMPLE.COM",
    "anna.rossi@corp.example",
    "Cy@x.example",
    "cy@x.example",
    _own_email(),
    "REDACTED",  # the constant itself
    "**",
    "ab",
    "0123456789abcdef",
    PSEUDO.pool(NAMES)[3],  # pool values
    PSEUDO.pool(Fake(provider="phone_number"))[5],
    PSEUDO.hash("x", 16),  # a hash-shaped value
    "+39 347 123 4567",
    "mail user_8@example.com or anna.rossi%40corp.example from 10.1.2.3",
    "call 0039-347-1234567 at 10:15:00 from ::ffff:10.1.2.3 or 2001:db8::1",
    json.dumps({"user_8@example.com": ["cy@x.example", 1], "to": "x@y.example"}),
    json.dumps({"to": "user_8@example.com", "ip": "10.0.0.1"}),
    json.dumps({"to": "anna.rossi@corp.example", "ip": None}),
    "[not json",
]


def compiler(found: list[str], primed: bool = True) -> Compiler:
    c = Compiler.for_rules(PSEUDO, [s for _, s in COLUMNS], found.append)
    c.emails = PseudonymMap(memory_entries=2)  # spilled, as a large users table is
    for original, pseudonym in REGISTERED:
        c.register_email(original, pseudonym)
    c.emails_primed = primed
    return c


def lines(rows: list[list[str | None]]) -> bytes:
    return b"".join(b"\t".join(escape(v) for v in row) + b"\n" for row in rows)


def both(block: bytes) -> tuple[set[str], set[str]]:
    """(what the strategies hand the sink, what the originals pass hands it)."""
    by_strategies: list[str] = []
    by_originals: list[str] = []
    RowTransformer(COLUMNS, compiler(by_strategies)).block(block)
    reader = row_originals(COLUMNS, compiler(by_originals))
    assert isinstance(reader, RowOriginals)  # not the transformer in disguise
    reader.block(block)
    return set(by_strategies), set(by_originals)


def test_values_that_are_their_own_pseudonyms_are_no_originals() -> None:
    rows: list[list[str | None]] = [
        [str(8 if i % 2 else i), *([value] * 9), value if _is_json(value) else None]
        for i, value in enumerate(TRICKY)
    ]
    rows.append(["8", "user_8@example.com", *([None] * 9)])
    strategies, originals = both(lines(rows))
    assert originals == strategies
    assert "anna.rossi@corp.example" in originals and "Cy@x.example" in originals
    # an address or a constant that is its own pseudonym, only where it is kept as is
    kept = "user_8@example.com"
    own: list[list[str | None]] = [
        ["8", kept, kept, None, None, None, None, "REDACTED", None, f"cc {kept}", None],
        ["9", None, None, *([None] * 7), json.dumps({"to": kept})],
    ]
    strategies, originals = both(lines(own))
    assert originals == strategies == set()


_PIECES = [*"ab8@._- +0123456789:%\\\t\n{}\"'", "user_8@example.com", "@x.example", "::ffff:"]
_text = st.lists(st.sampled_from(_PIECES), max_size=20).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TRICKY) | _text, st.booleans()), max_size=8))
def test_the_two_passes_hand_the_same_originals(values: list[tuple[str, bool]]) -> None:
    rows: list[list[str | None]] = []
    for n, (value, null) in enumerate(values):
        doc = value if value.lstrip()[:1] in ("{", "[") and _is_json(value) else None
        rows.append([str(n), *([None if null else value] * 9), doc])
    strategies, originals = both(lines(rows))
    assert originals == strategies


def test_a_template_over_a_masked_column_reads_its_output() -> None:
    """A template whose field a strategy changes renders that field's output: the
    originals pass then runs the whole transformer (exact by construction)."""
    columns: list[tuple[str, Strategy]] = [
        ("name", NAMES),
        ("greeting", Template(template="hello {name}")),
    ]
    assert isinstance(row_originals(columns, compiler([])), RowTransformer)


def _registered(c: Compiler, originals: list[str]) -> list[tuple[str, str | None]]:
    return [c.registered(v) for v in originals]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from(TRICKY[:6]) | _text, st.booleans()),
        max_size=8,
    )
)
def test_the_originals_pass_fills_the_email_map_as_the_transformer_does(
    values: list[tuple[int, str, bool]],
) -> None:
    """Unprimed (the map filled in the originals pass itself), the originals pass
    registers every template output the transformer would, and hands the same originals."""
    rows: list[list[str | None]] = [
        [str(n), None if null else value, *([None] * 9)] for n, value, null in values
    ]
    block = lines(rows)
    by_strategies: list[str] = []
    by_originals: list[str] = []
    written, read = compiler(by_strategies, primed=False), compiler(by_originals, primed=False)
    RowTransformer(COLUMNS, written).block(block)
    reader = row_originals(COLUMNS, read)
    assert isinstance(reader, RowOriginals)  # not the transformer in disguise
    reader.block(block)
    assert set(by_originals) == set(by_strategies)
    asked = [value for _, value, _ in values] + [o for o, _ in REGISTERED]
    asked += [v.upper() for v in asked]
    assert _registered(read, asked) == _registered(written, asked)


#: strategies beside COLUMNS' whose functions may or may not read the e-mail map
_MORE: list[Strategy] = [
    Fake(provider="ipv4_private"),
    Fake(provider="company_email"),
    ReplacePii(kinds=["phone", "ip"]),
    ReplacePii(kinds=["email"]),
    parse_strategy({"strategy": "json", "paths": {"$.ip": "nullify", "$.n": "hash"}}),
]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(TRICKY) | _text, max_size=6))
def test_a_strategy_that_says_it_never_reads_the_email_map_does_not(values: list[str]) -> None:
    """What a table's strategies give while the map is still empty is final for those
    that say they never read it (their tables are read while the map is being filled)."""
    strategies = [s for _, s in COLUMNS if not isinstance(s, Template)] + _MORE
    assert {s.reads_email_map() for s in strategies} == {True, False}
    values = values + [v for pair in REGISTERED for v in pair]
    for strategy in strategies:
        if not strategy.reads_email_map():
            assert _outcome(strategy, values, primed=False) == _outcome(strategy, values), strategy


def _outcome(strategy: Strategy, values: list[str], primed: bool = True) -> object:
    """(outputs, what the value function hands the sink, what the originals function
    hands it) over ``values``, with the e-mail map full (``primed``) or empty."""
    sinks: tuple[list[str], list[str]] = ([], [])
    outputs: list[str | None] = []
    for sink, fn in zip(sinks, ("value_fn", "originals_fn"), strict=True):
        rules = [s for _, s in COLUMNS]
        run = compiler(sink) if primed else Compiler.for_rules(PSEUDO, rules, sink.append)
        function = getattr(strategy, fn)(run)
        for value in values:
            try:
                out = function(value)
            except ValueError:  # json over text that is not JSON
                out = "(not JSON)"
            if fn == "value_fn":
                outputs.append(out)
    return outputs, *sinks


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


_FIELD = st.none() | st.lists(
    st.sampled_from([*"ab\\\t\n\r\x0b", "\\N", "ü", "€", "REDACTED", " "]), max_size=6
).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_FIELD, _FIELD), max_size=8))
def test_the_originals_pass_reads_each_field_as_its_row_says(
    rows: list[tuple[str | None, ...]],
) -> None:
    """Column by column, each masked field's value reaches the sink (and the observer of
    person names) decoded as it was written, escapes and ``\\N`` spelled out included;
    NULL never does."""
    columns: list[tuple[str, Strategy]] = [
        ("id", KEEP),
        ("ip", Nullify()),
        ("secret", Constant(value="REDACTED")),
    ]
    found: list[str] = []
    seen: list[str] = []
    block = lines([[str(n), *row] for n, row in enumerate(rows)])
    RowOriginals(columns, compiler(found), observe={"ip": seen.append}).block(block)
    ips = [ip for ip, _ in rows if ip is not None]
    secrets = [s for _, s in rows if s is not None and s != "REDACTED"]
    assert sorted(found) == sorted(ips + secrets)
    assert seen == ips


def test_a_row_of_another_width_stops_the_originals_pass() -> None:
    reader = RowOriginals([("id", KEEP), ("ip", Nullify())], compiler([]))
    for block in (b"1\tx\n2\tx\ty\n3\tz\n", b"1\n", b"1\tx\n2\n"):
        width = max(
            len(line.split(b"\t")) if len(line.split(b"\t")) != 2 else 0
            for line in block.splitlines()
        )
        try:
            reader.block(block)
        except ValueError as exc:
            assert str(exc) == f"a row has {width} fields, expected 2"
        else:
            raise AssertionError(f"{block!r} was read")


_json_text = st.sampled_from([*TRICKY[:6], "10.1.2.3", "+39 347 123 4567", "k", ""]) | _text
_json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits: orjson's floats
    | st.floats(allow_nan=True, allow_infinity=True)  # NaN, Infinity: orjson refuses them
    | _json_text
)
_json_doc = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_json_text, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_json_doc, min_size=1, max_size=4),
    st.sampled_from([{}, {"ensure_ascii": True}, {"indent": 1}]),
)
def test_replace_pii_hands_the_same_originals_from_json_however_its_numbers_parse(
    docs: list[object], spelled: dict[str, object]
) -> None:
    """The originals pass parses JSON for its strings alone (orjson, json's parse where
    orjson refuses: NaN, infinities, lone surrogates); the write pass with json's parse.
    Both hand the same originals, whatever the numbers (integers beyond 64 bits, floats,
    NaN) and however the document is spelled (escaped, indented)."""
    values = [json.dumps(doc, **spelled) for doc in docs]  # type: ignore[arg-type]
    values.append('{"to": "anna.rossi@corp.example", "big": 123456789012345678901234567890}')
    values.append('{"to": "anna.rossi@corp.example", "n": NaN, "s": "\\ud800 cy@x.example"}')
    values.append('{"to": "Cy@x.example \ud800", "ip": "10.1.2.3"}')  # a raw lone surrogate
    for strategy in (ReplacePii(), ReplacePii(kinds=["email"])):
        _, by_value, by_originals = _outcome(strategy, values)  # type: ignore[misc]
        assert set(by_originals) == set(by_value)
