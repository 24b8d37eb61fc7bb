"""The e-mail map's store against a plain dict: whatever the order of puts and reads.

A spilled map stages its puts and merges them into its keyed table when read; these
tests hold every answer it gives, at every point, to an oracle that keeps the smallest
value per key in a dict, and hold the compiler's lookups (exact spelling first, then the
folded key) to the same rule written out by hand.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drkit.sanitize.strategies.compiler import Compiler
from drkit.sanitize.strategies.piitext import email_spelling
from drkit.sanitize.strategies.pseudomap import PseudonymMap
from drkit.sanitize.strategies.pseudonymizer import Pseudonymizer

# few characters, so keys and values collide often; some sort differently in UTF-8 bytes,
# UTF-16 units and code points if anything compared them wrongly (é, U+E000, an emoji)
CHARS = "aAb\t@.é\ue000\U0001f600"
KEYS = st.text(CHARS, max_size=4)
VALUES = st.text(CHARS, min_size=1, max_size=4)
ENTRIES = st.lists(st.tuples(KEYS, VALUES), max_size=40)


def smallest(entries: list[tuple[str, str]]) -> dict[str, str]:
    oracle: dict[str, str] = {}
    for key, value in entries:
        if key not in oracle or value < oracle[key]:
            oracle[key] = value
    return oracle


@settings(max_examples=300, deadline=None)
@given(
    entries=ENTRIES,
    data=st.data(),
    memory_entries=st.integers(0, 4),
    batch=st.integers(1, 5),
)
def test_the_map_answers_as_a_dict_of_smallest_values_in_any_order(
    entries: list[tuple[str, str]], data: st.DataObject, memory_entries: int, batch: int
) -> None:
    absent = ["zz", "", "a\t", "\U0001f600\U0001f600\U0001f600\U0001f600\U0001f600"]
    finals = []
    for _ in range(2):
        order = data.draw(st.permutations(entries))
        reads = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
        m = PseudonymMap(memory_entries=memory_entries, batch=batch)
        many = data.draw(st.booleans())  # the puts between two reads as one put_many
        held_back: list[tuple[str, str]] = []
        for n, (key, value) in enumerate(order):
            if many:
                held_back.append((key, value))
                if reads[n] or n == len(order) - 1:
                    m.put_many(held_back)
                    held_back = []
            else:
                m.put_min(key, value)
            if reads[n]:  # a read in the middle of the fill: puts after it still count
                oracle = smallest(order[: n + 1])
                probe = [k for k, _ in order[: n + 1]] + absent
                assert [m.get(k) for k in probe] == [oracle.get(k) for k in probe]
                first = data.draw(st.sampled_from(probe))
                others = tuple(data.draw(st.lists(st.sampled_from(probe), max_size=3)))
                held = [oracle[k] for k in others if k in oracle]
                expected = oracle[first] if first in oracle else min(held, default=None)
                assert m.first_or_smallest(first, others) == expected
                assert len(m) == len(oracle)
        oracle = smallest(entries)
        assert m.spilled == (len(oracle) > memory_entries)
        assert len(m) == len(oracle)
        probe = sorted(oracle) + absent
        finals.append([m.get(k) for k in probe])
        assert finals[-1] == [oracle.get(k) for k in probe]
        assert all(m.may_hold_value(v) for v in oracle.values())
        m.close()
    assert finals[0] == finals[1]


SPELLINGS = st.sampled_from(
    ["cy@x.example", "Cy@x.example", "CY@X.EXAMPLE", "cy%40x.example", " Cy@x.example ", "ann@x"]
)
PSEUDONYMS = st.sampled_from(["u1@example.com", "u2@example.com", "u10@example.com", "a@b"])


@settings(max_examples=200, deadline=None)
@given(
    registered=st.lists(st.tuples(SPELLINGS, PSEUDONYMS), max_size=12),
    looked_up=st.lists(SPELLINGS | st.just("nobody@x.example"), min_size=1, max_size=6),
    memory_entries=st.sampled_from([0, 1, 3, 50_000]),
)
def test_a_lookup_takes_the_exact_spelling_first_then_the_folded_key(
    registered: list[tuple[str, str]], looked_up: list[str], memory_entries: int
) -> None:
    # the rule as it was written before the map answered both spellings in one call
    exact = smallest([(email_spelling(a), p) for a, p in registered])
    folded = smallest([(email_spelling(a).lower(), p) for a, p in registered])
    compiler = Compiler(Pseudonymizer(b"pseudomap-test-salt"))
    compiler.emails = PseudonymMap(memory_entries=memory_entries, batch=2)
    for address, pseudonym in registered:
        compiler.register_email(address, pseudonym)
    for value in looked_up:
        spelling = email_spelling(value)
        expected = exact.get(spelling) or folded.get(spelling.lower())
        assert compiler.registered(value) == (spelling.lower(), expected)
        want = expected or compiler.pseudo.email(spelling.lower(), "example.com")
        assert compiler.email_pseudonym(value, "example.com") == want
    compiler.close()


def test_a_spilled_map_keeps_its_entries_on_disk_not_in_memory() -> None:
    import tracemalloc

    m = PseudonymMap(memory_entries=10, batch=256)
    for i in range(11):  # spilled: its fixed-size parts are allocated
        m.put_min(f"\tperson.{i:06d}@corp.example", f"user_{i}@example.com")
    assert m.spilled
    tracemalloc.start()
    try:
        for i in range(20_000):  # ~1.5 MB of keys and values, each a fresh string
            m.put_min(f"\tperson.{i:06d}@corp.example", f"user_{i}@example.com")
        m.put_min("\tperson.000007@corp.example", "user_0@example.com")
        filled, _ = tracemalloc.get_traced_memory()
        assert m.get("\tperson.000007@corp.example") == "user_0@example.com"
        assert m.get("\tperson.019999@corp.example") == "user_19999@example.com"
        read, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.spilled and len(m) == 20_000
    # what stays in Python is a batch of pending puts at most, whatever the map's size
    assert filled < 256 * 1024 and read < 256 * 1024
    m.close()
