"""Personal data found by what a value holds, not by what its column is called.

:func:`analyse` looks at one value (a field of a kept or copied column) and says which
*kinds* of personal data it holds, after decoding whatever can be decoded:

* **decoders**, tried on the value and on what they give, ``MAX_DEPTH`` levels deep:
  percent-encoding (``%40``), HTML and XML entities (``&#64;``, ``&commat;``), ``\\uXXXX``
  and ``\\xXX`` escapes (JSON, Python literals), quoted-printable (``=40``), base64
  (standard and URL-safe), hex (``\\x...`` bytea and bare runs), gzip and zlib inside
  either, and Unicode NFKC (full-width letters and ``＠``, decomposed accents).  A decoded
  byte string counts as text only when it is UTF-8 and mostly printable.
  Every value is bounded: at most ``MAX_DECODED`` bytes of decoded output and
  ``MAX_VARIANTS`` decoded texts; a compressed payload that would inflate beyond the bound
  is not decoded but reported as the kind ``oversized`` (fail closed: what cannot be read
  cannot be called clean);
* **detectors**, each over every decoded text:

  - ``email``: an address with ``@`` in any spelling the decoders restore, or written
    ``[at]``/``(at)``; quotes around it (Python dicts, SQL literals) do not hide it;
  - ``phone``: libphonenumber's rules (``phonenumbers``: a valid number of its country) on
    numbers in international form (``+39 ...``, ``0039 ...``); a national number without its country
    code is not recognised (its country is unknown);
  - ``iban``: the ISO 13616 length of its country and the mod-97 check;
  - ``card``: 13 to 19 digits of a known issuer prefix that pass the Luhn check;
  - ``ip``: IPv4 and IPv6 host addresses.  Not a version: a dotted quad right after a
    letter, ``/``, ``-``, ``_``, ``:`` or ``v`` (``nginx/1.2.3.4``, ``v1.2.3.4``), within a
    longer dotted run (``1.2.3.4.5``), or after the words version, release, build,
    firmware, revision, before, prior to, through, fixed/patched in, upgrade/update to or
    since, is not an address; nor are loopback, unspecified and
    broadcast addresses.  A column whose name says it holds versions is not searched
    for addresses at all (``ip=False``);
  - ``secret``: password hashes (bcrypt, argon2, scrypt, pbkdf2, crypt(3) sha/md5,
    SCRAM, PostgreSQL md5), JWTs, API keys with a vendor prefix (AWS, Stripe, GitHub,
    GitLab, Slack, Google, OpenAI, SendGrid, npm), private-key blocks, ``secret=...``
    assignments, and connection strings that carry a password (``scheme://user:pw@``,
    ``password=...``).

Person names are not guessed from text: the run collects the names of its masked name
columns and searches for them (:mod:`drkit.sanitize.scan.inflight`); :func:`analyse`
returns the decoded texts for that search and for the originals' search.

Nothing here keeps or returns a value beyond the call; callers report kinds and counts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import ipaddress
import quopri
import re
import unicodedata
import zlib
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
import phonenumbers

from drkit.jit import njit

#: every kind :func:`analyse` reports (``name`` is found by the run's name search)
KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "iban",
    "card",
    "ip",
    "name",
    "secret",
    "oversized",
)

MAX_DEPTH = 3
MAX_DECODED = 1 << 20  # bytes of decoded output per value, all decodings together
MAX_VARIANTS = 24

# -- what makes a value worth a closer look (compiled loops over raw COPY bytes) ---------

_RARE = np.zeros(256, dtype=bool)  # bytes no detector and no decoder can do without
for _b in b"@%&\\=+$":
    _RARE[_b] = True
_RARE[0x80:] = True  # non-ASCII: full-width letters, decomposed accents (NFKC)
_RARE_CORE = _RARE.copy()  # without the signs of addresses
_RARE_CORE[ord("@")] = False
_RARE_CORE[ord("+")] = False
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[ord("0") : ord("9") + 1] = True
_UPPER = np.zeros(256, dtype=bool)
_UPPER[ord("A") : ord("Z") + 1] = True
_LOWER = np.zeros(256, dtype=bool)
_LOWER[ord("a") : ord("z") + 1] = True
_B64 = _DIGIT | _UPPER | _LOWER
for _b in b"+/_-":
    _B64[_b] = True
_HEXCHAR = _DIGIT.copy()
for _b in b"abcdefABCDEF":
    _HEXCHAR[_b] = True
_TEXT_NIBBLE = np.zeros(256, dtype=bool)  # the high nibble of a printable ASCII byte
for _b in b"234567":
    _TEXT_NIBBLE[_b] = True
_ALONE = np.zeros(256, dtype=bool)  # what may stand before a 00 international prefix
for _b in b" \t\n(:=":
    _ALONE[_b] = True
_SPAN = _DIGIT.copy()  # card numbers: digits, spaces and dashes
_SPAN[ord(" ")] = True
_SPAN[ord("-")] = True
_GLUE = _UPPER | _LOWER  # what a card number never stands glued to
_GLUE[ord("_")] = True
_GLUE[ord(".")] = True
#: words that start a secret the patterns know (searched in case-folded text)
SECRET_WORDS: tuple[bytes, ...] = (
    b"passw",
    b"pwd",
    b"secret",
    b"token",
    b"api_key",
    b"apikey",
    b"api-key",
    b"akia",
    b"asia",
    b"sk_live",
    b"sk_test",
    b"rk_live",
    b"ghp_",
    b"gho_",
    b"ghs_",
    b"ghu_",
    b"ghr_",
    b"github_pat",
    b"glpat-",
    b"xox",
    b"aiza",
    b"scram-",
    b"md5",
    b"eyj",
    b"-----begin",
    b"[at]",
    b"(at)",
    b"sk-",
    b"npm_",
)


_SECRET_PAIRS = np.zeros(1 << 16, dtype=bool)  # the first two bytes of the secret words
for _word in SECRET_WORDS:
    _SECRET_PAIRS[_word[0] << 8 | _word[1]] = True
_SECRET_BYTES = np.frombuffer(b"".join(SECRET_WORDS), dtype=np.uint8)
_SECRET_ENDS = np.cumsum([len(w) for w in SECRET_WORDS]).astype(np.int64)
_FOLD = np.arange(256, dtype=np.uint8)  # ASCII case folding (what ``bytes.lower`` does)
_FOLD[ord("A") : ord("Z") + 1] += 32
_ADDRESS_BYTES = _RARE & ~_RARE_CORE


@njit
def _mark_window(
    out: npt.NDArray[np.bool_], addressed: npt.NDArray[np.bool_], first: int, last: int
) -> None:
    for i in range(max(first, 0), last + 1):
        if addressed[i]:
            out[i] = True


@njit
def sign_mask(
    data: npt.NDArray[np.uint8], addressed: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """The signs of :func:`signals` at every byte of ``data``; the signs of addresses
    only at the bytes ``addressed`` marks (an array of the same length).  One pass: a run
    is judged where it ends (at its first byte), a window of dots or colons where its
    third sign is met (every position whose window holds it and the two before)."""
    n = len(data)
    out = np.empty(n, dtype=np.bool_)
    if n < 4:
        for i in range(n):
            out[i] = _RARE_CORE[data[i]] or (addressed[i] and _ADDRESS_BYTES[data[i]])
        return out
    span_start = b64_start = hex_start = -1  # the runs open at the byte read
    opens = closes = False  # a card number may start (end) in the open span
    digits = 0
    upper = lower = long_hex = False
    nibbles = np.zeros(2, dtype=np.int64)  # printable high nibbles, by parity of position
    dots = np.full(2, -1, dtype=np.int64)  # the last two IPv4 dots and colons
    colons = np.full(2, -1, dtype=np.int64)
    for i in range(n + 1):
        b = data[i] if i < n else 0  # a NUL ends every run
        if i < n:
            out[i] = _RARE_CORE[b] or (addressed[i] and _ADDRESS_BYTES[b])
            if (  # IBAN: two capitals and two digits
                i < n - 3
                and _UPPER[b]
                and _UPPER[data[i + 1]]
                and _DIGIT[data[i + 2]]
                and _DIGIT[data[i + 3]]
            ):
                out[i] = True
            if (  # a 00 international prefix, standing alone
                i < n - 2
                and addressed[i]
                and b == 48
                and data[i + 1] == 48
                and _DIGIT[data[i + 2]]
                and data[i + 2] != 48
                and (i == 0 or _ALONE[data[i - 1]])
            ):
                out[i] = True
            if b == 46 and 0 < i < n - 1 and _DIGIT[data[i - 1]] and _DIGIT[data[i + 1]]:
                if dots[0] >= 0 and i - dots[0] < 15:  # IPv4: three within 15 bytes
                    _mark_window(out, addressed, i - 14, dots[0])
                dots[0], dots[1] = dots[1], i
            if b == 58:
                if colons[0] >= 0 and i - colons[0] < 10:  # IPv6: three within 10 bytes
                    _mark_window(out, addressed, i - 9, colons[0])
                colons[0], colons[1] = colons[1], i
        # card numbers: 13 digits among digits, spaces and dashes, where a number may
        # start (a digit after a space or dash, or first with no letter, ``_`` or ``.``
        # before it) and end (a digit before a space or dash, or last with none of those
        # after it): a hex token's digits are no card number
        if i < n and _SPAN[b]:
            if span_start < 0:
                span_start, digits = i, 0
                opens = _DIGIT[b] and not (i > 0 and _GLUE[data[i - 1]])
                closes = False
            elif _DIGIT[b]:
                opens |= not _DIGIT[data[i - 1]]
            elif _DIGIT[data[i - 1]]:
                closes = True
            digits += _DIGIT[b]
        elif span_start >= 0:
            closes |= _DIGIT[data[i - 1]] and not (i < n and _GLUE[b])
            if digits >= 13 and opens and closes:
                out[span_start] = True
            span_start = -1
        # base64 of text: 10 characters, capitals and small letters among them
        if i < n and _B64[b]:
            if b64_start < 0:
                b64_start, upper, lower = i, False, False
            upper |= _UPPER[b]
            lower |= _LOWER[b]
        elif b64_start >= 0:
            if i - b64_start >= 10 and upper and lower:
                out[b64_start] = True
            b64_start = -1
        # hex of text: 16 digits, 80% of the high nibbles (every other digit) printable
        if i < n and _HEXCHAR[b]:
            if hex_start < 0:
                hex_start = i
                nibbles[:] = 0
            nibbles[i & 1] += _TEXT_NIBBLE[b]
        elif hex_start >= 0:
            if i - hex_start >= 16:
                long_hex = True
                if nibbles[hex_start & 1] >= 0.8 * ((i - hex_start) // 2):
                    out[hex_start] = True
            hex_start = -1
    if long_hex:  # gzip's magic, wherever it stands, once a block holds long hex
        for i in range(n - 3):
            if data[i] == 49 and data[i + 1] == 102 and data[i + 2] == 56 and data[i + 3] == 98:
                out[i] = True
    return out


@njit
def mark_secret_words(data: npt.NDArray[np.uint8], out: npt.NDArray[np.bool_]) -> None:
    """Marks in ``out`` where a word of :data:`SECRET_WORDS` starts in ``data`` (ASCII
    case folded)."""
    n = len(data)
    for i in range(n - 1):
        if not _SECRET_PAIRS[np.int64(_FOLD[data[i]]) << 8 | _FOLD[data[i + 1]]]:
            continue
        begin = 0
        for end in _SECRET_ENDS:
            size = end - begin
            if i + size <= n:
                j = 0
                while j < size and _FOLD[data[i + j]] == _SECRET_BYTES[begin + j]:
                    j += 1
                if j == size:
                    out[i] = True
                    break
            begin = end


def signals(data: npt.NDArray[np.uint8], *, addresses: bool = True) -> npt.NDArray[np.bool_]:
    """Where in ``data`` (raw COPY bytes) a detector or a decoder may find something: a
    position per sign, True.  No position: :func:`analyse` of the text finds nothing
    (the property the tests check), so only marked fields need a closer look.

    Signs: a byte in ``@%&\\=+$`` or a non-ASCII byte; a run of 13 digits or more with
    spaces or dashes (cards) where a number may start and end: a digit after a space or
    dash, or the run's first digit with no letter, ``_`` or ``.`` just before it, and a
    digit before a space or dash, or the run's last with none of those just after it (so
    the digits of a hex token are none); two capitals and two digits (IBANs); a digit, a
    dot and a digit three times within 15 bytes (IPv4); three colons within 10 bytes (IPv6); a run
    of 10 or more base64 characters holding capitals and small letters (base64 of text,
    JWTs, keys); a run of 16 or more hex digits whose every other digit is a printable
    byte's high nibble (hex of text), and ``1f8b`` (gzip); a ``00`` international prefix.
    Secret words are found apart (:func:`secret_words`).  One compiled pass per sign
    (:func:`sign_mask`, no GIL); memory: a few bytes per byte.

    ``addresses`` False: without the signs only e-mail addresses, phone numbers and IPs
    need (``@``, ``+``, dotted and colon runs, ``00``), for text whose addresses are
    drkit's own pseudonyms (what ``replace_pii`` wrote)."""
    return sign_mask(data, np.full(len(data), addresses))


def secret_words(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Where a word of :data:`SECRET_WORDS` starts in ``data``, ASCII case folded."""
    out = np.zeros(len(data), dtype=np.bool_)
    mark_secret_words(data, out)
    return out


def triggered(field: bytes) -> bool:
    """Whether one raw COPY field gets a closer look (the pre-filter, for one value)."""
    data = np.frombuffer(field, dtype=np.uint8)
    return bool(signals(data).any()) or bool(secret_words(data).any())


# -- decoders ---------------------------------------------------------------------------

_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z]{2,8});")
_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    r"|\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})|\\x([0-9a-fA-F]{2})"
)
_QP = re.compile(r"=(?:[0-9A-F]{2}|\r?\n)")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{10,}={0,2}")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:\\x)?((?:[0-9A-Fa-f]{2}){8,})(?![0-9A-Fa-f])")
_ALL_HEX = re.compile(r"[0-9A-Fa-f]+")


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_DECODED
        self.oversized = False

    def take(self, n: int) -> bool:
        self.left -= n
        return self.left >= 0


def _unescape(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    code = int(match.group(3) or match.group(4) or match.group(5), 16)
    if 0xD800 <= code < 0xE000 or code > 0x10FFFF:
        return "\ufffd"
    return chr(code)


def _inflate(data: bytes, budget: _Budget) -> bytes | None:
    """gzip or zlib data, inflated within the budget (None when it is neither)."""
    if data[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif len(data) > 1 and data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0:
        wbits = zlib.MAX_WBITS
    else:
        return None
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, max(budget.left, 0) + 1)
    except zlib.error:
        return None
    if len(out) > budget.left or inflater.unconsumed_tail:
        budget.oversized = True
        return None
    budget.take(len(out))
    return out


def _as_text(data: bytes, budget: _Budget, depth: int = 0) -> str | None:
    """Decoded bytes as text, when they are text (compressed text is inflated first)."""
    if depth < 2 and (inflated := _inflate(data, budget)) is not None:
        return _as_text(inflated, budget, depth + 1)
    if not data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # random bytes are almost never UTF-8; text is
    printable = sum(1 for c in text if c.isprintable() or c in "\t\n\r")
    return text if printable >= 0.9 * len(text) else None


def _decodings(text: str, budget: _Budget) -> list[str]:
    """What one level of decoding makes of ``text`` (each result differs from it)."""
    found: list[str] = []

    def add(decoded: str | None) -> None:
        if decoded and decoded != text and budget.take(len(decoded)):
            found.append(decoded)

    if not text.isascii():
        add(unicodedata.normalize("NFKC", text))
    if "%" in text and _PERCENT.search(text):
        add(unquote(text, errors="replace"))
    if "&" in text and _ENTITY.search(text):
        add(html.unescape(text))
    if "\\" in text and _ESCAPE.search(text):
        add(_ESCAPE.sub(_unescape, text))
    if "=" in text and _QP.search(text):
        with contextlib.suppress(ValueError, binascii.Error):
            add(_as_text(quopri.decodestring(text.encode("utf-8", "replace")), budget))
    for match in _HEX.finditer(text):
        raw = bytes.fromhex(match.group(1))
        add(_as_text(raw, budget))
    for match in _BASE64.finditer(text):
        run = match.group(0)
        if not run.endswith("=") and (run.islower() or run.isupper() or run.isdigit()):
            continue  # base64 of anything mixes capitals and small letters (or is padded)
        if _ALL_HEX.fullmatch(run.rstrip("=")):
            continue  # a hex run: the hex decoder's
        raw_b64 = run.replace("-", "+").replace("_", "/").rstrip("=")
        raw_b64 += "=" * (-len(raw_b64) % 4)
        try:
            raw = base64.b64decode(raw_b64, validate=True)
        except (ValueError, binascii.Error):
            continue
        add(_as_text(raw, budget))
    return found


def decoded_texts(value: str) -> tuple[list[str], bool]:
    """``value`` and everything the decoders make of it (bounded), and whether a payload
    was too large to decode."""
    budget = _Budget()
    texts = [value]
    level = [value]
    for _ in range(MAX_DEPTH):
        following: list[str] = []
        for text in level:
            for decoded in _decodings(text, budget):
                if decoded not in texts and len(texts) < MAX_VARIANTS:
                    texts.append(decoded)
                    following.append(decoded)
        if not following:
            break
        level = following
    return texts, budget.oversized


# -- detectors ---------------------------------------------------------------------------

_AT = re.compile(r"\s?[\[(]\s?[aA][tT]\s?[\])]\s?|\uff20|&commat;|&#0*64;|&#[xX]0*40;")
_EMAIL = re.compile(
    r"(?<![\w.%+\-])[\w][\w.%+\-]*@(?:[^\W_][\w\-]*\.)+[^\W\d_]{2,}(?![\w\-]*\.?\w)"
)
_USERINFO = re.compile(r"://[^\s/@]+@")
# ``00`` for ``+``: a number standing alone (``0039 347 ...``), not digits inside a token
_INTERNATIONAL = re.compile(r"(?<![^\s(:=])00(?=[1-9][\d \-./()]{5,}(?!\w))")
_PLUS = re.compile(r"\+\s?\(?\d")
_IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30})(?![A-Za-z0-9])")
_IBAN_LENGTHS = {
    entry[:2]: int(entry[2:])
    for entry in [
        "AD24",
        "AE23",
        "AL28",
        "AT20",
        "AZ28",
        "BA20",
        "BE16",
        "BG22",
        "BH22",
        "BR29",
        "BY28",
        "CH21",
        "CR22",
        "CY28",
        "CZ24",
        "DE22",
        "DK18",
        "DO28",
        "EE20",
        "EG29",
        "ES24",
        "FI18",
        "FO18",
        "FR27",
        "GB22",
        "GE22",
        "GI23",
        "GL18",
        "GR27",
        "GT28",
        "HR21",
        "HU28",
        "IE22",
        "IL23",
        "IQ23",
        "IS26",
        "IT27",
        "JO30",
        "KW30",
        "KZ20",
        "LB28",
        "LC32",
        "LI21",
        "LT20",
        "LU20",
        "LV21",
        "MC27",
        "MD24",
        "ME22",
        "MK19",
        "MR27",
        "MT31",
        "MU30",
        "NL18",
        "NO15",
        "PK24",
        "PL28",
        "PS29",
        "PT25",
        "QA29",
        "RO24",
        "RS22",
        "SA24",
        "SC31",
        "SE24",
        "SI19",
        "SK24",
        "SM27",
        "ST25",
        "SV28",
        "TL23",
        "TN24",
        "TR26",
        "UA29",
        "VA22",
        "VG24",
        "XK20",
    ]
}
_CARD = re.compile(r"(?<![\w.\-])(?:\d[ \-]?){12,18}\d(?![\w.\-])")
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9]|2)|35|3(?:0[0-5]|[68])")
_IPV4 = re.compile(
    r"(?<![\w.\-/:])"
    r"((?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))"
    r"(?![\w\-]|\.\d)"
)
_VERSION_WORD = re.compile(
    r"(?:versions?|ver|releases?|rel|build|firmware|fw|revision|rev|before|prior to|through"
    r"|thru|fixed in|patched in|upgrade to|update to|since)\s*[:=#]?\s*$",
    re.IGNORECASE,
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# each shape of a secret, with the pieces of text it cannot match without (one of them,
# case for case): a shape is searched only in a text holding one, so the shapes a regex
# engine cannot find by a literal prefix (a lookbehind first, a URL's scheme, the
# case-insensitive assignments) are not tried at every position of every text
_SECRET_SHAPES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (gates, re.compile(pattern))
    for gates, pattern in (
        (("$2",), r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}"),  # bcrypt
        (("$argon2",), r"\$argon2(?:id|i|d)\$"),
        (("$scrypt$", "$7$"), r"\$scrypt\$|\$7\$[./A-Za-z0-9]{11,}"),
        (("pbkdf2",), r"\$pbkdf2(?:-sha\d+)?\$|pbkdf2_sha\d+\$\d+\$"),
        (
            ("$1$", "$5$", "$6$"),
            r"\$[156]\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22,}",
        ),
        (("SCRAM-SHA-256$",), r"SCRAM-SHA-256\$\d+:"),
        (("md5",), r"(?<![0-9A-Za-z])md5[0-9a-f]{32}(?![0-9a-f])"),
        (("eyJ",), r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWT
        (("AKIA", "ASIA"), r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
        (("k_live_", "k_test_"), r"(?<![A-Za-z0-9])[sr]k_(?:live|test)_[0-9A-Za-z]{16,}"),
        (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{30,}"),
        (("github_pat_",), r"github_pat_[A-Za-z0-9_]{30,}"),
        (("glpat-",), r"glpat-[A-Za-z0-9_\-]{20}"),
        (("xox",), r"xox[abprs]-[A-Za-z0-9\-]{10,}"),
        (("AIza",), r"AIza[0-9A-Za-z_\-]{35}"),
        (("sk-",), r"(?<![A-Za-z0-9])sk-(?:proj-)?[A-Za-z0-9_\-]{20,}"),
        (("SG.",), r"SG\.[\w\-]{16,}\.[\w\-]{16,}"),
        (("npm_",), r"npm_[A-Za-z0-9]{36}"),
        (("-----BEGIN ",), r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
        # a URL with a password
        (("://",), r"[a-z][a-z0-9+.\-]*://[^\s/:@'\"]+:[^\s/@'\"]+@[\w.\-\[\]]"),
        (
            (":", "="),  # the assignment's sign (case folding leaves it as it is)
            r"(?i:\b(?:password|passwd|pwd|secret|api[_\-]?key|access[_\-]?token|auth[_\-]?token)"
            r"[\"']?\s*[:=]\s*[\"']?(?![\"'\s,;)}]|\*+|x+\b|null\b|none\b|redacted\b|<)[^\s\"',;)}]{6,})",
        ),
    )
)


def _has_secret(text: str) -> bool:
    for gates, shape in _SECRET_SHAPES:  # (plain loops: a generator per shape costs more)
        for gate in gates:
            if gate in text:
                if shape.search(text) is not None:
                    return True
                break
    return False


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _has_email(text: str) -> bool:
    if "://" in text:  # the user (and password) of a URL is no address
        text = _USERINFO.sub("://", text)
    if "@" not in text:
        if not _AT.search(text):
            return False
        text = _AT.sub("@", text)
    return _EMAIL.search(text) is not None


def _has_phone(text: str) -> bool:
    if "00" in text:
        text = _INTERNATIONAL.sub("+", text)
    if "+" not in text or not _PLUS.search(text):
        return False
    matcher = phonenumbers.PhoneNumberMatcher(
        text, None, leniency=phonenumbers.Leniency.VALID, max_tries=64
    )
    return matcher.has_next()


def _has_ip(text: str) -> bool:
    for match in _IPV4.finditer(text):
        start = match.start()
        if start and text[start - 1] in "vV":
            continue
        if _VERSION_WORD.search(text, max(0, start - 24), start):
            continue
        address = ipaddress.IPv4Address(match.group(1))
        if address.is_loopback or address.is_unspecified or match.group(1) == "255.255.255.255":
            continue
        return True
    if ":" in text:
        for match in _IPV6.finditer(text):
            piece = match.group(0)
            if piece.count(":") < 2 or ("::" not in piece and piece.count(":") < 7):
                continue
            try:
                address6 = ipaddress.IPv6Address(piece)
            except ValueError:
                continue
            if not (address6.is_loopback or address6.is_unspecified):
                return True
    return False


def _has_card(text: str) -> bool:
    for match in _CARD.finditer(text):
        digits = match.group(0).replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and _luhn(digits):
            return True
    return False


def _has_iban(text: str) -> bool:
    return any(_iban_ok(m.group(1)) for m in _IBAN.finditer(text))


def kinds_in(text: str, *, ip: bool = True, skip: frozenset[str] = frozenset()) -> set[str]:
    """The kinds of personal data in one (already decoded) text; ``skip``: kinds not
    looked for (a review accepts them, or they are drkit's own pseudonyms there)."""
    kinds: set[str] = set()
    if "email" not in skip and _has_email(text):
        kinds.add("email")
    if "phone" not in skip and _has_phone(text):
        kinds.add("phone")
    if ip and "ip" not in skip and _has_ip(text):
        kinds.add("ip")
    if any(c.isdigit() for c in text):
        if "card" not in skip and _has_card(text):
            kinds.add("card")
        if "iban" not in skip and _has_iban(text):
            kinds.add("iban")
    if "secret" not in skip and _has_secret(text):
        kinds.add("secret")
    return kinds


def analyse(
    value: str, *, ip: bool = True, skip: frozenset[str] = frozenset()
) -> tuple[set[str], list[str]]:
    """The kinds of personal data in ``value`` or anything decoded from it (but the kinds
    in ``skip``), and every decoded text (``value`` first) for the name and originals
    searches."""
    texts, oversized = decoded_texts(value)
    kinds: set[str] = {"oversized"} if oversized and "oversized" not in skip else set()
    for text in texts:
        kinds |= kinds_in(text, ip=ip, skip=skip)
    return kinds, texts


_VERSION_COLUMN = re.compile(r"(?i)version|release|build|firmware|revision|(?:^|_)ver(?:$|_)")


def holds_versions(column: str) -> bool:
    """A column whose name says it holds versions is not searched for IP addresses."""
    return _VERSION_COLUMN.search(column) is not None
