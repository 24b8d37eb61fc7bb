"""The leak scan's matcher on COPY text: what counts as a hit, and in which column."""

from __future__ import annotations

from drkit.sanitize.copytext import escape
from drkit.sanitize.leakscan import LeakIndex


def copy_text(rows: list[list[str]]) -> str:
    lines = [b"\t".join(escape(v) for v in row).decode() for row in rows]
    return "\n" + "\n".join(lines) + "\n"


def hits_for(
    originals: list[str], rows: list[list[str]], generated: set[str] | None = None
) -> list[int]:
    index = LeakIndex()
    index.add_many(originals)
    searcher = index.searcher(generated or set())
    hits: list[int] = []
    searcher.scan(copy_text(rows), hits)
    return hits + [0] * (len(rows[0]) - len(hits))


def test_contained_equal_and_escaped_values_are_found_by_column() -> None:
    originals = [
        "anna.rossi1@customer1.com",
        "10.0.0.5",
        "abcd",
        "tab\there",
        "x" * 90,
        'say "hi" now',
    ]
    rows = [
        ["mail anna.rossi1@customer1.com today", "clean"],
        ["10.0.0.55 is not 10.0.0.5's neighbour", "abcd"],
        ["abcde", "prefix tab\there suffix"],
        ["y" + "x" * 90, "x" * 90],
        ['{"note": "say \\"hi\\" now"}', "nothing"],
    ]
    # col 0: e-mail, 10.0.0.5 (not inside 10.0.0.55), the JSON-escaped quote
    # col 1: abcd (whole field), tab\there, x*90 (not the one glued to a y)
    assert hits_for(originals, rows) == [3, 3]


def test_generated_values_and_tiny_values_are_not_searched() -> None:
    index = LeakIndex()
    index.add_many(["John Smith", "ab", "  ", "Maria Lopez"])
    searcher = index.searcher({"John Smith"})
    assert searcher.ambiguous == 1
    assert searcher.forms == {"Maria Lopez"}
    hits: list[int] = []
    searcher.scan(copy_text([["John Smith and Maria Lopez", "ab"]]), hits)
    assert hits == [1]


def test_no_originals_no_hits() -> None:
    assert hits_for([], [["anything", "at all"]]) == [0, 0]
