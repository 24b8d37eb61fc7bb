"""Strategies: keyed determinism, uniqueness by construction, PII inside text and JSON."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from drkit.sanitize import copytext
from drkit.sanitize.rules import parse_strategy
from drkit.sanitize.strategies import (
    Compiler,
    Email,
    Fake,
    Hash,
    Mask,
    PiiConfig,
    Pseudonymizer,
    ReplacePii,
    Template,
)

SALT = b"unit-test-salt-0001"


def compiler(salt: bytes = SALT, sink: list[str] | None = None) -> Compiler:
    return Compiler(Pseudonymizer(salt), sink=sink.append if sink is not None else None)


def test_same_value_same_salt_same_pseudonym_across_compilers_and_columns() -> None:
    first, second = compiler(), compiler()
    for strategy in (
        Fake(provider="name"),
        Email(),
        Hash(),
        Fake(provider="user_name", unique=True),
    ):
        a = first.value_fn(strategy)
        b = second.value_fn(strategy)
        assert a("Anna Rossi") == b("Anna Rossi")
        assert a("Anna Rossi") != "Anna Rossi"


def test_another_salt_gives_other_pseudonyms() -> None:
    one, two = compiler(), compiler(b"another-salt-0002")
    values = [f"person-{i}@corp.example" for i in range(50)]
    for strategy in (Email(), Hash(), Fake(provider="name")):
        a, b = one.value_fn(strategy), two.value_fn(strategy)
        assert sum(a(v) == b(v) for v in values) < 5


def test_fake_draws_from_a_pool_not_one_faker_call_per_row() -> None:
    pseudo = Pseudonymizer(SALT, pool_size=256)
    fn = Compiler(pseudo).value_fn(Fake(provider="name"))
    outputs = {fn(f"input-{i}") for i in range(5000)}
    pool = set(pseudo.pool(Fake(provider="name")))
    assert outputs <= pool
    assert len(outputs) > 200  # the HMAC spreads inputs over the whole pool


def test_unique_strategies_never_collide_on_distinct_inputs() -> None:
    c = compiler()
    inputs = [f"user{i}" for i in range(20000)]
    for strategy in (
        Email(),
        Hash(length=16),
        Fake(provider="user_name", unique=True),
        Fake(provider="email", unique=True),
    ):
        fn = c.value_fn(strategy)
        outputs = [fn(v) for v in inputs]
        assert len(set(outputs)) == len(inputs), strategy
    unique_email = c.value_fn(Fake(provider="email", unique=True))("x")
    assert unique_email is not None and unique_email.count("@") == 1


def test_replace_pii_uses_exactly_the_column_pseudonyms() -> None:
    found: list[str] = []
    c = compiler(sink=found)
    text = (
        "Alert sent to anna.rossi1@customer1.com; call +39 3000007919 from 10.0.0.7 "
        "about CVE-2024-000123 on 2026-11-27 at 10:15:00, ticket 1234567"
    )
    out = c.value_fn(ReplacePii())(text)
    assert out is not None
    email = c.value_fn(Email())("anna.rossi1@customer1.com")
    phone = c.value_fn(Fake(provider="phone_number"))("+39 3000007919")
    ip = c.value_fn(Fake(provider="ipv4"))("10.0.0.7")
    assert email in out and phone in out and ip in out
    for untouched in ("CVE-2024-000123", "2026-11-27", "10:15:00", "1234567"):
        assert untouched in out
    for original in ("anna.rossi1@customer1.com", "+39 3000007919", "10.0.0.7"):
        assert original not in out
        assert original in found


def test_replace_pii_follows_the_files_own_strategies() -> None:
    pii = PiiConfig.from_strategies([Email(domain="staging.example"), Fake(provider="ipv4")])
    c = Compiler(Pseudonymizer(SALT), pii)
    out = c.value_fn(ReplacePii(kinds=["email"]))("mail bob@x.org from 10.1.1.1")
    assert out is not None and out.endswith("@staging.example from 10.1.1.1")


def test_replace_pii_inside_json_strings() -> None:
    c = compiler()
    doc = {"requested_by": "anna@corp.example", "nested": [{"ip": "10.0.0.9"}], "items": 3}
    out = c.value_fn(ReplacePii())(json.dumps(doc))
    assert out is not None
    parsed = json.loads(out)
    assert parsed["requested_by"] == c.value_fn(Email())("anna@corp.example")
    assert parsed["nested"][0]["ip"] == c.value_fn(Fake(provider="ipv4"))("10.0.0.9")
    assert parsed["items"] == 3


def test_json_paths_apply_strategies_where_they_point() -> None:
    found: list[str] = []
    c = compiler(sink=found)
    strategy = parse_strategy(
        {
            "strategy": "json",
            "paths": {
                "$.owner.email": "email",
                "$.tokens[*]": {"strategy": "hash", "length": 12},
                "$..password": "nullify",
            },
        }
    )
    doc = {
        "owner": {"email": "bob@corp.example", "name": "Bob"},
        "tokens": ["t1-secret", "t2-secret"],
        "deep": {"x": {"password": "hunter22"}},
    }
    out = c.value_fn(strategy)(json.dumps(doc))
    assert out is not None
    parsed = json.loads(out)
    assert parsed["owner"] == {"email": c.value_fn(Email())("bob@corp.example"), "name": "Bob"}
    assert [len(t) for t in parsed["tokens"]] == [12, 12]
    assert parsed["deep"]["x"]["password"] is None
    assert {"bob@corp.example", "t1-secret", "t2-secret", "hunter22"} <= set(found)


def test_mask_and_template() -> None:
    c = compiler()
    assert c.value_fn(Mask(keep_start=2, keep_end=4))("4111111111111111") == "41**********1111"
    assert c.value_fn(Mask(keep_end=4))("abc") == "***"
    t = Template(template="user_{id}@example.com")
    assert Compiler.template(t, {"id": "42"}) == "user_42@example.com"
    assert Compiler.template(t, {"id": None}) is None


def test_the_salt_never_shows_in_repr() -> None:
    assert "unit-test-salt" not in repr(Pseudonymizer(SALT))


@given(st.text())
def test_copy_text_escape_round_trips(value: str) -> None:
    value = value.replace("\x00", "")
    assert copytext.unescape(copytext.escape(value)) == value
    raw = copytext.escape(value)
    assert b"\t" not in raw and b"\n" not in raw and b"\r" not in raw


# ---------------------------------------------------------------------------
# Every form of an address, one pseudonym map (issue 10)
# ---------------------------------------------------------------------------


def replace(c: Compiler, text: str) -> str:
    out = c.value_fn(ReplacePii())(text)
    assert out is not None
    return out


def test_non_ascii_local_part_leaves_no_part_of_the_name() -> None:
    c = compiler()
    for address in ("jürgen.müller@example.de", "ñoño.pérez@correo.es", "zoë@bücher.de"):
        out = replace(c, f"Mail an {address}, bitte.")
        assert out == f"Mail an {c.value_fn(Email())(address)}, bitte."
        local, _, domain = address.partition("@")
        for part in [*local.split("."), domain]:
            assert part not in out, address


def test_ipv4_mapped_ipv6_is_the_ipv4_address() -> None:
    found: list[str] = []
    c = compiler(sink=found)
    ip = c.value_fn(Fake(provider="ipv4"))("10.1.2.3")
    for written in ("::ffff:10.1.2.3", "::FFFF:a01:203", "::ffff:0a01:0203"):
        out = replace(c, f"login from {written} failed")
        assert out == f"login from ::ffff:{ip} failed", written
        assert written not in found or "10.1.2.3" in found
    assert "10.1.2.3" in found


def test_phone_numbers_with_and_without_separators() -> None:
    c = compiler()
    phone = c.value_fn(Fake(provider="phone_number"))
    for written in ("+4915112345678", "+49 151 12345678", "+49-151-1234-5678", "004915112345678"):
        out = replace(c, f"call {written} now")
        assert out == f"call {phone('+4915112345678')} now", written
    for written in ("015112345678", "0151 12345678", "0151/1234-5678", "(0151) 12345678"):
        out = replace(c, f"call {written} now")
        assert "12345678" not in out and "5678" not in out.replace(phone("015112345678"), "")
        assert out == f"call {phone('015112345678')} now", written
    # ids, amounts, dates and zero-padded numbers are not phone numbers
    for kept in ("ticket 1234567", "order 0000123456", "total 123456789012", "2026-11-27"):
        assert replace(c, kept) == kept


def test_at_sign_spellings() -> None:
    c = compiler()
    pseudonym = c.value_fn(Email())("jane.doe@corp.example")
    for written in (
        "jane.doe%40corp.example",
        "jane.doe&#64;corp.example",
        "jane.doe&#x40;corp.example",
        "jane.doe&commat;corp.example",
        "jane.doe\uff20corp.example",
        "jane.doe [at] corp.example",
        "Jane.Doe(at)Corp.Example",
    ):
        out = replace(c, f"see https://x.example/u?m={written}&z=1")
        assert "jane" not in out.lower(), written
        assert pseudonym in out, written


def test_case_and_encoding_do_not_change_the_pseudonym() -> None:
    c = compiler()
    email = c.value_fn(Email())
    assert email("Jane.Doe@Corp.Example") == email("jane.doe@corp.example")
    assert email("JANE.DOE@CORP.EXAMPLE") == email("jane.doe@corp.example")
    assert replace(c, "JANE.DOE@corp.EXAMPLE") == email("jane.doe@corp.example")
    # another salt still gives another pseudonym
    assert compiler(b"another-salt-0002").value_fn(Email())("jane@x.example") != email(
        "jane@x.example"
    )


def test_a_template_on_an_email_column_is_the_pseudonym_everywhere() -> None:
    from drkit.sanitize.transform import RowTransformer

    c = compiler()
    users = RowTransformer(
        [("id", parse_strategy("keep")), ("email", Template(template="user_{id}@example.com"))],
        c,
    )
    assert users.line(b"7\tAnna.Rossi@Corp.example") == b"7\tuser_7@example.com"
    for text in (
        "ping anna.rossi@corp.example",
        "ping ANNA.ROSSI%40corp.example",
        "ping anna.rossi&#64;corp.example",
    ):
        assert replace(c, text) == "ping user_7@example.com"
    assert c.value_fn(Email())("anna.rossi@corp.example") == "user_7@example.com"
    # inside JSON, and the same on every compiler that saw the same rows
    doc = json.loads(c.value_fn(ReplacePii())(json.dumps({"to": ["anna.rossi@corp.example"]})))
    assert doc == {"to": ["user_7@example.com"]}


def test_template_registration_does_not_depend_on_row_order() -> None:
    from drkit.sanitize.transform import RowTransformer

    columns = [("id", parse_strategy("keep")), ("email", Template(template="u{id}@example.com"))]
    one, two = compiler(), compiler()
    RowTransformer(columns, one).block(b"3\tdup@corp.example\n9\tdup@corp.example\n")
    RowTransformer(columns, two).block(b"9\tdup@corp.example\n3\tdup@corp.example\n")
    assert replace(one, "dup@corp.example") == replace(two, "dup@corp.example")


def test_the_pseudonym_map_spills_to_disk_and_keeps_the_smallest_value() -> None:
    import random

    from drkit.sanitize.strategies.pseudomap import PseudonymMap

    entries = [(f"person{i}@corp.example", f"user_{i}@example.com") for i in range(3000)]
    dupes = [(k, "user_0" + v) for k, v in entries[::7]]  # smaller values for some keys
    results = []
    for seed in (1, 2):
        feed = entries + dupes
        random.Random(seed).shuffle(feed)
        m = PseudonymMap(memory_entries=100)
        for k, v in feed:
            m.put_min(k, v)
        assert m.spilled and len(m) == len(entries)
        results.append([m.get(k) for k, _ in entries] + [m.get("nobody@corp.example")])
        m.close()
    assert results[0] == results[1]
    assert results[0][7] == "user_0user_7@example.com" and results[0][8] == "user_8@example.com"
    assert results[0][-1] is None


def test_a_spilled_map_gives_the_same_pseudonyms() -> None:
    from drkit.sanitize.strategies.pseudomap import PseudonymMap
    from drkit.sanitize.transform import RowTransformer

    columns = [("id", parse_strategy("keep")), ("email", Template(template="u{id}@example.com"))]
    small, big = compiler(), compiler()
    small.emails = PseudonymMap(memory_entries=3)
    rows = b"".join(b"%d\tPerson%d@Corp.example\n" % (i, i) for i in range(50))
    for c in (small, big):
        RowTransformer(columns, c).block(rows)
    assert small.emails.spilled and not big.emails.spilled
    text = "cc person7@corp.example, PERSON42%40corp.example, other@corp.example"
    assert replace(small, text) == replace(big, text)
    assert replace(small, text).startswith("cc u7@example.com, u42@example.com, u")


def test_replace_pii_rewrites_json_keys_too() -> None:
    found: list[str] = []
    c = compiler(sink=found)
    doc = {"anna@corp.example": {"seen_from": "10.0.0.9"}, "plain": {"+4915112345678": 1}}
    out = json.loads(c.value_fn(ReplacePii())(json.dumps(doc)))
    email = c.value_fn(Email())("anna@corp.example")
    phone = c.value_fn(Fake(provider="phone_number"))("+4915112345678")
    assert out == {
        email: {"seen_from": c.value_fn(Fake(provider="ipv4"))("10.0.0.9")},
        "plain": {phone: 1},
    }
    assert "anna@corp.example" in found


def test_a_faker_email_column_and_free_text_agree() -> None:
    spec = Fake(provider="email", unique=True)
    c = Compiler(Pseudonymizer(SALT), PiiConfig.from_strategies([Fake(provider="name"), spec]))
    column = c.value_fn(spec)
    out = replace(c, "from Jürgen@Corp.example and jürgen%40corp.example")
    assert out == f"from {column('jürgen@corp.example')} and {column('jürgen@corp.example')}"


def test_every_spelling_of_an_ipv6_address_is_one_address() -> None:
    c = compiler()
    ip4 = c.value_fn(Fake(provider="ipv4"))("10.1.2.3")
    assert replace(c, "from 0:0:0:0:0:ffff:10.1.2.3 ok") == f"from ::ffff:{ip4} ok"
    one = replace(c, "via 2001:DB8:0:0:0:0:0:1 ok")
    assert one == replace(c, "via 2001:db8::1 ok") and "2001:db8" not in one.lower()
    assert replace(c, "at 10:15:00 and 12:30") == "at 10:15:00 and 12:30"


_NEAR_PII = [
    *"ab.-_+ \t\n/\\'\"x@%&#;[]()0123456789:ATat",
    "\uff20",
    "\u0660",
    "\u00b2",
    "::",
    "ff",
]


@settings(max_examples=500)
@example("::")
@example("ab::cd")
@example("x [AT] y.example")
@example("x (at) y.example")
@example("a\uff20b.example")
@example("a&commat;b.example")
@given(st.lists(st.sampled_from(_NEAR_PII) | st.characters(), max_size=30).map("".join))
def test_text_without_a_pii_character_holds_no_pii(text: str) -> None:
    """``replace_pii`` passes over text in which ``MAY_HOLD_PII`` finds nothing: that is
    exact only if no match of ``PII_RE`` can do without those characters."""
    from drkit.sanitize.strategies.piitext import MAY_HOLD_PII, PII_RE

    if MAY_HOLD_PII.search(text) is None:
        assert PII_RE.search(text) is None


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.none() | st.text(max_size=5)))
def test_a_template_renders_null_when_any_field_is_null(values: dict[str, str | None]) -> None:
    template = Template(template="{a}-{b}@{a}.example")
    if any(values.get(name) is None for name in ("a", "b")):
        assert template.render(values) is None
    else:
        assert template.render(values) == f"{values['a']}-{values['b']}@{values['a']}.example"
