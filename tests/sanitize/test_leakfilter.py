"""The leak scan's matcher without a database: no false negatives (against a naive
reference), exact confirmation, thread-safe collection, and memory that stays flat."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.sanitize.scan.leakfilter import (
    BUCKET_TAGS,
    HASH_MIN,
    LONG,
    SUBSTRING_MIN,
    TOKEN_MIN,
    LeakFilter,
    distinct,
)
from drkit.sanitize.scan.leakscan import LeakIndex, Searcher, canonical_forms, fold, fold_bytes

ALPHABET = "aAbBéÉßẞ@._- 0123456789xyzXYZ'\"\\\t"


def copy_field(text: str) -> bytes:
    """``text`` as one folded COPY line."""
    return fold_bytes(text.replace("\\", "\\\\").replace("\t", "\\t").encode() + b"\n")


def found(searcher: Searcher, text: str) -> set[bytes]:
    """The originals the matcher confirms in ``text`` (one field)."""
    block = copy_field(text)
    pieces = {piece for _, piece in searcher.filter.candidates(block)}
    confirmed, _ = searcher.filter.confirm(pieces, searcher.generated)
    return confirmed


def is_digit(byte: int) -> bool:
    return 0x30 <= byte <= 0x39


def is_word(byte: int) -> bool:
    return byte >= 0x80 or chr(byte).isalnum() or byte == ord("_")


def hex_run(hay: bytes, start: int, end: int) -> int:
    """The length of the run of hex characters around ``hay[start:end]``."""
    while start > 0 and chr(hay[start - 1]) in "0123456789abcdef":
        start -= 1
    while end < len(hay) and chr(hay[end]) in "0123456789abcdef":
        end += 1
    return end - start


def reference(originals: list[str], text: str) -> set[bytes]:
    """What must be found: any canonical form of an original inside the folded text
    (whole tokens when short, not glued to digits, digits alone not inside a hash-like
    run of hex characters), searched naively."""
    hay = copy_field(text)[:-1]
    out: set[bytes] = set()
    for form in set(canonical_forms(originals)):
        if len(form.strip()) < TOKEN_MIN:
            continue
        needle = form[:LONG]
        start = hay.find(needle)
        while start >= 0:
            end = start + len(needle)
            before = hay[start - 1] if start else 0x20
            after = hay[end] if end < len(hay) else 0x20
            digits_glued = (is_digit(before) and is_digit(needle[0])) or (
                len(needle) < LONG and is_digit(after) and is_digit(needle[-1])
            )
            inside_word = (is_word(before) and is_word(needle[0])) or (
                is_word(after) and is_word(needle[-1])
            )
            in_hash = needle.isdigit() and len(needle) < hex_run(hay, start, end) >= HASH_MIN
            if not digits_glued and not in_hash and (len(form) >= SUBSTRING_MIN or not inside_word):
                out.add(needle)
                break
            start = hay.find(needle, start + 1)
    return out


@settings(max_examples=300, deadline=None)
@given(
    originals=st.lists(st.text(ALPHABET, min_size=1, max_size=80), min_size=1, max_size=12),
    filler=st.lists(st.text(ALPHABET, max_size=12), min_size=1, max_size=13),
    upper=st.booleans(),
)
def test_every_original_inside_the_text_is_found_and_nothing_else(
    originals: list[str], filler: list[str], upper: bool
) -> None:
    index = LeakIndex()
    index.add_many(originals)
    searcher = index.searcher(set())
    parts: list[str] = []
    for i, piece in enumerate(filler):
        parts.append(piece)
        if i < len(originals) and i % 2 == 0:
            parts.append(originals[i].upper() if upper else originals[i])
    text = "".join(parts)
    assert found(searcher, text) == reference(originals, text)


# bytes a stored form may hold (a form is folded, escaped COPY text: never a raw tab,
# newline or NUL), and the bytes a searched text holds besides
FORM_BYTES = [bytes([c]) for c in b"aBfx059@.-_ "] + ["é".encode(), "中".encode()]
TEXT_BYTES = [*FORM_BYTES, b"\t", b"\n", b"\x00", b"\\t", b"deadbeef", b"C0FFEE"]


def stored_forms() -> st.SearchStrategy[bytes]:
    spelled = st.lists(st.sampled_from(FORM_BYTES), min_size=4, max_size=72).map(b"".join)
    digits = st.integers(1000, 10**20).map(lambda i: str(i).encode())
    around_long = st.tuples(st.integers(LONG - 8, LONG + 4), digits).map(
        lambda t: b"x" * (t[0] - len(t[1]) // 2) + t[1]  # digits across the LONG cut
    )
    return st.one_of(spelled, digits, around_long).filter(lambda f: len(f.strip()) >= TOKEN_MIN)


def stands(block: bytes, start: int, piece: bytes, word_starts: bool) -> bool:
    """The rules, read plainly: where ``piece`` (a stored form, cut at LONG bytes) counts
    when it occurs at ``start`` of ``block``."""
    end = start + len(piece)
    before = block[start - 1] if start else None
    after = block[end] if end < len(block) else None
    if any(byte in b"\t\n\x00" for byte in piece):
        return False  # a raw tab or newline ends a field, NUL is no text
    if word_starts and before is not None and is_word(before):
        return False
    if len(piece) < SUBSTRING_MIN and (
        (before is not None and is_word(before) and is_word(piece[0]))
        or (after is not None and is_word(after) and is_word(piece[-1]))
    ):
        return False  # a short form counts as a whole token only
    if before is not None and is_digit(before) and is_digit(piece[0]):
        return False  # glued to more digits: another number
    if len(piece) < LONG and after is not None and is_digit(after) and is_digit(piece[-1]):
        return False
    if piece.isdigit():
        left, right = start, end
        while left and chr(block[left - 1]) in "0123456789abcdefABCDEF":
            left -= 1
        while right < len(block) and chr(block[right]) in "0123456789abcdefABCDEF":
            right += 1
        if right - left >= HASH_MIN and right - left > len(piece):
            return False  # chance digits of a hash-like token
    return True


@settings(max_examples=400, deadline=None)
@given(
    forms=st.lists(stored_forms(), min_size=1, max_size=10),
    filler=st.lists(st.lists(st.sampled_from(TEXT_BYTES), max_size=8).map(b"".join), max_size=11),
    cut=st.integers(0, 9),
    word_starts=st.booleans(),
)
def test_candidates_hold_every_form_standing_in_the_text_and_only_pieces_that_stand(
    forms: list[bytes], filler: list[bytes], cut: int, word_starts: bool
) -> None:
    """Against a plain search: every occurrence of a stored form that stands as the rules
    say is a candidate (the filters may add false positives, never lose one), at block
    edges, beside digits, in hex runs, around tabs, newlines, NULs and non-ASCII bytes;
    and every candidate is a piece of a stored length that stands as the rules say."""
    leak_filter = LeakFilter()
    leak_filter.add(forms[::2])
    leak_filter.add(forms[1::2])
    parts = [part for i, piece in enumerate(filler) for part in (piece, *forms[i : i + 1])]
    text = b"".join(parts or forms)
    for block in (text, text[cut:], text[: len(text) - cut], b"1" + text + b"2"):
        found = leak_filter.candidates(block, word_starts=word_starts)
        for form in forms:
            piece = form[:LONG]
            start = block.find(piece)
            while start >= 0:
                if stands(block, start, piece, word_starts):
                    assert (start, piece) in found, (block, start, piece)
                start = block.find(piece, start + 1)
        lengths = {len(form[:LONG]) for form in forms}
        for start, piece in found:
            assert block[start : start + len(piece)] == piece and len(piece) in lengths
            assert stands(block, start, piece, word_starts), (block, start, piece)


def saturated(forms: list[bytes]) -> LeakFilter:
    """A filter of ``forms`` whose every bit is set: every key passes the front, the
    prefix and the whole filter, so its candidates are exactly the pieces the rules let
    stand (the filters' false positives at their most)."""
    leak_filter = LeakFilter()
    leak_filter.add(forms)
    for bloom in (leak_filter._prefix, leak_filter._whole):
        bloom.words[:] = np.uint64(2**64 - 1)
        bloom.front[:] = np.uint64(2**64 - 1)
    leak_filter._held[:] = np.uint64(2**64 - 1)  # every length under every prefix
    return leak_filter


def every_piece_that_stands(
    block: bytes, lengths: set[int], word_starts: bool
) -> list[tuple[int, bytes]]:
    """The plain oracle of a saturated filter's search: every piece of a stored length
    at every position, kept where :func:`stands` says it counts."""
    return [
        (start, block[start : start + length])
        for start in range(len(block))
        for length in sorted(lengths)
        if start + length <= len(block)
        and stands(block, start, block[start : start + length], word_starts)
    ]


# the bytes at every threshold of the rules: digits (glued numbers), hex letters (hash-like
# runs), word and non-word bytes (tokens, word starts), field ends and non-ASCII
EDGE_BYTES = [bytes([c]) for c in b"0123ab_Z@. -\t\n\x00"] + ["é".encode()]


@settings(max_examples=300, deadline=None)
@given(
    forms=st.lists(
        st.one_of(stored_forms(), st.integers(TOKEN_MIN, LONG + 4).map(lambda k: b"q" * k)),
        min_size=1,
        max_size=4,
    ),
    text=st.one_of(
        st.lists(st.sampled_from(EDGE_BYTES), max_size=90).map(b"".join),
        # long runs without a field end: pieces of every length up to LONG and past it
        st.lists(st.sampled_from([b"5", b"9", b"a", b"f", b" ", b"\t"]), max_size=90).map(b"".join),
        st.lists(st.sampled_from([b"5", b"9", b"a", b"-"]), min_size=LONG, max_size=90).map(
            b"".join
        ),
        st.binary(max_size=90),
    ),
    word_starts=st.booleans(),
)
def test_a_saturated_filter_finds_exactly_every_piece_the_rules_let_stand(
    forms: list[bytes], text: bytes, word_starts: bool
) -> None:
    """Exactly, not only no fewer: with every bit of the filters set, the compiled search
    (its sieve of positions and its early exits included) returns each piece of a stored
    length that stands, once, and nothing else, on digit runs, hex runs, word edges,
    tabs, newlines, NULs and arbitrary bytes."""
    leak_filter = saturated(forms)
    lengths = {min(len(form), LONG) for form in forms}
    found = leak_filter.candidates(text, word_starts=word_starts)
    assert sorted(found) == every_piece_that_stands(text, lengths, word_starts)


def test_a_block_with_more_candidates_than_one_compiled_call_holds_loses_none() -> None:
    """The compiled search hands its candidates back in batches of a fixed size; a
    block holding many more (every piece of a long run of one original) loses none at
    the seams of the batches."""
    leak_filter = LeakFilter()
    leak_filter.add([b"ab12cd34ef", b"12cd34ef", b"zz99"])
    block = b"ab12cd34ef zz99 " * 40_000
    found = leak_filter.candidates(block)
    pieces = ((0, b"ab12cd34ef"), (2, b"12cd34ef"), (11, b"zz99"))
    every = {(16 * i + at, piece) for i in range(40_000) for at, piece in pieces}
    assert len(found) == len(set(found)) == len(every) and set(found) == every


@settings(max_examples=60, deadline=None)
@given(
    originals=st.lists(st.text(ALPHABET, min_size=1, max_size=30), min_size=1, max_size=8),
    filler=st.lists(st.text(ALPHABET, max_size=12), min_size=1, max_size=9),
)
def test_word_starts_ask_fewer_positions_but_miss_no_word_start(
    originals: list[str], filler: list[str]
) -> None:
    """The names' search asks the filters at word starts only: it must give exactly the
    candidates of the full search that start a word, no fewer."""
    index = LeakIndex()
    index.add_many(originals)
    searcher = index.searcher(set())
    parts: list[str] = []
    for i, piece in enumerate(filler):
        parts.append(piece)
        if i < len(originals):
            parts.append(originals[i])
    block = copy_field("".join(parts))
    every = searcher.filter.candidates(block)
    starts = [(p, piece) for p, piece in every if p == 0 or not is_word(block[p - 1])]
    assert sorted(searcher.filter.candidates(block, word_starts=True)) == sorted(starts)


def test_near_misses_are_candidates_at_most_never_hits() -> None:
    index = LeakIndex()
    index.add_many([f"customer{i:06d}@shop.example" for i in range(50_000)])
    searcher = index.searcher(set())
    text = " ".join(f"customer{i:06d}@shop.exampl" for i in range(0, 50_000, 97))
    assert found(searcher, text) == set()
    assert searcher.filter.confirm({b"customer000001@shop.exampl"}, set()) == (set(), 0)
    assert found(searcher, text + " CUSTOMER049999@SHOP.EXAMPLE") == {
        b"customer049999@shop.example"
    }


def test_values_added_from_many_threads_are_all_searched() -> None:
    index = LeakIndex()

    def work(offset: int) -> None:
        for i in range(40_000):
            index.add(f"thread{offset}-value{i:06d}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    searcher = index.searcher(set())
    wanted = {f"thread{n}-value{i:06d}" for n in range(4) for i in range(0, 40_000, 499)}
    text = ";".join(sorted(wanted))
    assert found(searcher, text) == {fold(w) for w in wanted}


@given(st.lists(st.integers(0, 2**64 - 1), max_size=200))
def test_distinct_tags_are_the_sorted_set(values: list[int]) -> None:
    tags = np.array(values + values[:7], dtype=np.uint64)
    assert distinct(tags).tolist() == sorted(set(values))


def test_a_frozen_filter_rules_in_every_form_added_in_any_batch() -> None:
    leak_filter = LeakFilter()
    forms = [f"form-{i:05d}".encode() for i in range(3000)]
    for start in range(0, 3000, 700):  # batches, overlapping ones repeat forms
        leak_filter.add(forms[start : start + 900])
    leak_filter.freeze()
    strangers = [f"stranger-{i:05d}".encode() for i in range(3000)]
    assert leak_filter.maybe_stored(forms + strangers)[:3000] == forms
    assert len(leak_filter.maybe_stored(strangers)) < 3


def test_a_frozen_filter_confirms_what_it_confirmed_before_freezing() -> None:
    """Frozen, confirm asks the index first and reads back only what it may hold: the
    same originals found, the same count of generated values equal to one, long forms
    (kept as their first LONG bytes) included."""
    forms = [f"form-{i:05d}".encode() for i in range(5000)] + [b"L" * 100, b"M" * 70]
    pieces = set(forms[::7]) | {b"stranger-1", b"form-99999", b"form-0000", b"L" * LONG}
    generated = set(forms[3::11]) | {b"made-up-1", b"M" * 80}
    before = LeakFilter()
    before.add(forms)
    after = LeakFilter()
    after.add(forms)
    after.freeze()
    stored = {form[:LONG] for form in forms}
    held = {g[:LONG] for g in generated} & stored
    expected = ((pieces & stored) - held, len(held))
    assert expected[1] == len(forms[3:5000:11]) + 1 and b"L" * LONG in expected[0]
    assert before.confirm(pieces, generated) == expected
    assert after.confirm(pieces, generated) == expected
    assert after.confirm({b"stranger-1"}, {b"made-up-1"}) == (set(), 0)


def frozen_peak(count: int) -> tuple[LeakFilter, int]:
    """A filter of ``count`` distinct forms (each added twice) and the peak of memory
    its freezing allocates."""
    leak_filter = LeakFilter()
    for start in range(0, count, 1 << 16):
        batch = [f"f{i:09d}".encode() for i in range(start, min(count, start + (1 << 16)))]
        leak_filter.add(batch)
        leak_filter.add(batch)
    tracemalloc.start()
    try:
        leak_filter.freeze()
        return leak_filter, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_freezing_many_forms_sorts_them_in_buckets_with_flat_memory() -> None:
    """The index of every form's tag is built bucket by bucket: sorted and whole across
    buckets, and its peak memory does not grow with the number of forms (the 1 GB
    sample's 6 M tags took three copies of them at once)."""
    _, small_peak = frozen_peak(BUCKET_TAGS)
    large, large_peak = frozen_peak(6 * BUCKET_TAGS)
    index = np.asarray(large._index)
    assert len(index) == 6 * BUCKET_TAGS and bool(np.all(index[1:] > index[:-1]))
    forms = [f"f{i:09d}".encode() for i in range(0, 6 * BUCKET_TAGS, 499)]
    assert large.maybe_stored(forms) == forms
    assert large.maybe_stored([b"f-not-stored"]) == []
    assert large_peak <= small_peak * 1.5 + (1 << 20), (small_peak, large_peak)


def test_generated_values_are_ambiguous_not_hits() -> None:
    index = LeakIndex()
    index.add_many(["Maria Lopez-Garcia", "Real Person Name"])
    searcher = index.searcher({"maria lopez-garcia"})
    block = b"maria lopez-garcia\treal person name\n"
    pieces = {piece for _, piece in searcher.filter.candidates(block)}
    # ambiguous: the generated value's folded and compact forms
    assert searcher.filter.confirm(pieces, searcher.generated) == ({b"real person name"}, 2)


def peak_while_adding(count: int) -> int:
    index = LeakIndex()
    tracemalloc.start()
    try:
        for i in range(count):
            index.add(f"someone.{i:08d}@example-{i % 7}.org")
        index.searcher(set())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_originals_grow() -> None:
    small = peak_while_adding(100_000)
    large = peak_while_adding(800_000)
    assert large <= small * 1.2 + (1 << 20), (small, large)
    assert large < 64 << 20


def test_numbers_glued_to_more_digits_are_other_numbers() -> None:
    index = LeakIndex()
    index.add_many(["10.0.0.5", "+1 555 0100", "room 12b"])
    searcher = index.searcher(set())
    assert found(searcher, "hosts 110.0.0.5 10.0.0.55 +1 555 01009 aroom 12b") == {b"room 12b"}
    assert found(searcher, "ip=10.0.0.5; tel:+1 555 0100x") == {b"10.0.0.5", b"+1 555 0100"}


def test_generated_values_with_quotes_are_ambiguous_in_every_spelling() -> None:
    index = LeakIndex()
    index.add_many(['Acme "Quoted" Ltd'])
    searcher = index.searcher({'Acme "Quoted" Ltd'})
    block = copy_field('{"org": "acme \\"quoted\\" ltd"}')
    pieces = {piece for _, piece in searcher.filter.candidates(block)}
    assert pieces
    assert searcher.filter.confirm(pieces, searcher.generated)[0] == set()


def test_digits_inside_a_hash_like_token_are_chance_not_an_original() -> None:
    index = LeakIndex()
    index.add_many(["+39 347 123 4567", "5550100777"])
    searcher = index.searcher(set())
    md5 = "9fa3471234567bec4d2a1f5e6b7c8d0e"
    assert found(searcher, f"{md5} and 0c5550100777dd0123456789abcdef ok") == set()
    # a short hex-like word is no hash: the digits still count
    assert found(searcher, "abc5550100777def; phone3471234567") == {b"5550100777", b"3471234567"}
