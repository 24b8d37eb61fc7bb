"""Personal data by content, without a database: every spelling and encoding of an
address is found, versions and the sample's public data are not, and a hostile value
cannot blow up time or memory."""

from __future__ import annotations

import base64
import gzip
import html
import json
import quopri
import time
import unicodedata
import zlib
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.sanitize.scan.content import MAX_DECODED, analyse, holds_versions, triggered

EMAIL = "anna.rossi77@customer-one.com"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def copy_text(value: str) -> bytes:
    """A value as a COPY text field (backslashes doubled)."""
    return value.replace("\\", "\\\\").encode()


SPELLINGS = {
    "plain": f"write to {EMAIL} today",
    "upper": EMAIL.upper(),
    "url-encoded": quote(EMAIL, safe=""),
    "html decimal": EMAIL.replace("@", "&#64;"),
    "html hex": EMAIL.replace("@", "&#x40;"),
    "html named": html.escape(EMAIL).replace("@", "&commat;"),
    "u-escape": EMAIL.replace("@", "\\u0040"),
    "json escaped": json.dumps({"to": EMAIL}, ensure_ascii=True).replace("@", "\\u0040"),
    "python dict": repr({"email": EMAIL}),
    "single quoted": f"'{EMAIL}'",
    "multi-value": f"{EMAIL}, bob.smith@other.org",
    "fullwidth": fullwidth(EMAIL),
    "fullwidth at": EMAIL.replace("@", "\uff20"),
    "nfd": unicodedata.normalize("NFD", "jürgen.müller@beispiel.de"),
    "at words": EMAIL.replace("@", " [at] "),
    "base64": base64.b64encode(f"mail {EMAIL}".encode()).decode(),
    "base64 url-safe": base64.urlsafe_b64encode(f"<<{EMAIL}>>??".encode()).decode(),
    "hex bytea": "\\x" + f"from {EMAIL}".encode().hex(),
    "bare hex": f"mail {EMAIL}".encode().hex(),
    "quoted-printable": quopri.encodestring(EMAIL.encode()).decode().replace("@", "=40"),
    "gzip in base64": base64.b64encode(gzip.compress(EMAIL.encode())).decode(),
    "gzip in bytea": "\\x" + gzip.compress(EMAIL.encode()).hex(),
    "zlib in base64": base64.b64encode(zlib.compress(EMAIL.encode())).decode(),
    "base64 inside json": json.dumps({"blob": base64.b64encode(EMAIL.encode()).decode()}),
    "url-encoded twice": quote(quote(EMAIL, safe=""), safe=""),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_an_email_address_is_found_in_every_spelling(spelling: str) -> None:
    value = SPELLINGS[spelling]
    assert "email" in analyse(value)[0], value
    assert triggered(copy_text(value)), "the cheap pre-filter must let it through"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("call +39 347 123 4567 after six", "phone"),
        ("tel. 0039 347 1234567", "phone"),
        ("+44 20 7946 0958", "phone"),
        ("+1 (415) 555-2671", "phone"),
        ("IBAN DE89 3704 0044 0532 0130 00", "iban"),
        ("iban: GB82WEST12345698765432", "iban"),
        ("card 4111 1111 1111 1111 exp 12/29", "card"),
        ("5500-0000-0000-0004", "card"),
        ("login from 10.1.2.3", "ip"),
        ("client_ip=203.0.113.77", "ip"),
        ("peer 2001:db8::8a2e:370:7334", "ip"),
        ("$2b$12$" + "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "secret"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG", "secret"),
        ("SCRAM-SHA-256$4096:abc=$def=:ghi=", "secret"),
        ("md5" + "0" * 31 + "1", "secret"),
        (
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
            ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "secret",
        ),
        ("key AKIAIOSFODNN7EXAMPLE", "secret"),
        ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "secret"),
        ("ghp_" + "a" * 36, "secret"),
        ("postgresql://app:Hunter2-Pass@db.prod.internal/sentrikat", "secret"),
        ("host=db.prod user=app password=Hunter2-Pass dbname=x", "secret"),
        ("-----BEGIN RSA PRIVATE KEY-----", "secret"),
        ('{"api_key": "9f8e7d6c5b4a3928"}', "secret"),
    ],
)
def test_each_kind_is_found(value: str, kind: str) -> None:
    assert kind in analyse(value)[0], value
    assert triggered(copy_text(value)), value


@pytest.mark.parametrize(
    "value",
    [
        "1.2.3.4",  # in a version column (ip=False below) as the sample's are
        "version 1.2.3.4",
        "Version: 10.0.19041.1",
        "v1.2.3.4",
        "openssl-1.1.1.1",
        "nginx/1.2.3.4",
        "release 2.4.10.3 fixes it",
        "1.2.3.4.5",
        "CVE-2024-123456",
        "https://nvd.nist.gov/vuln/detail/CVE-2024-1234",
        "https://hooks.example.net/9e107d9d372bb6826bd81d3542a419d6",
        "A flaw in component 9e107d9d372bb6826bd81d3542a419d6 allows a remote attacker to "
        "craft requests that bypass validation and execute code. Reference "
        "e4d909c290d0fb1ca068ffaddf22cbd0.",
        "product-4711",
        "Sync finished for product-12, 7 new findings",
        "localhost 127.0.0.1 and 0.0.0.0",
        "Reset your password here",
        "password: ********",
        "order 1234567890123456",  # no issuer prefix, no Luhn
        "at 10:15:00 on 2024-02-01",
        "aa:bb:cc:dd:ee:ff",
        "apache",
        "Org 17",
        "smtp3.example.net",
        "host-12.internal",
        "mailer3",
        "CRITICAL",
    ],
)
def test_public_data_is_no_personal_data(value: str) -> None:
    assert analyse(value, ip=not value.startswith("1.2.3.4"))[0] == set(), value


def test_version_columns_are_not_searched_for_addresses() -> None:
    assert holds_versions("version") and holds_versions("app_version")
    assert holds_versions("release_tag") and holds_versions("firmware")
    assert not holds_versions("client_ip") and not holds_versions("severity")
    assert analyse("10.1.2.3", ip=False)[0] == set()
    assert analyse("10.1.2.3")[0] == {"ip"}


def test_a_gzip_bomb_is_reported_not_inflated() -> None:
    bomb = "\\x" + gzip.compress(b"\0" * (MAX_DECODED * 8)).hex()
    started = time.monotonic()
    kinds, texts = analyse(bomb)
    assert "oversized" in kinds
    assert time.monotonic() - started < 5
    assert sum(len(t) for t in texts) < 8 * MAX_DECODED


def test_nested_encodings_stop_at_the_depth_bound() -> None:
    value = EMAIL
    for _ in range(12):
        value = base64.b64encode(value.encode()).decode()
    started = time.monotonic()
    analyse(value)  # found or not, it returns at once
    assert time.monotonic() - started < 5


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_value_is_analysed_within_bounds(value: str) -> None:
    _kinds, texts = analyse(value)
    assert texts[0] == value
    assert len(texts) <= 25
    assert sum(len(t) for t in texts[1:]) <= MAX_DECODED


@settings(max_examples=150, deadline=None)
@given(
    local=st.from_regex(r"[a-z][a-z0-9._]{0,15}[a-z0-9]", fullmatch=True),
    domain=st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(com|org|it|de|example)", fullmatch=True),
    wrap=st.sampled_from(["plain", "url", "html", "b64", "hex", "u", "fullwidth", "quoted"]),
    before=st.sampled_from(["", "mail ", "{'to': ", '"', "<", "x\n"]),
)
def test_generated_addresses_are_found_in_any_wrapping(
    local: str, domain: str, wrap: str, before: str
) -> None:
    address = f"{local}@{domain}"
    value = {
        "plain": address,
        "url": quote(address, safe=""),
        "html": address.replace("@", "&#64;"),
        "b64": base64.b64encode(address.encode()).decode(),
        "hex": "\\x" + address.encode().hex(),
        "u": address.replace("@", "\\u0040"),
        "fullwidth": fullwidth(address),
        "quoted": f"'{address}'",
    }[wrap]
    assert "email" in analyse(before + value)[0]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(
                [
                    EMAIL,
                    "+39 347 123 4567",
                    "0039 347 1234567",
                    "DE89 3704 0044 0532 0130 00",
                    "4111 1111 1111 1111",
                    "10.1.2.3",
                    "2001:db8::1",
                    "$2b$12$" + "a" * 53,
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmN",
                    "AKIAIOSFODNN7EXAMPLE",
                    "password=hunter2hunter2",
                    base64.b64encode(EMAIL.encode()).decode(),
                    EMAIL.encode().hex(),
                    "Version 1.2.3.4",
                    "CVE-2024-1234",
                    " ",
                    ", ",
                ]
            ),
        ),
        max_size=6,
    )
)
def test_what_the_pre_filter_lets_pass_holds_nothing(parts: list[str]) -> None:
    """The pre-filter only saves time: a value it does not mark has nothing to find."""
    value = "".join(parts).replace("\t", " ").replace("\n", " ")
    if not triggered(copy_text(value)):
        assert analyse(value)[0] == set(), value
