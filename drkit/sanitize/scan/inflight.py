"""The scan of rows in flight: every block of COPY text is searched *before* it is
written to the build database, so an original or a piece of personal data never reaches
the target server — not its tables, its WAL, nor its log (a row the build rejects is
echoed there as "Failing row contains ...").

A run first collects every original of every masked column (the originals pass, see
:mod:`drkit.sanitize.pipeline`), then each table's blocks go through :meth:`TableScan.block`:

* **originals** (:class:`~drkit.sanitize.scan.leakscan.LeakIndex`), in every column of
  the block: its folded text and the same without separators
  (:data:`~drkit.sanitize.scan.leakscan.COMPACT`), and, for the fields of content-scanned
  columns that look encoded, every decoded text (:func:`~drkit.sanitize.scan.content.analyse`);
* **personal data by content** in the columns that reach the target unmasked and carry
  no review (``pii: none``): the fields the pre-filter marks (the signs of
  :func:`~drkit.sanitize.scan.content.signals` and the secret words, one compiled pass
  over the block: :func:`marked_fields`) are decoded and searched by kind;
  ``inet``/``cidr`` columns count every value as an IP address;
* **names** of the run's masked name columns (their last words, four bytes and more) as
  whole words in those same columns, decoded texts included.

A block with a confirmed hit is not written; the run goes on reading (to count every
hit) and fails before publishing.  Counts are rows; no value is ever kept beyond the
block or shown.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from drkit.jit import njit
from drkit.sanitize.copytext import escape_text, unescape
from drkit.sanitize.scan.content import analyse, mark_secret_words, sign_mask
from drkit.sanitize.scan.leakfilter import LeakFilter, Prepared
from drkit.sanitize.scan.leakscan import (
    COMPACT,
    Searcher,
    canonical_forms,
    compact_apart,
    fold,
    fold_bytes,
)

_WORD = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789_":
    _WORD[_c] = True
_WORD[0x80:] = True


@dataclass(frozen=True)
class ColumnScan:
    """How one column of a table's rows is scanned."""

    place: str  # schema.table.column
    decode: bool = False  # kept text: its encoded fields are decoded for the originals
    # its values can carry an original (kept, or partly rewritten: replace_pii, json);
    # a whole-value strategy's output (a pseudonym, a hash, NULL) cannot
    carries: bool = True
    content: bool = False  # searched for personal data by content (and names)
    ip_type: bool = False  # inet/cidr: every value is an address
    ip: bool = True  # dotted quads may be addresses (not a column of versions)
    accepted: frozenset[str] = frozenset()  # kinds a person's review accepted


class NameIndex:
    """The last words of the run's masked person names, searched as whole words."""

    def __init__(self, store: Callable[[set[bytes]], None] | None = None) -> None:
        """``store``: where the names' forms go (a worker's, to be sent to the run); by
        default into this index's own filter."""
        self.filter: LeakFilter | None = None
        if store is None:
            self.filter = LeakFilter()
            store = self._into_filter
        self._store = store
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        words = value.rsplit(None, 1)
        if words:
            pending = self._pending
            pending.append(words[-1].strip(".,;:'\"()"))  # (an append needs no lock)
            if len(pending) >= 1 << 16:
                self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending = self._pending
            count = len(pending)
            batch = pending[:count]
            del pending[:count]  # appends made meanwhile stay, at the end
            self._store({f for f in canonical_forms(batch) if b" " not in f})

    def _into_filter(self, forms: set[bytes]) -> None:
        assert self.filter is not None
        self.filter.add(forms)

    def store(self, prepared: Prepared) -> None:
        """Forms of names made ready elsewhere (a worker process's), into the filter."""
        assert self.filter is not None, "an index that stores elsewhere has no filter"
        self.filter.store(prepared)

    def flush(self) -> None:
        """Every name added so far stored now."""
        self._flush()

    def freeze(self) -> LeakFilter | None:
        self._flush()
        assert self.filter is not None, "an index that stores elsewhere has no filter"
        return self.filter if self.filter.distinct else None


@dataclass
class ScanHits:
    """What the scan found, by place: originals (rows) and kinds of personal data (rows)."""

    originals: dict[str, int] = field(default_factory=dict)
    content: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.originals and not self.content


class FlightScanner:
    """The run's scanner: one searcher of originals, one of names, hits of every table."""

    def __init__(self, searcher: Searcher, names: LeakFilter | None) -> None:
        self.searcher = searcher
        self.names = names
        searcher.filter.freeze()  # every original is known: candidates are ruled out fast
        # (the originals equal to a value drkit generates are counted by the scan of the
        # catalog that follows every pass in flight, :func:`scan_database`'s confirm)
        if names is not None:
            names.freeze()
        self.hits = ScanHits()
        self.rows = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._known: dict[bytes, bool] = {}  # candidate piece -> confirmed original
        self._known_names: dict[bytes, bool] = {}

    def table(self, columns: list[ColumnScan]) -> TableScan:
        return TableScan(self, columns)

    def confirmed(self, pieces: set[bytes], *, names: bool = False) -> set[bytes]:
        """The pieces that are stored originals (names), exactly; memoised."""
        known = self._known_names if names else self._known
        with self._lock:
            unknown = {p for p in pieces if p not in known}
            result = {p for p in pieces if known.get(p)}
        if unknown:
            leak_filter = self.names if names else self.searcher.filter
            assert leak_filter is not None
            maybe = set(leak_filter.maybe_stored(sorted(unknown)))
            found: set[bytes] = set()
            if maybe:  # drkit's own outputs were left out by the caller
                found, _ = leak_filter.confirm(maybe, set())
            result |= found & unknown
            with self._lock:
                if len(known) > 1 << 16:
                    known.clear()
                known.update({p: p in found for p in unknown})
        return result

    def record(self, found: ScanHits, rows: int, size: int) -> None:
        with self._lock:
            self.rows += rows
            self.bytes += size
            for place, count in found.originals.items():
                self.hits.originals[place] = self.hits.originals.get(place, 0) + count
            for place, kinds in found.content.items():
                mine = self.hits.content.setdefault(place, {})
                for kind, count in kinds.items():
                    mine[kind] = mine.get(kind, 0) + count


@njit
def select_columns(
    data: npt.NDArray[np.uint8], width: int, columns: npt.NDArray[np.bool_], blank: bool
) -> npt.NDArray[np.uint8]:
    """The bytes of a block of COPY lines in the ``columns`` marked (by index; a row's
    fields beyond ``width`` count as column ``width``), every tab and newline kept (a tab
    or newline counts to the field it ends); the other bytes dropped, or, ``blank``,
    made NULs in place."""
    out = np.empty(len(data), dtype=np.uint8)
    size = 0
    column = 0
    for b in data:
        if b == 9 or b == 10 or columns[min(column, width)]:
            out[size] = b
            size += 1
        elif blank:
            out[size] = 0
            size += 1
        if b == 9:
            column += 1
        elif b == 10:
            column = 0
    return out[:size]


@njit
def marked_fields(
    data: npt.NDArray[np.uint8],
    width: int,
    read: npt.NDArray[np.bool_],
    decoded: npt.NDArray[np.bool_],
    addressed: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int64]:
    """The fields of a block of COPY lines the pre-filter marks, as ``row * (width + 1) +
    column``, ascending: the signs (:func:`~drkit.sanitize.scan.content.signals`, those
    of addresses in the columns ``addressed`` marks) and the secret words found in the
    bytes of the columns ``read`` marks (each field with its tab or newline), in the
    columns ``decoded`` marks.  Columns are indexes of these tables, a row's fields
    beyond ``width`` column ``width``."""
    n = len(data)
    sub = np.empty(n, dtype=np.uint8)
    sub_addressed = np.empty(n, dtype=np.bool_)
    size = 0
    column = 0
    for b in data:
        at = min(column, width)
        if read[at]:
            sub[size] = b
            sub_addressed[size] = addressed[at]
            size += 1
        if b == 9:
            column += 1
        elif b == 10:
            column = 0
    marks = sign_mask(sub[:size], sub_addressed[:size])
    mark_secret_words(sub[:size], marks)
    out = np.empty(size, dtype=np.int64)
    found = 0
    i = 0  # the next byte of ``sub``
    row = 0
    column = 0
    for b in data:
        at = min(column, width)
        if read[at]:
            if marks[i] and decoded[at]:
                field = row * (width + 1) + at
                if found == 0 or out[found - 1] != field:
                    out[found] = field
                    found += 1
            i += 1
        if b == 9:
            column += 1
        elif b == 10:
            column = 0
            row += 1
    return out[:found]


def _line_starts(text: bytes) -> list[int]:
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x0A) + 1
    return [0, *ends.tolist()]


class TableScan:
    """One table's blocks (its columns in COPY order)."""

    def __init__(self, run: FlightScanner, columns: list[ColumnScan]) -> None:
        self.run = run
        self.columns = columns
        self.width = len(columns)
        self.content = {i for i, c in enumerate(columns) if c.content}
        self.decode = {i for i, c in enumerate(columns) if c.decode or c.content}
        self._decode_lut = np.zeros(self.width + 1, dtype=bool)
        self._decode_lut[sorted(self.decode)] = True
        self.ip_type = [i for i, c in enumerate(columns) if c.ip_type]
        self._carries_lut = np.zeros(self.width + 1, dtype=bool)
        self._carries_lut[[i for i, c in enumerate(columns) if c.carries]] = True
        self._every_column = all(c.carries for c in columns)
        self._content_lut = np.zeros(self.width + 1, dtype=bool)
        self._content_lut[sorted(self.content)] = True
        self._content_only = len(self.content) == self.width
        self._decode_only = len(self.decode) == self.width
        pseudonyms = frozenset({"email", "phone", "ip"})
        self._address_lut = np.zeros(self.width + 1, dtype=bool)
        addressed = [i for i in self.decode if not pseudonyms <= self.columns[i].accepted]
        self._address_lut[addressed] = True
        self._every_lut = np.ones(self.width + 1, dtype=bool)
        self._addresses = len(addressed)
        # a table whose every column can carry an original and whose decoded columns
        # want the same signs (a table with nothing to mask, most often): its blocks are
        # searched as they are, and only the bytes the pre-filter marks are placed by
        # row and column
        self._lean = self._every_column and self._addresses in (0, len(self.decode))

    def block(self, block: bytes) -> bool:
        """Search one block of whole COPY lines; False when it holds a hit (recorded)."""
        found = self.search(block)
        self.run.record(found, block.count(b"\n"), len(block))
        return found.clean

    def search(self, block: bytes) -> ScanHits:
        """What one block of whole COPY lines holds, not yet recorded (a worker process
        searches, the run records: :mod:`drkit.sanitize.workers`)."""
        found = ScanHits()
        leak: dict[tuple[int, bytes], set[int]] = {}
        names: dict[tuple[int, bytes], set[int]] = {}
        searched = block
        data = np.frombuffer(block, dtype=np.uint8)
        # (a lean table's names are searched in the whole block, at word starts: a piece
        # outside the content-scanned columns is dropped by its column)
        names_apart = self.run.names is not None and self.content and not self._content_only
        names_apart = names_apart and not self._lean
        if not self._every_column:  # the columns that can carry an original (tabs kept)
            searched = select_columns(data, self.width, self._carries_lut, False).tobytes()
        folded = fold_bytes(searched)
        self._candidates(folded, leak, None)
        if self.run.names is not None and self.content:
            # names count in the content-scanned columns only: the search reads their
            # bytes (tabs kept, so a piece's column is still its count of tabs)
            in_names = folded
            if names_apart:
                in_names = fold_bytes(
                    select_columns(data, self.width, self._content_lut, False).tobytes()
                )
            self._candidates(in_names, names, self.run.names)
        content: dict[tuple[int, str], set[int]] = {}
        if self.decode or self.ip_type:
            self._content(block, folded, content, leak, names)
        self._settle(found, leak, names, content)
        return found

    # -- pieces ---------------------------------------------------------------------

    def _candidates(
        self,
        text: bytes,
        out: dict[tuple[int, bytes], set[int]],
        names: LeakFilter | None,
        where: list[tuple[int, int]] | None = None,
        columns: set[int] | None = None,
    ) -> None:
        """Candidate pieces of ``text`` by (column, piece) -> rows.  ``where``: the text's
        lines are decoded fields at these (row, column); else its lines are the rows.
        ``columns``: only the pieces in these columns count."""
        leak_filter = names if names is not None else self.run.searcher.filter
        # a name counts as a whole word: only the positions that start one are asked
        found = leak_filter.candidates(text, word_starts=names is not None)
        if not found:
            return
        starts = _line_starts(text)
        for pos, piece in found:
            line = bisect.bisect_right(starts, pos) - 1
            if where is not None:
                row, column = where[line]
            else:
                row = line
                column = text.count(b"\t", starts[line], pos) if self.width > 1 else 0
            if columns is not None and column not in columns:
                continue
            if names is not None:
                if column not in self.content:
                    continue
                end = pos + len(piece)
                if (pos and _WORD[text[pos - 1]]) or (end < len(text) and _WORD[text[end]]):
                    continue  # a name counts as a whole word
            out.setdefault((min(column, self.width - 1), piece), set()).add(row)

    def _content(
        self,
        block: bytes,
        folded: bytes,
        content: dict[tuple[int, str], set[int]],
        leak: dict[tuple[int, bytes], set[int]],
        names: dict[tuple[int, bytes], set[int]],
    ) -> None:
        """``folded``: the searched text of ``block`` (all of it when every column can
        carry an original)."""
        starts = _line_starts(block)
        fields: set[tuple[int, int]] = set()
        if self.decode:
            data = np.frombuffer(block, dtype=np.uint8)
            if self._lean:  # the block as it is: its kept text without separators
                self._candidates(compact_apart(folded), leak, None, columns=self.decode)
            else:
                # the kept text without separators: an original split by a space, written
                # with dashes or dots, is its compact form (other columns blanked out)
                squeezed = select_columns(data, self.width, self._decode_lut, True).tobytes()
                squeezed_text = compact_apart(fold_bytes(squeezed), COMPACT + b"\0")
                self._candidates(squeezed_text, leak, None)
            # the pre-filter reads the decoded columns' bytes only (each field still ends
            # in its tab or newline), or, in a lean table or one whose every column is
            # decoded, the whole block
            read = self._every_lut if self._lean or self._decode_only else self._decode_lut
            pairs = marked_fields(data, self.width, read, self._decode_lut, self._address_lut)
            fields = {(int(p) // (self.width + 1), int(p) % (self.width + 1)) for p in pairs}
        lines: dict[int, list[bytes]] = {}
        if self.ip_type or fields:
            for row in (
                sorted({r for r, _ in fields}) if not self.ip_type else range(len(starts) - 1)
            ):
                line = block[starts[row] : starts[row + 1] - 1]
                lines[row] = line.split(b"\t")
        for row, cells in lines.items():
            for column in self.ip_type:
                if column < len(cells) and cells[column] != b"\\N":
                    content.setdefault((column, "ip"), set()).add(row)
        decoded: list[bytes] = []
        where: list[tuple[int, int]] = []
        for row, column in sorted(fields):
            cells = lines[row]
            if column >= len(cells) or cells[column] == b"\\N":
                continue
            spec = self.columns[column]
            kinds, texts = analyse(unescape(cells[column]), ip=spec.ip, skip=spec.accepted)
            if column in self.content:
                for kind in kinds:
                    content.setdefault((column, kind), set()).add(row)
            for text in texts[1:]:
                decoded.append(fold(escape_text(text)))
                where.append((row, column))
        if decoded:
            joined = b"\n".join(decoded) + b"\n"
            self._candidates(joined, leak, None, where)
            self._candidates(compact_apart(joined), leak, None, where)
            if self.run.names is not None and self.content:
                self._candidates(joined, names, self.run.names, where)

    def _settle(
        self,
        found: ScanHits,
        leak: dict[tuple[int, bytes], set[int]],
        names: dict[tuple[int, bytes], set[int]],
        content: dict[tuple[int, str], set[int]],
    ) -> None:
        generated = self.run.searcher.generated
        pieces = {piece for _, piece in leak if piece not in generated}
        if pieces:
            real = self.run.confirmed(pieces)
            by_column: dict[int, set[int]] = {}
            for (column, piece), rows in leak.items():
                if piece in real:
                    by_column.setdefault(column, set()).update(rows)
            for column, rows in by_column.items():
                place = self.columns[column].place
                found.originals[place] = found.originals.get(place, 0) + len(rows)
        if names:
            real_names = self.run.confirmed({p for _, p in names}, names=True)
            for (column, piece), rows in names.items():
                if piece in real_names:
                    content.setdefault((column, "name"), set()).update(rows)
        for (column, kind), rows in content.items():
            spec = self.columns[column]
            if kind in spec.accepted:
                continue
            kinds = found.content.setdefault(spec.place, {})
            kinds[kind] = kinds.get(kind, 0) + len(rows)


def hits_listing(hits: Iterable[tuple[str, dict[str, int]]]) -> str:
    """``place: kind count, ...; ...`` for an error line (never a value)."""
    return "; ".join(
        f"{place}: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        for place, kinds in sorted(hits)
    )
