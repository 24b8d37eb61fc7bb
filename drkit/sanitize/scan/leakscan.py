"""The leak scan: is any original value of a masked column readable in the target?

During the copy every value a strategy replaced is handed to :class:`LeakIndex`
(whole values, and the e-mails, phones and IPs ``replace_pii`` found inside text).
After loading, :func:`scan_database` reads everything a person could read in the target
and searches it for all of them at once:

* **every column of every type**, through its text form (``COPY ... TO STDOUT``, one
  sequential read per table): arrays, composites and ranges as ``to_jsonb`` (so nested
  values are quoted once, whatever the depth); JSON keys and values alike, with
  ``\\uXXXX`` escapes decoded (in any column, so JSON kept in a text column too); bytea
  (and bytea inside arrays or composites) decoded where it is UTF-8, raw bytes kept
  otherwise; hstore, tsvector, domains, enums, citext, xml and numbers as PostgreSQL
  prints them; materialized views as well as tables;
* **the catalog** (:mod:`drkit.sanitize.scan.catalog`): comments, defaults, constraint,
  index, view and function definitions, triggers, rules, policies, enum labels, foreign
  servers and user mappings, object names, large objects.

Matching is case-insensitive (both sides are case-folded with ``str.casefold``, which
folds character by character, so a folded original is a substring of the folded text
wherever the original was) and by substring: an original glued to other characters
(``report_<email>_2024.csv``) is found.  Each original is also searched in the forms the
target's text output gives it: COPY escapes, JSON escapes (``"`` and ``\\``), doubled
quotes (composites, tsvector), XML entities.

The floor: an original shorter than 4 bytes (UTF-8, after case folding) identifies nobody
and is not searched; one of 4 or 5 bytes is only found as a whole token (not inside a
longer run of letters and digits), so ``Anna`` is not "found" inside ``Annabel``; from 6
bytes on, anywhere — except that an original starting (ending) with a digit does not
count where a digit precedes (follows) it: ``10.0.0.5`` is not in ``10.0.0.55``; and an
original of digits alone (a phone number's digit forms) does not count inside a run of
24 or more hex characters with a letter among them (an md5, a SHA: chance digits, and
the decoders read such a run as hex).  An
original longer than 64 bytes counts as found where its first 64 bytes are.  Originals equal to a value drkit itself generates (an entry of a ``fake``
pool, a constant) cannot be told from that output; they are counted as ``ambiguous`` and
never reported.

Memory stays flat as the source grows: the originals live in a fixed-size filter and an
unlinked file on disk (:mod:`drkit.sanitize.scan.leakfilter`); every candidate the filter lets
through is confirmed exactly against the file, so the filter's false positives never
fail a run.  Hits are reported by table and column (or catalog object) and count — the
number of rows (objects) holding an original — never the value.
"""

from __future__ import annotations

import bisect
import html
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import phonenumbers
import psycopg
from psycopg import sql

from drkit.documents import Shape, described
from drkit.errors import DatabaseError, SafetyRefused
from drkit.jit import njit
from drkit.pg import first_line
from drkit.sanitize.copytext import escape_text
from drkit.sanitize.scan.catalog import catalog_kinds, catalog_texts, large_objects
from drkit.sanitize.scan.content import analyse
from drkit.sanitize.scan.leakfilter import HASH_MIN, HEX, TOKEN_MIN, LeakFilter, Prepared
from drkit.sanitize.strategies.piitext import email_key

log = logging.getLogger(__name__)

MIN_LENGTH = TOKEN_MIN
_BATCH = 1 << 16
# past this many waiting originals an adder waits for the flush under way instead of
# growing the list: with two tables copied at once, appends can outpace flushes
MAX_PENDING = 2 * _BATCH
_READ_BATCH = 1 << 20
#: originals handed to the filter lately, remembered so that one that repeats (a first
#: name, an address quoted in many rows) is not folded and spelled again; forgotten all
#: at once past this many
_RECENT = 1 << 14
_SPECIAL = re.compile(r"[\\\"'&<>\x00-\x1f\x7f]")
_U_ESCAPE = re.compile(rb"\\\\u(d[89ab][0-9a-f]{2})\\\\u(d[c-f][0-9a-f]{2})|\\\\u([0-9a-f]{4})")
_HEX_RUN = re.compile(rb"\\\\x((?:[0-9a-f]{2}){%d,})" % TOKEN_MIN)

# columns read through to_jsonb: nested values come out quoted once
_NESTED_CATEGORIES = {"A", "C", "R"}

_COLUMNS = """
SELECT c.oid, n.nspname, c.relname, a.attname, a.atttypid
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated))
  AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY n.nspname, c.relname, a.attnum
"""

_TYPES = "SELECT oid, typcategory, typtype, typbasetype FROM pg_type"

# tables whose rows row-level security could hide from this role
_HIDDEN_BY_RLS = """
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relrowsecurity AND c.relkind IN ('r', 'p', 'm')
  AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
ORDER BY 1 LIMIT 1
"""


@dataclass
class LeakReport:
    originals: int = 0  # distinct original forms searched (never more than the truth)
    ambiguous: int = 0  # originals equal to a generated value, not reported
    columns_scanned: int = 0
    rows_scanned: int = 0
    bytes_scanned: int = 0
    objects_scanned: int = 0  # catalog objects and large-object chunks
    seconds: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)  # "schema.table.column" -> count
    # personal data by content: "schema.table.column" (or catalog object) -> kind -> rows
    pii: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.hits and not self.pii

    def document(self) -> LeakScan:
        seconds = round(self.seconds, 3)
        return LeakScan(
            clean=self.clean,
            originals=self.originals,
            ambiguous=self.ambiguous,
            columns_scanned=self.columns_scanned,
            rows_scanned=self.rows_scanned,
            bytes_scanned=self.bytes_scanned,
            objects_scanned=self.objects_scanned,
            seconds=seconds,
            duration_seconds=seconds,
            hits=dict(sorted(self.hits.items())),
            pii={k: dict(sorted(v.items())) for k, v in sorted(self.pii.items())},
        )


def fold(value: str) -> bytes:
    """The case-folded UTF-8 form both sides are compared in."""
    return utf8(value.casefold())


def fold_bytes(raw: bytes) -> bytes:
    if raw.isascii():
        return raw.lower()
    return fold(raw.decode("utf-8", "surrogateescape"))


def forms_of(value: str) -> list[bytes]:
    """The folded spellings of ``value`` in the target's text output (COPY text form)."""
    base = value.casefold()
    if _SPECIAL.search(base) is None:
        return [utf8(base)]
    spellings = {
        base,
        json.dumps(base, ensure_ascii=False)[1:-1],  # JSON, array and hstore quoting
        base.replace("'", "''"),  # tsvector lexemes
        base.replace('"', '""'),  # composite fields
        html.escape(base, quote=False),  # xml
    }
    return [utf8(escape_text(s)) for s in spellings]


#: separators an original may be written with or without (``anna rossi``/``anna-rossi``/
#: ``annarossi``, ``+39 347 123``/``+39347123``): both sides are also compared without them
COMPACT = b" -./()"
_PHONE_LIKE = re.compile(r"(?:\+|00)?[\d\s().\-/]{7,}")
# dotted quads, dates and times are numbers with separators but no phone numbers
_NOT_PHONE = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?|\d{4}-\d\d-\d\d.*|\d\d?[./-]\d\d?[./-]\d{2,4}|[\d:. ]+"
)
# Sieves over a batch of values joined by NUL (which no PostgreSQL text holds), each
# finding a superset of the values a rule of :func:`_extra` may apply to: one that may
# be a phone number (it starts like one, and is not digits and dots alone or a dotted
# quad, which :data:`_NOT_PHONE` rules out), one that may spell an e-mail's ``@``
# otherwise; and the values that hold a character the target's text spells otherwise.
_PHONE_START = re.compile(
    r"\x00(?=[+(0-9])(?![0-9:. ]*(?:\x00|\Z))(?!\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?(?:\x00|\Z))"
)
_AT_SIGN = re.compile(r"[%&\[(]")
_SPELLED = re.compile(r"[\\\"'&<>\x01-\x1f\x7f]")
# bytes.translate tables that delete every byte but those a sieve looks for: what is
# left says whether any value holds one (a C loop over the batch, faster than a search)
_ALL = bytes(range(256))
_BUT_AT_SIGNS = bytes(b for b in _ALL if b not in b"%&[(")
_BUT_SPELLED = bytes(b for b in _ALL if not (b in b"\\\"'&<>\x7f" or 0 < b < 0x20))
# ASCII blanks (what ``str.isspace`` says of an ASCII character) made a space, to find
# padded values by two substring searches
_BLANKS = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)
_DROPPED = np.zeros(256, dtype=bool)
_DROPPED[np.frombuffer(COMPACT, dtype=np.uint8)] = True
_NOT_DIGIT = re.compile(r"\D")


def compact_apart(folded: bytes, drop: bytes = COMPACT) -> bytes:
    """A searched text without the separators of :data:`COMPACT` (and the bytes of
    ``drop``), its hash-like tokens kept apart: a ``\\x01`` on each side of a run of
    ``HASH_MIN`` hex characters or more with a letter among them, so squeezing the
    separators out never glues a phone number's digits to an md5 beside it (where a digit
    form counts as chance, see :func:`~drkit.sanitize.scan.leakloops.in_hash`)."""
    dropped = np.zeros(256, dtype=bool)
    dropped[np.frombuffer(drop, dtype=np.uint8)] = True
    return _compact_apart(np.frombuffer(folded, dtype=np.uint8), dropped).tobytes()


@njit
def _compact_apart(
    data: npt.NDArray[np.uint8], dropped: npt.NDArray[np.bool_]
) -> npt.NDArray[np.uint8]:
    """:func:`compact_apart`, one compiled pass (``dropped``: a table of 256 bytes)."""
    n = len(data)
    out = np.empty(n + 2 * (n // HASH_MIN) + 2, dtype=np.uint8)
    size = 0
    i = 0
    while i < n:
        if not HEX[data[i]]:
            if not dropped[data[i]]:
                out[size] = data[i]
                size += 1
            i += 1
            continue
        end = i
        letter = False
        while end < n and HEX[data[end]]:
            letter |= data[end] >= 0x41
            end += 1
        apart = end - i >= HASH_MIN and letter
        if apart:
            out[size] = 1
            size += 1
        for j in range(i, end):
            if not dropped[data[j]]:
                out[size] = data[j]
                size += 1
        if apart:
            out[size] = 1
            size += 1
        i = end
    return out[:size]


def utf8(text: str) -> bytes:
    """``text`` as UTF-8: the bytes a decoding escaped (``surrogateescape``) given back as
    they were; a lone surrogate of another kind (what a ``json`` value's ``\\ud800``
    decodes to) as its own three bytes rather than an error."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def canonical_forms(values: list[str]) -> set[bytes]:
    """Every form an original is searched in: stripped (a ``char(n)`` original's padding
    is no part of it), case-folded and in Unicode NFKC, in the target's text spellings
    (:func:`forms_of`), without the separators of :data:`COMPACT` (not when that leaves only
    digits: an IP address or a date squeezed is any number), and for a phone number its
    digits with and without country code and trunk prefix (:func:`_extra`).

    The batch is worked on as one text, its values joined by NUL, so that the common
    value (a short ASCII text with no special character) costs no Python of its own:
    searches over the joined text find the few values a rule may apply to, and only
    those are looked at one by one."""
    if not values:
        return set()
    text = "\x00".join(values)
    if text.count("\x00") != len(values) - 1:  # NUL in a value: the sieves would cut it
        values = [_stripped(v) for v in values]
        return _spellings("\x00".join(values + [f for v in values for f in _extra(v)]))
    if _padded(text):
        values = [_stripped(v) for v in values]
        text = "\x00".join(values)
    extra: list[str] = []
    if not text.isascii():
        for value in values:
            if not value.isascii():
                extra += _extra(value)
    # the values that may be phone numbers or spelled e-mail addresses (each looked at
    # once, even where both sieves find it: _extra applies every rule)
    found = {m.start() for m in _PHONE_START.finditer("\x00" + text)}
    if utf8(text).translate(None, _BUT_AT_SIGNS):
        found.update(text.rfind("\x00", 0, m.start()) + 1 for m in _AT_SIGN.finditer(text))
    for start in sorted(found):
        end = text.find("\x00", start)
        value = text[start:] if end < 0 else text[start:end]
        if value.isascii():  # (one that is not had its turn above)
            extra += _extra(value)
    if extra:
        text += "\x00" + "\x00".join(extra)
    return _spellings(text)


def _stripped(value: str) -> str:
    return value.strip() if value[:1].isspace() or value[-1:].isspace() else value


def _padded(text: str) -> bool:
    """Whether a value of the NUL-joined ``text`` starts or ends with a blank."""
    if text[:1].isspace() or text[-1:].isspace():
        return True
    if not text.isascii():
        return re.search(r"\x00\s|\s\x00", text) is not None
    data = text.encode("ascii").translate(_BLANKS)
    return b"\x00 " in data or b" \x00" in data


def _extra(value: str) -> list[str]:
    """The values a stripped ``value`` is also searched as: its NFKC form where that
    differs, the address an ASCII value spells with ``%40``, ``&#64;``, `` [at] `` and
    the like, and a phone number's digit forms (:func:`phone_forms`)."""
    extra: list[str] = []
    if not value.isascii():
        normal = unicodedata.normalize("NFKC", value)
        if normal != value:
            extra.append(normal)
    elif ("%" in value or "&" in value or "[" in value or "(" in value) and "@" not in value:
        key = email_key(value)
        if "@" in key:
            extra.append(key)
    if (
        value[:1] in "+(0123456789"
        and _PHONE_LIKE.fullmatch(value)
        and not _NOT_PHONE.fullmatch(value)
    ):
        extra += phone_forms(value)
    return extra


def _spellings(text: str) -> set[bytes]:
    """The forms of the NUL-joined values of ``text`` (:func:`forms_of` of each) and
    their squeezed forms (without the separators of :data:`COMPACT`) that are not numbers."""
    folded = text.casefold()
    data = utf8(folded)
    spelled: list[bytes] = []
    if data.translate(None, _BUT_SPELLED):  # the few values spelled otherwise, alone
        values = folded.split("\x00")
        marked: list[int] = []
        index = position = 0
        for match in _SPELLED.finditer(folded):
            index += folded.count("\x00", position, match.start())
            position = match.start()
            if not marked or marked[-1] != index:
                marked.append(index)
        plain: list[str] = []
        after = 0
        for index in marked:
            spelled += forms_of(values[index])
            plain += values[after:index]
            after = index + 1
        plain += values[after:]
        pieces = [b"\x00".join(spelled)]
        if plain:
            pieces.append(utf8("\x00".join(plain)))
        data = b"\x00".join(pieces)
    forms = set(data.split(b"\x00"))
    squeezed = _squeezed(np.frombuffer(data, dtype=np.uint8), _DROPPED).tobytes()
    if squeezed:
        forms.update(squeezed[:-1].split(b"\x00"))
    return forms


@njit
def _squeezed(data: npt.NDArray[np.uint8], dropped: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """The NUL-separated forms of ``data`` squeezed (the bytes of ``dropped`` left out:
    :data:`COMPACT`'s separators; tabs and newlines stay), each followed by a NUL: only those squeezing changed and that
    are not a number (``+`` signs, then ASCII digits) once squeezed."""
    out = np.empty(len(data) + 1, dtype=np.uint8)
    size = 0
    start = 0
    n = len(data)
    while start <= n:
        end = start
        while end < n and data[end] != 0:
            end += 1
        mark = size
        changed = False
        for i in range(start, end):
            if dropped[data[i]]:
                changed = True
            else:
                out[size] = data[i]
                size += 1
        number = False
        if changed:
            first = mark
            while first < size and out[first] == 0x2B:  # +
                first += 1
            number = first < size
            for i in range(first, size):
                if out[i] < 0x30 or out[i] > 0x39:
                    number = False
                    break
        if changed and not number:
            out[size] = 0
            size += 1
        else:
            size = mark
        start = end + 1
    return out[:size]


def phone_forms(value: str) -> list[str]:
    """A phone number's digits as it may be written elsewhere: with ``+`` or ``00`` and the
    country code, without it, and nationally with a trunk ``0``."""
    digits = _NOT_DIGIT.sub("", value)  # (a phone-like value's digits are all \\d)
    if len(digits) < 7 or len(digits) > 17:
        return []
    found = [digits]
    text = value.strip()
    if text.startswith(("+", "00")):
        if text.startswith("00"):
            digits = digits[2:]
        found += ["+" + digits, "00" + digits]
        for length in (1, 2, 3):  # the country code (libphonenumber's table of them)
            if int(digits[:length]) in _COUNTRY_CODES:
                national = digits[length:]
                if len(national) >= 6:
                    found += [national, "0" + national]
                break
    return found


_COUNTRY_CODES = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


class LeakIndex:
    """The originals of one run, collected while copying (thread-safe, bounded memory)."""

    def __init__(self, store: Callable[[set[bytes]], None] | None = None) -> None:
        """``store``: where the originals' forms go (a worker's, to be sent to the run);
        by default into this index's own filter."""
        self._filter: LeakFilter | None = None
        if store is None:
            self._filter = LeakFilter()
            store = self._into_filter
        self._store = store
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._recent: set[str] = set()  # already stored (see _RECENT)

    def add(self, value: str) -> None:
        pending = self._pending
        pending.append(value)
        if len(pending) >= _BATCH:
            self._flush(wait=len(pending) >= MAX_PENDING)

    def add_many(self, values: Iterable[str]) -> None:
        pending = self._pending
        pending.extend(values)
        if len(pending) >= _BATCH:
            self._flush(wait=len(pending) >= MAX_PENDING)

    def _into_filter(self, forms: set[bytes]) -> None:
        assert self._filter is not None
        self._filter.add(forms)

    def store(self, prepared: Prepared) -> None:
        """Forms of originals (:func:`canonical_forms`) made ready elsewhere (a worker
        process's), into the filter."""
        assert self._filter is not None, "an index that stores elsewhere has no filter"
        self._filter.store(prepared)

    def flush(self) -> None:
        """Every original added so far stored now."""
        self._flush(wait=True)

    def __len__(self) -> int:
        assert self._filter is not None
        return self._filter.distinct + len(self._pending)

    def _flush(self, wait: bool) -> None:
        """Hand the waiting originals to the filter.  ``wait`` False: if another thread is
        flushing, return and leave them for the next call (below ``MAX_PENDING``)."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            pending = self._pending
            count = len(pending)
            batch = pending[:count]
            del pending[:count]  # appends made meanwhile stay, at the end
            recent = self._recent
            unique = set(batch)
            if recent:
                unique -= recent
            fresh = list(unique)
            self._store(canonical_forms(fresh))
            if len(recent) + len(fresh) > _RECENT:
                recent.clear()
            if len(fresh) <= _RECENT:  # (a batch of new values alone would only be forgotten)
                recent.update(fresh)  # only once they are in the filter
        finally:
            self._lock.release()

    def searcher(self, generated: set[str]) -> Searcher:
        """Freeze the originals into a searcher; ``generated`` lists drkit's own outputs."""
        self._flush(wait=True)
        assert self._filter is not None, "an index that stores elsewhere has no filter"
        values = [g for g in generated if g]
        return Searcher(self._filter, set(canonical_forms(values)))


class Searcher:
    def __init__(self, leak_filter: LeakFilter, generated: set[bytes]) -> None:
        self.filter = leak_filter
        self.generated = generated
        self.ambiguous = 0

    @property
    def originals(self) -> int:
        return self.filter.distinct


class _Findings:
    """Candidate pieces by place, confirmed all at once at the end."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher
        self.rows: dict[tuple[str, bytes], set[int]] = {}

    def record(self, place: str, piece: bytes, row: int) -> None:
        if piece in self.searcher.generated:
            return  # drkit's own output (a pseudonym that equals an original): never a hit
        self.rows.setdefault((place, piece), set()).add(row)

    def search(self, block: bytes, places: list[str], first_row: int, columns: int) -> None:
        """``block``: folded COPY lines, each ending in ``\\n``; ``places`` names columns."""
        texts = [block]
        if b"\\\\u" in block:
            texts.append(_U_ESCAPE.sub(_decode_u, block))
        for text in texts:
            self._search(text, places, first_row, columns)
        if b"\\\\x" in block:
            self._search_bytes(block, places, first_row, columns)

    def _search(self, text: bytes, places: list[str], first_row: int, columns: int) -> None:
        found = self.searcher.filter.candidates(text)
        if not found:
            return
        lines = _line_starts(text)
        for pos, piece in found:
            row = bisect.bisect_right(lines, pos) - 1
            column = text.count(b"\t", lines[row], pos) if columns > 1 else 0
            place = places[min(column, len(places) - 1)]
            self.record(place, piece, first_row + row)

    def _search_bytes(self, block: bytes, places: list[str], first_row: int, columns: int) -> None:
        """bytea (hex) anywhere in the block, decoded: UTF-8 where valid, raw bytes else."""
        lines: list[bytes] = []
        where: list[tuple[int, int]] = []
        block_lines = _line_starts(block)
        for match in _HEX_RUN.finditer(block):
            start = match.start()
            row = bisect.bisect_right(block_lines, start) - 1
            column = block.count(b"\t", block_lines[row], start) if columns > 1 else 0
            decoded = bytes.fromhex(match.group(1).decode()).decode("utf-8", "surrogateescape")
            lines.append(fold(escape_text(decoded)))
            where.append((row, column))
        if not lines:
            return
        text = b"\n".join(lines) + b"\n"
        starts = _line_starts(text)
        for pos, piece in self.searcher.filter.candidates(text):
            row, column = where[bisect.bisect_right(starts, pos) - 1]
            place = places[min(column, len(places) - 1)]
            self.record(place, piece, first_row + row)

    def confirm(self) -> dict[str, int]:
        pieces = {piece for _, piece in self.rows}
        confirmed, self.searcher.ambiguous = self.searcher.filter.confirm(
            pieces, self.searcher.generated
        )
        hits: dict[str, int] = {}
        for (place, piece), rows in self.rows.items():
            if piece in confirmed:
                hits[place] = hits.get(place, 0) + len(rows)
        return _withhold_names(hits, confirmed)


def _line_starts(text: bytes) -> list[int]:
    """Where each line of ``text`` starts."""
    ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 0x0A) + 1
    return [0, *ends.tolist()]


def _decode_u(match: re.Match[bytes]) -> bytes:
    if match.group(3) is not None:
        char = chr(int(match.group(3), 16))
        if 0xD800 <= ord(char) < 0xE000:
            char = "\ufffd"
    else:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        char = chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return fold(escape_text(char))


def _withhold_names(hits: dict[str, int], confirmed: set[bytes]) -> dict[str, int]:
    """A place whose own name spells an original is reported without its name."""
    out: dict[str, int] = {}
    for number, (place, count) in enumerate(sorted(hits.items())):
        folded = fold(place)
        if any(piece in folded for piece in confirmed):
            kind = place.split(" ", 1)[0] if " " in place else "column"
            place = f"{kind} #{number + 1} (name withheld: it spells an original value)"
        out[place] = out.get(place, 0) + count
    return out


def _column_expression(name: str, category: str) -> sql.Composable:
    ident = sql.Identifier(name)
    if category in _NESTED_CATEGORIES:
        return sql.SQL("to_jsonb({})::text").format(ident)
    return sql.SQL("{}::text").format(ident)


def _tables(
    conn: psycopg.Connection[Any], *, tables: bool = True
) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
    """(schema, table, [(column, base type category)]) of every table and populated
    materialized view, extension members included (a person can read them too)."""
    types: dict[int, tuple[str, str, int]] = {
        int(oid): (str(cat), str(kind), int(base))
        for oid, cat, kind, base in conn.execute(_TYPES).fetchall()
    }

    def category(oid: int) -> str:
        seen = 0
        while oid in types and types[oid][1] == "d" and seen < 32:  # domain: its base type
            oid = types[oid][2]
            seen += 1
        return types.get(oid, ("X", "", 0))[0]

    current: tuple[int, str, str] | None = None
    columns: list[tuple[str, str]] = []
    query = _COLUMNS if tables else _COLUMNS.replace("c.relkind = 'r' OR ", "")
    for relid, schema, table, column, typid in conn.execute(query.encode()).fetchall():
        if current is not None and current[0] != relid:
            yield current[1], current[2], columns
            columns = []
        current = (int(relid), str(schema), str(table))
        columns.append((str(column), category(int(typid))))
    if current is not None:
        yield current[1], current[2], columns


def scan_database(
    conn: psycopg.Connection[Any],
    searcher: Searcher,
    *,
    tables: bool = True,
    matviews: bool = True,
) -> LeakReport:
    """Search every column of every table, and the catalog, of the connected database.

    ``tables`` False: the catalog and the materialized views only (a run that searched
    the tables' rows in flight: the views' rows are computed in the build); ``matviews``
    False too: the catalog alone (of a source, whose views' rows are never copied)."""
    started = time.monotonic()
    report = LeakReport(originals=searcher.originals)
    findings = _Findings(searcher)
    try:
        hidden = conn.execute(_HIDDEN_BY_RLS.encode()).fetchone()
        user = conn.info.user
        relations = list(_tables(conn, tables=tables)) if tables or matviews else []
    except psycopg.Error as exc:
        raise DatabaseError(f"leak scan: reading the columns: {first_line(exc)}") from None
    if hidden:
        raise SafetyRefused(
            f"leak scan: table {hidden[0]} has row-level security and role {user} can "
            "not bypass it, so the scan would not see every row; scan as a superuser or "
            "a role with BYPASSRLS"
        )
    row = 0
    for schema, table, columns in relations:
        report.columns_scanned += len(columns)
        places = [f"{schema}.{table}.{name}" for name, _ in columns]
        query = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT").format(
            sql.SQL(", ").join(_column_expression(n, c) for n, c in columns),
            sql.Identifier(schema, table),
        )
        try:
            row = _scan_copy(conn, query, places, row, findings, report)
        except psycopg.Error as exc:
            raise DatabaseError(
                f"leak scan of {schema}.{table}: {first_line(exc)}; "
                "the target must be readable by the scan's role"
            ) from None
    row = _scan_catalog(conn, findings, report, row)
    report.hits = findings.confirm()
    report.ambiguous = searcher.ambiguous
    report.seconds = time.monotonic() - started
    return report


def _scan_copy(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    places: list[str],
    row: int,
    findings: _Findings,
    report: LeakReport,
) -> int:
    with conn.cursor() as cur, cur.copy(query) as copy:
        pending: list[bytes] = []
        size = 0
        carry = b""
        for chunk in copy:
            pending.append(bytes(chunk))
            size += len(chunk)
            if size >= _READ_BATCH:
                carry, row = _block(carry, pending, places, row, findings, report)
                pending, size = [], 0
        carry, row = _block(carry, pending, places, row, findings, report)
        if carry:
            _, row = _block(b"", [carry, b"\n"], places, row, findings, report)
    return row


def _block(
    carry: bytes,
    pending: list[bytes],
    places: list[str],
    row: int,
    findings: _Findings,
    report: LeakReport,
) -> tuple[bytes, int]:
    data = carry + b"".join(pending)
    cut = data.rfind(b"\n") + 1
    if cut == 0:
        return data, row
    block = data[:cut]
    lines = block.count(b"\n")
    report.bytes_scanned += len(block)
    report.rows_scanned += lines
    findings.search(fold_bytes(block), places, row, len(places))
    return data[cut:], row + lines


def _scan_catalog(
    conn: psycopg.Connection[Any], findings: _Findings, report: LeakReport, row: int
) -> int:
    lines: list[bytes] = []
    places: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal lines, places, size, row
        if not lines:
            return
        block = b"\n".join(lines) + b"\n"
        _search_lines(findings, block, places, row)
        row += len(lines)
        lines, places, size = [], [], 0

    def add(place: str, text: str) -> None:
        nonlocal size
        wanted = catalog_kinds(place)
        if wanted:
            kinds = analyse(text, ip=False)[0] & wanted
            for kind in kinds:
                mine = report.pii.setdefault(place, {})
                mine[kind] = mine.get(kind, 0) + 1
        lines.append(fold(escape_text(text)))
        places.append(place)
        size += len(lines[-1])
        report.objects_scanned += 1
        if size >= _READ_BATCH:
            flush()

    for place, text in catalog_texts(conn):
        add(place, text)
    for place, data in large_objects(conn):
        add(place, data.decode("utf-8", "surrogateescape"))
    flush()
    return row


def _search_lines(findings: _Findings, block: bytes, places: list[str], first_row: int) -> None:
    """Search one-column lines, each line its own place."""
    texts = [block]
    if b"\\\\u" in block:
        texts.append(_U_ESCAPE.sub(_decode_u, block))
    for text in texts:
        found = findings.searcher.filter.candidates(text)
        starts = _line_starts(text) if found else []
        for pos, piece in found:
            line = bisect.bisect_right(starts, pos) - 1
            findings.record(places[line], piece, first_row + line)


# -- the --json documents --------------------------------------------------------


class LeakScan(Shape):
    clean: bool = described("no original value was found in the copy")
    originals: int
    ambiguous: int
    columns_scanned: int
    rows_scanned: int
    bytes_scanned: int
    objects_scanned: int = described(
        "catalog objects (comments, names, definitions) and large-object chunks scanned",
        default=0,
    )
    duration_seconds: float = described("seconds the scan took")
    seconds: float = described(
        "the same as duration_seconds (kept for version 1; prefer duration_seconds)"
    )
    hits: dict[str, int] = described("schema.table.column -> original values found")
    pii: dict[str, dict[str, int]] = described(
        "personal data by content in what reaches DST unmasked: schema.table.column (or "
        "catalog object) -> kind (email, phone, iban, card, ip, name, secret, oversized, "
        "connection) -> rows or objects",
        default_factory=dict,
    )
