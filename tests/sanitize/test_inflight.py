"""The scan of rows in flight, without a database: blocks of COPY text are searched by
row and column, a review accepts only what it says, names count as whole words, and
nothing of a value is kept in what is reported."""

from __future__ import annotations

from drkit.sanitize.scan.inflight import ColumnScan, FlightScanner, NameIndex
from drkit.sanitize.scan.leakscan import LeakIndex

ORIGINALS = ["giulia.romano77@customer-one.com", "+39 347 123 4567", "ZX81QK      "]


def scanner(names: tuple[str, ...] = ()) -> FlightScanner:
    index = LeakIndex()
    index.add_many(ORIGINALS)
    name_index = NameIndex()
    for name in names:
        name_index.add(name)
    return FlightScanner(index.searcher({"REDACTED"}), name_index.freeze())


def columns(accepted: frozenset[str] = frozenset()) -> list[ColumnScan]:
    """id (kept number), note (kept text, reviewed for ``accepted``), masked (a pseudonym)."""
    return [
        ColumnScan("public.t.id"),
        ColumnScan("public.t.note", decode=True, content=True, accepted=accepted),
        ColumnScan("public.t.masked", carries=False),
    ]


def test_a_clean_block_is_clean_and_counted() -> None:
    run = scanner()
    table = run.table(columns())
    assert table.block(b"1\tnothing here\tuser_1@example.com\n2\t\\N\t\\N\n")
    assert run.hits.clean and run.rows == 2


def test_originals_in_other_spellings_are_found_by_column() -> None:
    run = scanner()
    table = run.table(columns())
    block = (
        b"1\tring 0039-347-1234567\tx\n"
        b"2\tticket ZX81QK done\tx\n"
        b"3\tgiulia. romano77 @ customer-one. com\tx\n"
        b"4\tZ2l1bGlhLnJvbWFubzc3QGN1c3RvbWVyLW9uZS5jb20=\tx\n"
    )
    assert not table.block(block)
    assert run.hits.originals == {"public.t.note": 4}


def test_a_whole_value_strategys_output_is_not_searched() -> None:
    run = scanner()
    table = run.table(columns())
    # the masked column's output cannot carry an original: were it equal to one, it is
    # a coincidence of the pseudonym (and its content is not the run's to search)
    assert table.block(b"1\tok\tgiulia.romano77@customer-one.com\n")


def test_content_by_kind_and_a_review_that_accepts_some_kinds() -> None:
    run = scanner()
    table = run.table(columns())
    assert not table.block(b"1\tmail a.b@partner.org from 203.0.113.7\tx\n")
    assert run.hits.content == {"public.t.note": {"email": 1, "ip": 1}}
    reviewed = scanner()
    table = reviewed.table(columns(accepted=frozenset({"ip"})))
    assert not table.block(b"1\tmail a.b@partner.org from 203.0.113.7\tx\n")
    assert reviewed.hits.content == {"public.t.note": {"email": 1}}


def test_names_count_as_whole_words_in_kept_text() -> None:
    run = scanner(names=("Mary Johnson",))
    table = run.table(columns())
    assert table.block(b"1\tJohnsonville is a town\tx\n")
    assert not table.block(b"2\tCallback: Mrs. Johnson\tx\n")
    assert run.hits.content == {"public.t.note": {"name": 1}}


def test_reports_never_hold_a_value() -> None:
    run = scanner(names=("Mary Johnson",))
    table = run.table(columns())
    table.block(b"1\tgiulia.romano77@customer-one.com and Mrs. Johnson\tx\n")
    shown = repr(run.hits).lower()
    assert "giulia" not in shown and "johnson" not in shown


def test_names_are_searched_in_content_columns_wherever_they_sit() -> None:
    """The name search reads only the content-scanned columns' bytes: a name must still
    be found in them, by row, whatever the columns around them hold, and never in a
    column that is not searched by content."""
    run = scanner(names=("Mary Johnson",))
    table = run.table(
        [
            ColumnScan("public.t.code", decode=True, accepted=frozenset()),  # not by content
            ColumnScan("public.t.id"),
            ColumnScan("public.t.note", decode=True, content=True),
            ColumnScan("public.t.masked", carries=False),
            ColumnScan("public.t.tail", decode=True, content=True),
        ]
    )
    assert table.block(b"johnson\t1\tfine\tjohnson\tok\n")
    assert not table.block(
        b"x\t2\tcall Johnson\tx\tok\n"
        b"johnson\t3\tfine\tx\tMRS. JOHNSON\n"
        b"x\t4\tfine\tx\tok\n"
        b"x\t5\tjohnson\tx\tjohnson\n"
    )
    assert run.hits.content == {"public.t.note": {"name": 2}, "public.t.tail": {"name": 2}}


def test_addresses_in_kept_text_beside_a_column_of_pseudonyms_are_found() -> None:
    """A block whose columns need different signs (kept text beside ``replace_pii``'s
    output, whose addresses are drkit's pseudonyms) must still mark the kept column's
    addresses: the pre-filter's address signs are computed apart for it."""
    run = scanner()
    pseudonyms = frozenset({"email", "phone", "ip"})
    table = run.table(
        [
            ColumnScan("public.t.note", decode=True, content=True),
            ColumnScan("public.t.details", decode=True, content=True, accepted=pseudonyms),
        ]
    )
    assert not table.block(
        b"mail a.b@partner.org from 203.0.113.7\tmail c.d@example.com from 10.1.2.3\n"
        b"fine\tmail e.f@example.com\n"
    )
    assert run.hits.content == {"public.t.note": {"email": 1, "ip": 1}}


MD5_WITH_PHONE = "9fa3471234567bec4d2a1f5e6b7c8d0e"  # a masked phone's digits, by chance


def test_a_hash_holding_a_masked_phones_digits_is_no_hit_but_the_phone_still_is() -> None:
    """A long run of hex characters mixing letters and digits is a hash or an id: a digit
    form inside it is chance, not a phone number (the 1 GB sample's md5 descriptions hold
    a few).  The same digits spelled as a phone number, even right beside such a hash,
    are still found; in the text as written and without its separators."""
    run = scanner()
    table = run.table(columns())
    assert table.block(
        f"1\tchecksum {MD5_WITH_PHONE} ok\tx\n"
        f"2\tref abc-{MD5_WITH_PHONE}\tx\n"
        f"3\t{MD5_WITH_PHONE.upper()}\tx\n"
        f"4\tsee (1) {MD5_WITH_PHONE}.\tx\n".encode()
    )
    assert run.hits.clean
    assert not table.block(
        f"1\tcall 347 123 4567 {MD5_WITH_PHONE}\tx\n"
        f"2\ttel:3471234567 {MD5_WITH_PHONE}\tx\n"
        f"3\t{MD5_WITH_PHONE} 0039.347.123.4567\tx\n"
        "4\tphone3471234567abc\tx\n"
        "5\tdb=3471234567\tx\n".encode()
    )
    assert run.hits.originals == {"public.t.note": 5}


def test_signs_are_read_in_the_decoded_columns_only_and_found_there_by_row() -> None:
    """The pre-filter reads the decoded columns' bytes alone: whatever sits in the other
    columns around them, a kept field's secret, address or encoded original is found in
    its own row and column, and a sign in a column that is not searched marks nothing."""
    run = scanner()
    table = run.table(
        [
            ColumnScan("public.t.masked", carries=False),
            ColumnScan("public.t.note", decode=True, content=True),
            ColumnScan("public.t.id"),
            ColumnScan("public.t.tail", decode=True, content=True),
        ]
    )
    assert table.block(b"a.b@partner.org\tfine\t7\tok\npassword=hunter2hunter2\tok\t8\tok\n")
    assert not table.block(
        b"x\tfine\t1\tpassword=hunter2hunter2\n"
        b"a.b@partner.org\tmail c.d@partner.org\t2\tok\n"
        b"xxxxxxxxxxxxxxxxxxxxxxxx\tok\t3\tZ2l1bGlhLnJvbWFubzc3QGN1c3RvbWVyLW9uZS5jb20=\n"
    )
    assert run.hits.content == {
        "public.t.tail": {"email": 1, "secret": 1},
        "public.t.note": {"email": 1},
    }
    assert run.hits.originals == {"public.t.tail": 1}


def test_a_table_with_nothing_to_mask_finds_what_the_general_path_finds() -> None:
    """The lean path (every column kept) and the general one (the same columns beside a
    masked one) report the same rows, kinds and originals."""
    lines = [
        b"1\tring 0039-347-1234567\tok\n",
        b"2\tmail a.b@partner.org from 203.0.113.7\tx\n",
        b"3\tfine\tpassword=hunter2hunter2\n",
        b"4\tZ2l1bGlhLnJvbWFubzc3QGN1c3RvbWVyLW9uZS5jb20=\tgiulia. romano77 @ customer-one. com\n",
        b"0039-347-1234567\tnothing\there\n",  # in a column that is not decoded
        b"a.b@partner.org 5\tnothing\there\n",
    ]
    lean = scanner()
    kept = [
        ColumnScan("public.t.id"),
        ColumnScan("public.t.note", decode=True, content=True),
        ColumnScan("public.t.tail", decode=True, content=True),
    ]
    assert not lean.table(kept).block(b"".join(lines))
    general = scanner()
    mixed = [*kept, ColumnScan("public.t.masked", carries=False)]
    assert not general.table(mixed).block(b"".join(line[:-1] + b"\tx\n" for line in lines))
    assert lean.hits == general.hits
    assert lean.hits.originals == {"public.t.note": 2, "public.t.tail": 1}
