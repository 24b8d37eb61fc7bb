"""The scan's compiled byte loops against plain Python oracles written here (slow, short,
read rule by rule): the signs of the pre-filter byte by byte, the secret words, the
fields a block's signs mark, the columns a block keeps or blanks, and the separators
squeezed out around hash-like tokens.  A difference is a leak (a sign missed, a field
not looked at, an original not searched) or a search of the wrong text."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drkit.sanitize.scan.content import SECRET_WORDS, secret_words, sign_mask, signals
from drkit.sanitize.scan.inflight import marked_fields, select_columns
from drkit.sanitize.scan.leakscan import COMPACT, compact_apart

# -- COPY-like bytes: runs around every threshold, separators, escapes, non-ASCII -------

_ALPHABET = [*b"\t\n\\N0123456789.:-/ +@%&=$(_aAbBcfFkzZx", 0x00, 0x80, 0xC3, 0xA9, 0xFF]


def _run(alphabet: bytes, least: int, most: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(list(alphabet)), min_size=least, max_size=most).map(bytes)


def _any_case(word: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: bytes(
            c - 32 if u and 0x61 <= c <= 0x7A else c for c, u in zip(word, upper, strict=True)
        )
    )


_PIECES = st.one_of(
    st.binary(max_size=8),
    _run(bytes(_ALPHABET), 0, 30),
    _run(b"0123456789 -", 10, 22),  # card numbers: 13 digits, spaces and dashes
    _run(b"0123456789abcdefABCDEF", 14, 28),  # hex, hash-like tokens (24)
    _run(b"aZ09+/_-", 8, 12),  # base64 (10)
    _run(b"1.:a0 ", 4, 24),  # dotted and colon runs, 00 prefixes
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=7, max_size=11).map(
        lambda text: text.encode().hex().encode()  # hex of text (16)
    ),
    st.lists(st.sampled_from([b"41", b"7a", b"20", b"00", b"ff"]), min_size=7, max_size=12).map(
        b"".join  # hex of mostly text (80%)
    ),
    st.tuples(_run(b" \t\n(:=.a1-", 0, 1), _run(b"0123", 3, 4)).map(b"".join),  # 00 alone
    st.sampled_from(SECRET_WORDS).flatmap(_any_case),
    st.sampled_from(
        [
            b"1.2.3.4",
            b"10.0.0.1.5",
            b"fe80::1:2",
            b"a:b:c",
            b"0039 347 1234567",
            b"(0044",
            b"DE89",
            b"4111 1111-1111 1111",
            b"412345678901",
            b"4111111111111111",
            b"5893577244796bb6",
            b"ab 38444031952647cd",
            b"_4111111111111111.",
            b"eyJhbGciOiJ",
            b"Zm9vYmFyYmF6",
            b"abcdefghij",
            b"6d61696c20616e6e61",
            b"1f8b",
            b"1F8B",
            b"PassW",
            b"-----BEGIN",
            b"[AT]",
            b"(at)",
            b"Sk_Live",
            b"\\N",
            b"\\x41",
            b"deadbeefdeadbeefdeadbeef00",
            b"0123456789abcdef0123456789ABCDEF",
            b"012345678901234567890123456789",
        ]
    ),
)
BLOCKS = st.lists(_PIECES, max_size=24).map(b"".join)


def copy_lines(block: bytes) -> bytes:
    """``block`` as whole COPY lines (the scan is given nothing else)."""
    return block if block.endswith(b"\n") else block + b"\n"


# -- oracles ------------------------------------------------------------------------------


def runs(pattern: bytes, data: bytes) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(pattern, data)]


def oracle_signs(data: bytes, addressed: list[bool]) -> list[bool]:
    """Is each byte a sign (the rules of ``signals``' docstring, one by one)?"""
    n = len(data)
    out = [b in b"%&\\=$" or b >= 0x80 or (addressed[i] and b in b"@+") for i, b in enumerate(data)]
    if n < 4:
        return out

    def digit(i: int) -> bool:
        return 0x30 <= data[i] <= 0x39

    for i in range(n - 3):  # IBAN
        if (
            data[i : i + 2].isupper()
            and data[i : i + 2].isalpha()
            and data[i + 2 : i + 4].isdigit()
        ):
            out[i] = True
    for start, end in runs(rb"[0-9 \-]+", data):  # card numbers, where one may start and end
        run = data[start:end]
        glue_before = re.fullmatch(rb"[A-Za-z_.]", data[start - 1 : start]) if start else None
        glue_after = re.fullmatch(rb"[A-Za-z_.]", data[end : end + 1])
        opens = (run[:1].isdigit() and not glue_before) or re.search(rb"[ \-][0-9]", run)
        closes = (run[-1:].isdigit() and not glue_after) or re.search(rb"[0-9][ \-]", run)
        if sum(1 for b in run if 0x30 <= b <= 0x39) >= 13 and opens and closes:
            out[start] = True
    for start, end in runs(rb"[A-Za-z0-9+/_\-]+", data):  # base64 of text
        run = data[start:end]
        if end - start >= 10 and re.search(rb"[A-Z]", run) and re.search(rb"[a-z]", run):
            out[start] = True
    long_hex = False
    for start, end in runs(rb"[0-9a-fA-F]+", data):  # hex of text
        if end - start >= 16:
            long_hex = True
            nibbles = sum(1 for j in range(start, end, 2) if data[j] in b"234567")
            if nibbles >= 0.8 * ((end - start) // 2):
                out[start] = True
    if long_hex:
        for m in re.finditer(rb"(?=1f8b)", data):
            out[m.start()] = True
    dots = [i for i in range(1, n - 1) if data[i] == ord(".") and digit(i - 1) and digit(i + 1)]
    colons = [i for i in range(n) if data[i] == ord(":")]
    for i in range(n):
        if not addressed[i]:
            continue
        if (
            i < n - 2
            and data[i : i + 2] == b"00"
            and data[i + 2] in b"123456789"
            and (i == 0 or data[i - 1] in b" \t\n(:=")
        ):
            out[i] = True
        if sum(1 for p in dots if i <= p < i + 15) >= 3:
            out[i] = True
        if sum(1 for p in colons if i <= p < i + 10) >= 3:
            out[i] = True
    return out


def oracle_words(data: bytes) -> list[bool]:
    folded = data.lower()
    return [any(folded.startswith(w, i) for w in SECRET_WORDS) for i in range(len(data))]


def oracle_fields(block: bytes, width: int) -> list[tuple[int, int, bytes]]:
    """Each field of a block of COPY lines: row, column (the excess ones ``width``), its
    bytes."""
    fields = []
    for row, line in enumerate(block.split(b"\n")[:-1]):
        for k, cell in enumerate(line.split(b"\t")):
            fields.append((row, min(k, width), cell))
    return fields


def separator(block_fields: list[tuple[int, int, bytes]], index: int) -> bytes:
    """The tab or newline that ends a field."""
    row = block_fields[index][0]
    last = index + 1 == len(block_fields) or block_fields[index + 1][0] != row
    return b"\n" if last else b"\t"


def oracle_select(block: bytes, width: int, kept: list[bool], blank: bool) -> bytes:
    fields = oracle_fields(block, width)
    out = b""
    for i, (_, column, cell) in enumerate(fields):
        if kept[column]:
            out += cell
        elif blank:
            out += b"\0" * len(cell)
        out += separator(fields, i)
    return out


def oracle_marked(
    block: bytes, width: int, read: list[bool], decoded: list[bool], addressed: list[bool]
) -> list[int]:
    """The fields whose bytes (among the bytes of the ``read`` columns, each field with its
    separator) hold a sign or start a secret word, in the ``decoded`` columns."""
    fields = oracle_fields(block, width)
    text = b""
    owner: list[int] = []  # the field of each byte of ``text``
    for i, (_, column, cell) in enumerate(fields):
        if read[column]:
            piece = cell + separator(fields, i)
            text += piece
            owner += [i] * len(piece)
    signs = oracle_signs(text, [addressed[fields[f][1]] for f in owner])
    words = oracle_words(text)
    marked = {owner[p] for p in range(len(text)) if signs[p] or words[p]}
    # (a row's excess fields are one: column ``width``)
    return sorted(
        {fields[f][0] * (width + 1) + fields[f][1] for f in marked if decoded[fields[f][1]]}
    )


def oracle_compact_apart(folded: bytes, drop: bytes) -> bytes:
    def apart(m: re.Match[bytes]) -> bytes:
        token = m.group(0)
        return b"\x01" + token + b"\x01" if re.search(rb"[a-fA-F]", token) else token

    return re.sub(rb"[0-9a-fA-F]{24,}", apart, folded).translate(None, drop)


# -- the compiled loops against them ------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(BLOCKS, st.lists(st.booleans(), min_size=1, max_size=8))
@example(b"xx1f8bxx", [True])  # gzip's magic without long hex: no sign
@example(b"1f8b" + b"6" * 16, [True])  # ... and with it
@example(b"a.0012 (0012 =00123 .0012 0003", [True])  # 00 standing alone, or not
@example(b"4141414141414141ffff", [True])  # hex of text: 8 of 10 high nibbles printable
@example(b"414141414141414fffff", [True])  # 7 of 10
@example(b"1.2.3.4" + b"x" * 9, [True, False])  # dotted runs at the window's edge
@example(b"xxpwdxxmd5", [True])  # short secret words at the end
@example(b"a.b.c.d 1.2.3", [True])  # dots between digits only
def test_every_byte_is_a_sign_exactly_when_the_rules_say(data: bytes, flags: list[bool]) -> None:
    addressed = (flags * len(data))[: len(data)]
    array = np.frombuffer(data, dtype=np.uint8)
    got = sign_mask(array, np.array(addressed, dtype=bool)).tolist()
    assert got == oracle_signs(data, addressed), data
    assert signals(array).tolist() == oracle_signs(data, [True] * len(data))
    assert signals(array, addresses=False).tolist() == oracle_signs(data, [False] * len(data))
    assert secret_words(array).tolist() == oracle_words(data), data


@settings(max_examples=300, deadline=None)
@given(BLOCKS, st.integers(1, 5), st.data())
def test_a_field_is_marked_exactly_when_its_own_bytes_hold_a_sign(
    block: bytes, width: int, draw: st.DataObject
) -> None:
    block = copy_lines(block)
    luts = [
        draw.draw(st.lists(st.booleans(), min_size=width + 1, max_size=width + 1)) for _ in range(3)
    ]
    read, decoded, addressed = luts
    arrays = [np.array(lut, dtype=bool) for lut in luts]
    got = marked_fields(np.frombuffer(block, dtype=np.uint8), width, *arrays).tolist()
    assert got == oracle_marked(block, width, read, decoded, addressed), block


@settings(max_examples=300, deadline=None)
@given(BLOCKS, st.integers(1, 5), st.data(), st.booleans())
def test_a_block_keeps_or_blanks_its_columns_exactly(
    block: bytes, width: int, draw: st.DataObject, blank: bool
) -> None:
    block = copy_lines(block)
    kept = draw.draw(st.lists(st.booleans(), min_size=width + 1, max_size=width + 1))
    array = np.frombuffer(block, dtype=np.uint8)
    got = select_columns(array, width, np.array(kept, dtype=bool), blank).tobytes()
    assert got == oracle_select(block, width, kept, blank), block


@settings(max_examples=400, deadline=None)
@given(BLOCKS, st.sampled_from([COMPACT, COMPACT + b"\0", b""]))
def test_separators_are_squeezed_out_and_hash_like_tokens_kept_apart(
    folded: bytes, drop: bytes
) -> None:
    assert compact_apart(folded, drop) == oracle_compact_apart(folded, drop), folded
