"""Bounded-memory substring search for the leak scan: which originals occur in a text?

Every original arrives as a *form*: case-folded UTF-8 bytes (see :mod:`drkit.sanitize.scan.leakscan`).  The
structure has a fixed size whatever the number of originals, and never misses one:

* ``prefix`` — a blocked Bloom filter (16 MiB) over the first ``SUBSTRING_MIN`` bytes of
  every form of ``SUBSTRING_MIN`` bytes or more, and over whole forms of ``TOKEN_MIN`` to
  ``SUBSTRING_MIN - 1`` bytes (tagged by length), with a 2 MiB front of one bit per key
  that is asked first (every byte of a searched text asks it: it stays in the CPU's cache,
  and only its positives cost a miss in the 16 MiB);
* ``whole`` — a blocked Bloom filter (32 MiB) over a 64-bit polynomial hash of each whole
  form (forms longer than ``LONG`` bytes: of their first ``LONG`` bytes), tagged by length;
* ``held`` — by the top bits of a prefix key (8 MiB), every length of the forms whose
  first ``SUBSTRING_MIN`` bytes give that key (a bit per length);
* the forms themselves go to an unlinked temporary file on disk, with their hashes.

Searching a block of text is one compiled pass over its bytes (:mod:`.leakloops`, native
code without the GIL, so the threads of a run search their blocks at once): the
``SUBSTRING_MIN``-byte window at every position is looked up in ``prefix``; at the few
positions that pass, the hash of the piece of each length ``held`` records for the
window is looked up in ``whole``; the pieces that pass are *candidates*.  Adding forms
hashes them and sets their bits in compiled loops too, so both sides compute the very
same keys.  Short forms (``TOKEN_MIN`` to ``SUBSTRING_MIN - 1`` bytes) only
count where they stand as a whole token (not inside a longer run of letters or digits),
so a four-letter original is not "found" inside every longer word.  At any length, an
original that starts (ends) with a digit does not count where a digit precedes
(follows) it: a number glued to more digits is another number (``10.0.0.5`` is not in
``10.0.0.55``, nor ``555 0100`` in ``555 01002``).  And a form of digits alone (a phone
number's digit forms, an id) does not count inside a *hash-like token*: a run of at least
``HASH_MIN`` hex characters mixing letters and digits (an md5, a SHA, a hex id) holds
chance digit runs, and the decoders already read such a run as hex.

A Bloom filter has false positives but no false negatives, so every occurrence of a
form is a candidate; :meth:`LeakFilter.confirm` then streams the file once and keeps only
the candidates that equal a stored form exactly, so false positives never count.  Memory
is the two filters plus the candidates of one scan; disk grows with the originals.
"""

from __future__ import annotations

import collections
import concurrent.futures
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TypeVar

import numpy as np
import numpy.typing as npt

from drkit.sanitize.scan.leakloops import (
    gathered,
    insert,
    insert_lengths,
    kept,
    members,
    prefix_keys,
    search,
    separated,
    tags,
)
from drkit.sanitize.scan.leakshape import HASH_MIN as HASH_MIN
from drkit.sanitize.scan.leakshape import HEX as HEX
from drkit.sanitize.scan.leakshape import LONG as LONG
from drkit.sanitize.scan.leakshape import SUBSTRING_MIN as SUBSTRING_MIN
from drkit.sanitize.scan.leakshape import TOKEN_MIN as TOKEN_MIN

_PREFIX_WORDS_LOG2 = 21  # 2**21 words of 64 bits = 16 MiB
_WHOLE_WORDS_LOG2 = 22  # 32 MiB
_HELD_LOG2 = 20  # the lengths of the forms under each prefix key's slot: 8 MiB
_PREFIX_BITS = 2
_FRONT_BITS_LOG2 = 24  # 2 MiB in front of the prefix filter: every byte of text asks it
_WHOLE_BITS = 3
_PAD = LONG + 8
_FOUND = 1 << 14  # candidates one compiled call returns at most
BUCKET_TAGS = 1 << 17  # tags sorted at once when the index is built (1 MiB)
_BUCKETS_LOG2_MAX = 8  # at most 256 buckets: past 32 M tags they grow, slowly

_U64 = np.uint64

U64Array = npt.NDArray[np.uint64]
IntArray = npt.NDArray[np.int64]
_N = TypeVar("_N", bound=np.generic)


class _Bloom:
    """A blocked Bloom filter: each key sets ``nbits`` bits of one 64-bit word.

    ``front_log2``: a first, small filter of one bit per key (``2**front_log2`` bits,
    a few MiB at most, so it stays in the CPU's cache) that is asked first; only the
    keys it lets pass are looked up in the large filter, whose every lookup is a miss
    of the cache.  Both hold every key, so the pair still never misses one."""

    def __init__(self, log2: int, nbits: int, front_log2: int = 0) -> None:
        self.log2 = log2
        self.nbits = nbits
        self.words = np.zeros(1 << log2, dtype=np.uint64)  # calloc: pages appear as used
        size = 1 << max(front_log2 - 6, 0) if front_log2 else 0
        self.front = np.zeros(size, dtype=np.uint64)  # empty: no front

    def add(self, keys: U64Array) -> int:
        """Insert; return how many keys were not all present before (a distinct count)."""
        return insert(keys, self.words, self.log2, self.nbits, self.front)


class LeakFilter:
    """Fixed-size filters in memory, exact forms on disk (thread-safe ``add``)."""

    def __init__(self) -> None:
        self._prefix = _Bloom(_PREFIX_WORDS_LOG2, _PREFIX_BITS, _FRONT_BITS_LOG2)
        self._whole = _Bloom(_WHOLE_WORDS_LOG2, _WHOLE_BITS)
        # by the top bits of a prefix key: every length of the forms starting so (a
        # position the prefix lets pass asks the whole filter at those lengths only)
        self._held = np.zeros(1 << _HELD_LOG2, dtype=np.uint64)
        self._lengths: set[int] = set()  # lengths of whole forms (capped at LONG)
        self._tokens: set[int] = set()  # lengths of short forms present
        # unlinked files that live as long as the filter (closed by close() or collection)
        self._data: IO[bytes] = tempfile.TemporaryFile(prefix="drkit-leak-")  # noqa: SIM115
        self._keys: IO[bytes] = tempfile.TemporaryFile(prefix="drkit-leak-")  # noqa: SIM115
        self._lock = threading.Lock()
        self.distinct = 0  # distinct forms added (Bloom estimate, never above the truth)
        # once frozen: every stored form's tag, sorted, memory-mapped from a file
        self._index: npt.NDArray[np.uint64] | None = None
        self._index_file: IO[bytes] | None = None
        self._stored = 0  # tags written to the keys file (repeats included)

    def close(self) -> None:
        self._data.close()
        self._keys.close()
        if self._index_file is not None:
            self._index_file.close()

    def freeze(self) -> None:
        """No form is added any more: sort the stored forms' tags into an index on disk,
        memory-mapped, so that :meth:`maybe_stored` rules out a candidate without a pass
        over the file (the scan in flight confirms block by block).

        Memory stays flat however many forms there are: the tags are first dealt into
        buckets on disk by their top bits (about ``BUCKET_TAGS`` each), then each bucket
        alone is sorted and appended, so the buckets in turn make one sorted index.  The
        sorts run on two threads (numpy's sort releases the GIL), each a batch or a
        bucket ahead of the one written: the freeze is a serial step of the run, between
        the originals pass and the write pass, when the other cores wait."""
        with self._lock:
            if self._index is not None:
                return
            self._keys.flush()
            shift = 64 - max(0, min(_BUCKETS_LOG2_MAX, (self._stored // BUCKET_TAGS).bit_length()))
            buckets: dict[int, IO[bytes]] = {}
            try:
                for tags in _sorted_ahead(np.sort, self._batches()):
                    top = tags >> _U64(shift) if shift < 64 else np.zeros(len(tags), np.uint64)
                    cuts = np.flatnonzero(top[1:] != top[:-1]) + 1
                    starts = [0, *cuts.tolist()]
                    for start, part in zip(starts, np.split(tags, cuts), strict=True):
                        bucket = int(top[start])
                        if bucket not in buckets:
                            buckets[bucket] = tempfile.TemporaryFile(prefix="drkit-leak-")  # noqa: SIM115
                        buckets[bucket].write(part.tobytes())
                index = tempfile.TemporaryFile(prefix="drkit-leak-")  # noqa: SIM115
                size = 0
                read = (_read_all(buckets[bucket]) for bucket in sorted(buckets))
                for sorted_tags in _sorted_ahead(distinct, read):
                    index.write(sorted_tags.tobytes())
                    size += len(sorted_tags)
            finally:
                for out in buckets.values():
                    out.close()
            if not size:
                index.close()
                self._index = np.zeros(0, np.uint64)
                return
            index.flush()
            self._index_file = index
            self._index = np.memmap(index, dtype=np.uint64, mode="r")

    def _batches(self) -> Iterator[npt.NDArray[np.uint64]]:
        """The stored batches' tags, one batch at a time, from the keys file's start (the
        file's position is at its end again afterwards, however the reading ends: the
        next batch stored is appended, never written over one)."""
        self._keys.seek(0)
        try:
            while header := self._keys.read(8):
                count = int(np.frombuffer(header, dtype=np.uint64)[0])
                yield np.frombuffer(self._keys.read(8 * count), dtype=np.uint64)
                self._keys.seek(count, 1)  # the lengths
        finally:
            self._keys.seek(0, 2)

    def maybe_stored(self, pieces: list[bytes]) -> list[bytes]:
        """The pieces whose tag is a stored form's (all of them before :meth:`freeze`)."""
        index = self._index
        if index is None or not pieces:
            return pieces
        if not len(index):
            return []
        tags = tags_of(pieces)
        at = np.minimum(np.searchsorted(index, tags), len(index) - 1)
        hit = np.asarray(index[at]) == tags
        return [p for p, h in zip(pieces, hit.tolist(), strict=True) if h]

    def add(self, forms: Iterable[bytes]) -> None:
        """Insert forms of TOKEN_MIN bytes or more, blanks around them not counted
        (shorter ones are ignored); a form longer than LONG bytes is stored as its first
        LONG.  Forms hold no NUL.  A set is used as it is (no copy): it must not change
        during the call."""
        prepared = prepare(forms)
        if prepared is not None:
            self.store(prepared)

    def store(self, prepared: Prepared) -> None:
        """Insert forms :func:`prepare` made ready (here, or in a worker process)."""
        if self._index is not None:
            raise RuntimeError("the leak filter is frozen: no form may be added")
        lengths = prepared.lengths
        with self._lock:
            for length in np.flatnonzero(np.bincount(lengths)).tolist():  # (small ints)
                self._lengths.add(length)
                if length < SUBSTRING_MIN:
                    self._tokens.add(length)
            self._prefix.add(prepared.first_keys)
            insert_lengths(prepared.first_keys, lengths, self._held, _HELD_LOG2)
            self.distinct += self._whole.add(prepared.tags)
            # one record per batch: [count][tags][lengths]; the forms go to the data file
            self._stored += len(lengths)
            self._keys.write(np.array([len(lengths)], dtype=np.uint64).tobytes())
            self._keys.write(prepared.tags.tobytes())
            self._keys.write(lengths.astype(np.uint8).tobytes())
            self._data.write(prepared.kept)

    def candidates(self, block: bytes, *, word_starts: bool = False) -> list[tuple[int, bytes]]:
        """(position, piece) of every piece of ``block`` that may be a stored form.

        ``word_starts``: only pieces that start a word (at the block's start or after a
        byte that is no letter, digit or ``_``), for forms that count as whole words
        alone (names): the filters are asked at those positions only, a fifth or so of
        a text's bytes.

        One compiled pass over the block (without the GIL); only the slicing of the
        pieces found is Python."""
        if not self._lengths or not block:
            return []
        wanted = np.zeros(LONG + 1, dtype=bool)
        long_lengths = [x for x in self._lengths if x >= SUBSTRING_MIN]
        wanted[long_lengths] = True
        prefix, whole = self._prefix, self._whole
        data = np.frombuffer(block + bytes(_PAD), dtype=np.uint8)
        longest = max(long_lengths, default=0)
        tokens = np.array(sorted(self._tokens), dtype=np.int64)
        positions = np.empty(_FOUND, dtype=np.int64)
        lengths = np.empty(_FOUND, dtype=np.int64)
        found: list[tuple[int, bytes]] = []
        start = 0
        while start < len(block):
            count, start = search(
                data,
                len(block),
                prefix.words,
                prefix.log2,
                prefix.nbits,
                prefix.front,
                whole.words,
                whole.log2,
                whole.nbits,
                whole.front,
                self._held,
                _HELD_LOG2,
                wanted,
                longest,
                tokens,
                word_starts,
                start,
                positions,
                lengths,
            )
            found += [
                (p, block[p : p + length])
                for p, length in zip(
                    positions[:count].tolist(), lengths[:count].tolist(), strict=True
                )
            ]
        return found

    def confirm(self, pieces: set[bytes], generated: set[bytes]) -> tuple[set[bytes], int]:
        """The pieces equal to a stored form, and how many distinct stored forms equal a
        generated value (those are never reported: drkit's own output looks the same).

        One pass over the stored forms, a batch at a time: only the forms whose hash is a
        candidate's (or a generated value's) are read back and compared byte for byte.
        The whole filter (in memory) first rules out what no stored form can equal (most
        generated values): the pass then looks for the few left, or is not made."""
        generated = {g[:LONG] for g in generated}
        asked = list(pieces | generated)
        tags = tags_of(asked)
        whole = self._whole
        possible = members(tags, whole.words, whole.log2, whole.nbits, whole.front)
        wanted = {piece for piece, p in zip(asked, possible.tolist(), strict=True) if p}
        if not wanted:
            return set(), 0
        targets = distinct(tags[possible])
        found: set[bytes] = set()
        with self._lock:
            self._data.flush()
            self._keys.flush()
            self._keys.seek(0)
            offset = 0
            while header := self._keys.read(8):
                count = int(np.frombuffer(header, dtype=np.uint64)[0])
                tags = np.frombuffer(self._keys.read(8 * count), dtype=np.uint64)
                lengths = np.frombuffer(self._keys.read(count), dtype=np.uint8).astype(np.int64)
                match = np.flatnonzero(_among(tags, targets))
                if len(match):
                    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
                    for i in match.tolist():
                        self._data.seek(offset + int(starts[i]))
                        form = self._data.read(int(lengths[i]))
                        if form in wanted:
                            found.add(form)
                offset += int(lengths.sum())
            self._data.seek(0, 2)
            self._keys.seek(0, 2)
        return found - generated, len(found & generated)


def _among(values: U64Array, targets: U64Array) -> npt.NDArray[np.bool_]:
    """``np.isin(values, targets)`` for sorted, distinct ``targets``: a binary search
    per value (``np.isin`` sorts or hashes both arrays again at every call)."""
    if not len(targets):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(targets, values), len(targets) - 1)
    return np.asarray(targets[at] == values)


@dataclass(frozen=True)
class Prepared:
    """Forms made ready to insert (what :meth:`LeakFilter.store` needs of them): each
    form's tag and prefix key, its length (capped at LONG), and the forms' bytes."""

    tags: U64Array
    first_keys: U64Array
    lengths: IntArray
    kept: bytes


def prepare(forms: Iterable[bytes]) -> Prepared | None:
    """The forms of TOKEN_MIN bytes or more ready to insert (None: none is): one buffer,
    one pass of each compiled loop over it; pure, so a worker process may run it."""
    unique = forms if isinstance(forms, set) else set(forms)
    if not unique:
        return None
    data, starts, lengths = _joined(unique)
    keep = kept(data, starts, lengths, TOKEN_MIN)
    if not keep.all():
        starts, lengths = starts[keep], lengths[keep]
    if not len(starts):
        return None
    return Prepared(
        tags(data, starts, lengths),
        prefix_keys(data, starts, lengths),
        lengths,
        gathered(data, starts, lengths).tobytes(),
    )


def distinct(values: npt.NDArray[_N]) -> npt.NDArray[_N]:
    """The distinct values, sorted: what ``np.unique`` returns, by a sort.  numpy 2.3 and
    later answer ``np.unique`` of integers with a hash table, which on millions of random
    64-bit tags (the originals' hashes) is tens of times slower than sorting them."""
    out = np.sort(values)
    if len(out) < 2:
        return out
    keep = np.empty(len(out), dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def tags_of(forms: list[bytes]) -> U64Array:
    """The key ``whole`` and the store give each form (hash and length, mixed)."""
    if not forms:
        return np.zeros(0, dtype=np.uint64)
    return tags(*_joined(forms))


def _joined(forms: Collection[bytes]) -> tuple[npt.NDArray[np.uint8], IntArray, IntArray]:
    """The forms as one buffer: (bytes, where each starts, its length capped at LONG).
    Joined by NUL, which no form holds, so one compiled pass finds where each starts
    (asking each form its length would read every one of them again)."""
    data = np.frombuffer(b"\x00".join(forms), dtype=np.uint8)
    starts, sizes = separated(data, len(forms))
    if len(starts) != len(forms):  # a form holding NUL after all: ask each its length
        sizes = np.fromiter(map(len, forms), dtype=np.int64, count=len(forms))
        starts = np.zeros(len(sizes), dtype=np.int64)
        np.cumsum(sizes[:-1] + 1, out=starts[1:])
    return data, starts, np.minimum(sizes, LONG)


def _read_all(out: IO[bytes]) -> npt.NDArray[np.uint64]:
    out.seek(0)
    return np.frombuffer(out.read(), dtype=np.uint64)


_AHEAD = 2  # threads, and arrays sorted ahead of the one handed on


def _sorted_ahead(
    sort: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.uint64]],
    arrays: Iterable[npt.NDArray[np.uint64]],
) -> Iterator[npt.NDArray[np.uint64]]:
    """``sort`` of each array, in order, on ``_AHEAD`` threads: at most ``_AHEAD`` arrays
    are read and sorting beyond the one handed on (memory stays bounded)."""
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=_AHEAD, thread_name_prefix="drkit-freeze"
    ) as pool:
        pending: collections.deque[concurrent.futures.Future[npt.NDArray[np.uint64]]]
        pending = collections.deque()
        for array in arrays:
            if len(pending) >= _AHEAD:
                yield pending.popleft().result()
            pending.append(pool.submit(sort, array))
        while pending:
            yield pending.popleft().result()
