"""Personal data inside text: e-mail addresses, phone numbers and IP addresses, and one
canonical spelling (a key) per address.

``replace_pii`` finds these in free text and JSON strings; every strategy that gives an
address a pseudonym keys it by its canonical form first, so one address gets one
pseudonym whatever its spelling:

* e-mails by :func:`email_key`: percent-encoding and HTML entities decoded,
  ``%40``/``&#64;``/``&#x40;``/``&commat;``/a full-width ``＠``/``[at]``/``(at)`` read as
  ``@``, lower case (mail systems treat case as insignificant, so two addresses that
  differ only in case share a pseudonym, and a case-sensitive unique column holding both
  fails at its constraint).  Local parts and domains may be Unicode: no part of
  ``jürgen.müller@...`` survives;
* phone numbers by :func:`phone_key`: ``+`` and the digits, ``00`` read as ``+``;
* IPv6 addresses by their compressed form (an IPv4-mapped one, ``::ffff:10.1.2.3``, is
  its IPv4 address: see :mod:`drkit.sanitize.strategies.replace_pii`).
"""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

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
#: one match per address found; the group named after its kind (email, ip, ipv6, phone)
PII_RE = re.compile(
    f"(?P<email>{_EMAIL})|(?P<ip>{_IPV4})|(?P<ipv6>{_IPV6})|(?P<phone>{_PHONE})",
)
#: a character every match of :data:`PII_RE` holds (an ``@`` in one of its spellings, a
#: digit, or the colons of an IPv6 address): text without one holds no match, and is
#: passed over without running the slow alternation at every position
MAY_HOLD_PII = re.compile(r"[\d:@%&\[(\uff20]")
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


def email_spelling(value: str) -> str:
    """An e-mail address decoded, ``@`` restored, its letter case kept: the spelling a
    case-sensitive key compares (two such spellings may be two rows)."""
    if "%" in value:
        value = unquote(value)
    if "&" in value:
        value = html.unescape(value)
    if "@" not in value:
        value = _AT_SPELLING.sub("@", value.replace("\uff20", "@"), count=1)
    return value.strip()


def email_key(value: str) -> str:
    """One spelling per e-mail address: decoded, ``@`` restored, lower case."""
    return email_spelling(value).lower()
