"""The leak scan: is any original value of a masked column still in the target?

During the copy every value a strategy replaced is handed to :class:`LeakIndex`
(whole values, and the e-mails, phones and IPs ``replace_pii`` found inside text).
After loading, every text, varchar and JSON column of the target is read once with
``COPY ... TO STDOUT`` and searched for all of them at once:

* a value of 6 characters or more is searched *inside* every field (free text, JSON):
  an Aho–Corasick automaton (pyahocorasick, C) over the originals' first 6 characters
  finds candidate positions in one pass over the data; each candidate is confirmed
  against the hash set of originals, and must stand on a word boundary (so the original
  ``10.0.0.5`` is not "found" inside ``10.0.0.55``);
* a shorter value (4–5 characters) is matched as a whole field only.

Values shorter than 4 characters identify nobody and are not searched.  Originals that
equal a value drkit itself generates (an entry of a ``fake`` pool, a constant) cannot be
told apart from that output and are counted as ``ambiguous`` instead of searched.

The cost is one sequential read of the target's text columns plus work per candidate,
never a query per value.  Hits are reported by table, column and count — never the value.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import psycopg
from psycopg import sql

from drkit.errors import DatabaseError
from drkit.pg.connect import first_line
from drkit.sanitize.copytext import escape_text
from drkit.sanitize.schema import read_schema

log = logging.getLogger(__name__)

MIN_LENGTH = 4
PREFIX = 6
_LONG_BIT = 1 << 63
_READ_BATCH = 1 << 20
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')


@dataclass
class LeakReport:
    originals: int = 0  # distinct originals searched
    ambiguous: int = 0  # originals equal to a generated value, not searched
    columns_scanned: int = 0
    rows_scanned: int = 0
    bytes_scanned: int = 0
    seconds: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)  # "schema.table.column" -> count

    @property
    def clean(self) -> bool:
        return not self.hits

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "originals": self.originals,
            "ambiguous": self.ambiguous,
            "columns_scanned": self.columns_scanned,
            "rows_scanned": self.rows_scanned,
            "bytes_scanned": self.bytes_scanned,
            "seconds": round(self.seconds, 3),
            "hits": dict(sorted(self.hits.items())),
        }


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class LeakIndex:
    """The originals of one run, collected while copying (thread-safe)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

        # the hot path: set.add is atomic under the GIL; short values are dropped later
        self.add = self._values.add

    def add_many(self, values: Iterable[str]) -> None:
        for value in values:
            self.add(value)

    def __len__(self) -> int:
        return len(self._values)

    def searcher(self, generated: set[str]) -> Searcher:
        """Freeze the originals into a searcher; ``generated`` lists drkit's own outputs."""
        with self._lock:
            values = self._values
            self._values = set()
            self.add = self._values.add
        ambiguous = 0
        forms: set[str] = set()
        for value in values:
            if len(value) < MIN_LENGTH or not value.strip():
                continue
            if value in generated:
                ambiguous += 1
                continue
            forms.add(escape_text(value))
            if _JSON_ESCAPED.search(value):
                # the same value inside a JSON string, then in COPY text form
                forms.add(escape_text(json.dumps(value, ensure_ascii=False)[1:-1]))
        return Searcher(forms, ambiguous)


class Searcher:
    def __init__(self, forms: set[str], ambiguous: int) -> None:
        self.forms = forms
        self.ambiguous = ambiguous
        self.long_lengths = sorted({len(f) for f in forms if len(f) >= PREFIX + 63})
        masks: dict[str, int] = {}
        short: set[str] = set()
        for form in forms:
            if len(form) < PREFIX:
                short.add(form)
                continue
            bit = _LONG_BIT if len(form) >= PREFIX + 63 else 1 << (len(form) - PREFIX)
            key = form[:PREFIX]
            masks[key] = masks.get(key, 0) | bit
        self.automaton: Any = None
        self._length_cache: dict[int, list[int]] = {}
        if masks or short:
            automaton = ahocorasick.Automaton()
            for key, mask in masks.items():
                automaton.add_word(key, (0, mask))
            for form in short:
                for left in ("\t", "\n"):
                    for right in ("\t", "\n"):
                        automaton.add_word(left + form + right, (1, len(form)))
            automaton.make_automaton()
            self.automaton = automaton

    def _lengths(self, mask: int) -> list[int]:
        found = self._length_cache.get(mask)
        if found is None:
            found = [PREFIX + i for i in range(63) if mask >> i & 1]
            if mask & _LONG_BIT:
                found += self.long_lengths
            self._length_cache[mask] = found
        return found

    def scan(self, text: str, hits: list[int]) -> None:
        """Count hits in ``text`` (``\\n`` + complete COPY lines) by column index."""
        if self.automaton is None:
            return
        forms = self.forms
        seen: set[tuple[int, int]] = set()
        for end, (kind, data) in self.automaton.iter(text):
            if kind == 1:  # a whole short field, delimiters included in the match
                start = end - data
                length = data
                candidates = [length]
            else:
                start = end - PREFIX + 1
                candidates = self._lengths(data)
            for length in candidates:
                piece = text[start : start + length]
                if len(piece) != length or piece not in forms:
                    continue
                before = text[start - 1] if start > 0 else "\n"
                after = text[start + length] if start + length < len(text) else "\n"
                if (_is_word(piece[0]) and _is_word(before)) or (
                    _is_word(piece[-1]) and _is_word(after)
                ):
                    continue
                if (start, length) in seen:
                    continue
                seen.add((start, length))
                line_start = text.rfind("\n", 0, start) + 1
                column = text.count("\t", line_start, start)
                while len(hits) <= column:
                    hits.append(0)
                hits[column] += 1


def scan_database(conn: psycopg.Connection[Any], searcher: Searcher) -> LeakReport:
    """Search every text/varchar/JSON column of the connected database."""
    started = time.monotonic()
    report = LeakReport(originals=len(searcher.forms), ambiguous=searcher.ambiguous)
    schema = read_schema(conn)
    for table in schema.tables.values():
        columns = [c for c in table.columns if c.is_text]
        if not columns:
            continue
        report.columns_scanned += len(columns)
        if searcher.automaton is None:
            continue
        query = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
            sql.Identifier(table.schema, table.name),
        )
        counts: list[int] = []
        try:
            with conn.cursor() as cur, cur.copy(query) as copy:
                pending: list[bytes] = []
                size = 0
                carry = b""
                for chunk in copy:
                    pending.append(bytes(chunk))
                    size += len(chunk)
                    if size >= _READ_BATCH:
                        carry = _scan_block(carry, pending, searcher, counts, report)
                        pending, size = [], 0
                carry = _scan_block(carry, pending, searcher, counts, report)
                if carry:
                    _scan_block(b"", [carry, b"\n"], searcher, counts, report)
        except psycopg.Error as exc:
            raise DatabaseError(f"leak scan of {table.key}: {first_line(exc)}") from None
        for index, count in enumerate(counts):
            if count:
                report.hits[f"{table.key}.{columns[index].name}"] = count
    report.seconds = time.monotonic() - started
    return report


def _scan_block(
    carry: bytes, pending: list[bytes], searcher: Searcher, counts: list[int], report: LeakReport
) -> bytes:
    data = carry + b"".join(pending)
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        return data
    block = data[:cut]
    report.bytes_scanned += len(block)
    report.rows_scanned += block.count(b"\n")
    searcher.scan("\n" + block.decode("utf-8", "replace"), counts)
    return data[cut:]
