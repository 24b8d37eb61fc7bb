"""A string map whose memory stays flat: a dict up to a bound, then a temporary SQLite file.

The run's e-mail map (:mod:`drkit.sanitize.emailmap`) holds one entry per address a
template column renders; a large users table must not grow the run's memory with it.
Up to ``memory_entries`` entries live in a dict (the common case, no I/O); past that,
every entry moves to a private, temporary SQLite database (deleted when closed), whose
page cache is bounded, with a small LRU in front for lookups.

``put_min`` keeps the smallest value per key, so the map never depends on the order in
which entries arrive.  :meth:`PseudonymMap.may_hold_value` answers, without a lookup,
whether a string may be a value of the map (a bitmap of every value ever put, 1 MiB
whatever the map's size: "no" is certain, "yes" may be wrong).  Thread-safe.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict

MEMORY_ENTRIES = 50_000
LRU_ENTRIES = 4096
BATCH = 8192
CACHE_KIB = 4096
VALUE_BITS = 1 << 23


class PseudonymMap:
    def __init__(self, memory_entries: int = MEMORY_ENTRIES) -> None:
        self._limit = memory_entries
        self._memory: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        self._lru: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._count = 0
        self._pending: list[tuple[str, str]] = []
        self._values = bytearray(VALUE_BITS >> 3)

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return self._count
            self._flush()
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
            self._pending.append((key, value))
            self._lru.pop(key, None)
            if len(self._pending) >= BATCH:
                self._flush()

    def get(self, key: str) -> str | None:
        with self._lock:
            db = self._db
            if db is None:
                return self._memory.get(key)
            if key in self._lru:
                self._lru.move_to_end(key)
                return self._lru[key]
            if self._pending:
                self._flush()
            row = db.execute("SELECT v FROM m WHERE k = ?", (key,)).fetchone()
            found = None if row is None else str(row[0])
            self._lru[key] = found
            if len(self._lru) > LRU_ENTRIES:
                self._lru.popitem(last=False)
            return found

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._memory.clear()
            self._lru.clear()
            self._pending = []
            self._count = 0
            self._values = bytearray(VALUE_BITS >> 3)

    # -- internals ----------------------------------------------------------------------

    def _spill(self) -> None:
        db = sqlite3.connect("", check_same_thread=False)  # private, on disk, deleted on close
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("CREATE TABLE m (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
        db.executemany("INSERT INTO m (k, v) VALUES (?, ?)", self._memory.items())
        self._memory = {}
        self._db = db

    def _flush(self) -> None:
        assert self._db is not None
        self._db.executemany(
            "INSERT INTO m (k, v) VALUES (?, ?) "
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v WHERE excluded.v < m.v",
            self._pending,
        )
        self._pending = []
