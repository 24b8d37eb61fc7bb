"""A string map whose memory stays flat: a dict up to a bound, then a temporary SQLite file.

The run's e-mail map (:mod:`drkit.sanitize.emailmap`) holds one entry per address a
template column renders; a large users table must not grow the run's memory with it.
Up to ``memory_entries`` entries live in a dict (the common case, no I/O); past that,
every entry moves to a private, temporary SQLite database (deleted when closed), whose
page cache is bounded.

``put_min`` keeps the smallest value per key, so the map never depends on the order in
which entries arrive.  The map is filled in one long run of puts (the originals pass)
and then read, so a spilled map is built in two steps rather than kept sorted on every
put: puts are appended, unsorted and unindexed, to a staging table; the first read after
them merges the staging table into the keyed table in one statement, sorted by key,
the smallest value per key winning over the keyed table's own (``_MERGE``).  Puts after
a read are staged and merged the same way, so there is one way in and the order of puts
and reads never shows in what a read returns.

Two fixed-size bitmaps (their size does not grow with the map) answer without a lookup:
:meth:`PseudonymMap.may_hold_value` whether a string may be a value of the map (1 MiB),
and, once the map spilled, before any query, whether a key may be held at all (4 MiB: an
address no template rendered, the common case in free text, costs no query).  "No" is
certain, "yes" may be wrong.  Thread-safe.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import numpy.typing as npt

MEMORY_ENTRIES = 50_000
BATCH = 8192
CACHE_KIB = 4096
VALUE_BITS = 1 << 23
#: each key sets two bits (from the low and high halves of its hash): about 0.4 % of
#: absent keys pass for present at a million keys, which then costs one query
KEY_BITS = 1 << 25

_STAGE = "INSERT INTO staged (k, v) VALUES (?, ?)"
# "WHERE true": SQLite's grammar needs it before an upsert clause that follows a SELECT
_MERGE = (
    "INSERT INTO m (k, v) SELECT k, min(v) FROM staged WHERE true GROUP BY k ORDER BY k "
    "ON CONFLICT (k) DO UPDATE SET v = excluded.v WHERE excluded.v < m.v"
)
_GET = "SELECT v FROM m WHERE k = ?"


class PseudonymMap:
    def __init__(self, memory_entries: int = MEMORY_ENTRIES, batch: int = BATCH) -> None:
        self._limit = memory_entries
        self._batch = batch
        self._memory: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None  # the lookups' own, kept: no cursor per query
        self._lock = threading.Lock()
        self._count = 0
        self._pending: list[tuple[str, str]] = []
        self._staged = False  # rows in the staging table that the keyed table lacks
        self._values = bytearray(VALUE_BITS >> 3)
        self._keys = bytearray()  # KEY_BITS once spilled (the dict knows its own keys)

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return self._count
            self._merge()
            row = self._db.execute("SELECT count(*) FROM m").fetchone()
            return int(row[0]) if row else 0

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def may_hold_value(self, value: str) -> bool:
        """False: ``value`` is the value of no key (certain).  True: it may be."""
        bit = hash(value) & (VALUE_BITS - 1)
        return bool(self._values[bit >> 3] & (1 << (bit & 7)))

    def put_min(self, key: str, value: str) -> None:
        with self._lock:
            self._put(key, value)

    def put_many(self, pairs: list[tuple[str, str]]) -> None:
        """:meth:`put_min` of each (key, value), under one lock.  Once the map spilled,
        the batch's bits are set at once and its pairs staged as they are (no Python
        per pair but ``hash``)."""
        with self._lock:
            done = 0
            while self._db is None and done < len(pairs):  # the dict, until it spills
                self._put(*pairs[done])
                done += 1
            if done == len(pairs):
                return
            rest = pairs[done:] if done else pairs
            _set_bits(self._values, [hash(value) for _, value in rest])
            keys = np.fromiter((hash(key) for key, _ in rest), dtype=np.int64, count=len(rest))
            _set_bits(self._keys, keys)
            _set_bits(self._keys, keys >> 32)
            self._pending.extend(rest)
            if len(self._pending) >= self._batch:
                self._stage()

    def _put(self, key: str, value: str) -> None:
        """One put, the lock held."""
        bit = hash(value) & (VALUE_BITS - 1)
        self._values[bit >> 3] |= 1 << (bit & 7)
        if self._db is None:
            known = self._memory.get(key)
            if known is not None:
                if value < known:
                    self._memory[key] = value
                return
            if len(self._memory) < self._limit:
                self._memory[key] = value
                self._count += 1
                return
            self._spill()
        self._mark(key)
        pending = self._pending
        pending.append((key, value))
        if len(pending) >= self._batch:
            self._stage()

    def settle(self) -> None:
        """Bring every put into the keyed table now: reads after this (with no put
        between) never write, so processes forked after it may read the map."""
        with self._lock:
            if self._db is not None and (self._pending or self._staged):
                self._merge()

    def get(self, key: str) -> str | None:
        return self.first_or_smallest(key)

    def first_or_smallest(self, first: str, others: tuple[str, ...] = ()) -> str | None:
        """The value of ``first`` if the map holds it, else the smallest value of the
        ``others`` it holds, else None."""
        with self._lock:
            cursor = self._cursor
            if cursor is None:
                memory = self._memory
                found = memory.get(first)
                if found is None:
                    for key in others:
                        value = memory.get(key)
                        if value is not None and (found is None or value < found):
                            found = value
                return found
            if self._pending or self._staged:
                self._merge()
            found = self._held(cursor, first)
            if found is None:
                for key in others:
                    value = self._held(cursor, key)
                    if value is not None and (found is None or value < found):
                        found = value
            return found

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._cursor = None
            self._memory.clear()
            self._pending = []
            self._staged = False
            self._count = 0
            self._values = bytearray(VALUE_BITS >> 3)
            self._keys = bytearray()

    # -- internals ----------------------------------------------------------------------

    def _spill(self) -> None:
        db = sqlite3.connect("", check_same_thread=False)  # private, on disk, deleted on close
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE m (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
        db.execute("CREATE TABLE staged (k TEXT NOT NULL, v TEXT NOT NULL)")
        self._db = db
        self._cursor = db.cursor()
        self._keys = bytearray(KEY_BITS >> 3)
        for key in self._memory:
            self._mark(key)
        self._pending = list(self._memory.items())
        self._memory = {}
        self._stage()

    def _stage(self) -> None:
        """Append the pending puts to the staging table: no index, no lookup per row."""
        assert self._db is not None
        self._db.executemany(_STAGE, self._pending)
        self._pending = []
        self._staged = True

    def _mark(self, key: str) -> None:
        """Set ``key``'s two bits in the key bitmap (read by :meth:`_held`)."""
        h = hash(key)
        low = h & (KEY_BITS - 1)
        high = (h >> 32) & (KEY_BITS - 1)
        keys = self._keys
        keys[low >> 3] |= 1 << (low & 7)
        keys[high >> 3] |= 1 << (high & 7)

    def _held(self, cursor: sqlite3.Cursor, key: str) -> str | None:
        """The value of ``key`` in the keyed table; no query for a key never put
        (:meth:`_mark`)."""
        keys = self._keys
        h = hash(key)
        low = h & (KEY_BITS - 1)
        high = (h >> 32) & (KEY_BITS - 1)
        if keys[low >> 3] & (1 << (low & 7)) and keys[high >> 3] & (1 << (high & 7)):
            row = cursor.execute(_GET, (key,)).fetchone()
            if row is not None:
                return str(row[0])
        return None

    def _merge(self) -> None:
        """Bring every put into the keyed table (see the module docstring)."""
        assert self._db is not None
        if self._pending:
            self._stage()
        if self._staged:
            self._db.execute(_MERGE)
            self._db.execute("DELETE FROM staged")
            self._staged = False


def _set_bits(bitmap: bytearray, hashes: list[int] | npt.NDArray[np.int64]) -> None:
    """Set the bit of each hash (its low bits) in ``bitmap``, as :meth:`PseudonymMap._mark`
    and :meth:`PseudonymMap._put` set one."""
    bits = np.asarray(hashes, dtype=np.int64) & (len(bitmap) * 8 - 1)
    masks = np.left_shift(1, bits & 7).astype(np.uint8)
    np.bitwise_or.at(np.frombuffer(bitmap, dtype=np.uint8), bits >> 3, masks)


class PutLog:
    """A :class:`PseudonymMap`'s puts, gathered to be made in the map later (a worker's,
    made by the run: :meth:`drain`); reads go to the map as it stands when ``readable``,
    and are refused otherwise (the map is still being filled: what it held now would
    depend on the order tables are read in)."""

    def __init__(self, held: PseudonymMap, *, readable: bool) -> None:
        self._held = held
        self._readable = readable
        self._puts: list[tuple[str, str]] = []

    def put_min(self, key: str, value: str) -> None:
        self._puts.append((key, value))

    def drain(self) -> list[tuple[str, str]]:
        puts, self._puts = self._puts, []
        return puts

    def settle(self) -> None:
        """Nothing to settle: the puts are the run's to make."""

    def close(self) -> None:
        self._puts = []

    def _map(self) -> PseudonymMap:
        if not self._readable:
            raise RuntimeError("the e-mail map is read while it is being filled")
        return self._held

    def may_hold_value(self, value: str) -> bool:
        return self._map().may_hold_value(value)

    def get(self, key: str) -> str | None:
        return self._map().get(key)

    def first_or_smallest(self, first: str, others: tuple[str, ...] = ()) -> str | None:
        return self._map().first_or_smallest(first, others)
