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
* the forms themselves go to an unlinked temporary file on disk, with their hashes.

Searching a block of text is vectorised (numpy): the ``SUBSTRING_MIN``-byte window at every
position is looked up in ``prefix``; at the few positions that pass, the hash of the
piece of each length an original can have is looked up in ``whole``; the pieces that
pass are *candidates*.  Short forms (``TOKEN_MIN`` to ``SUBSTRING_MIN - 1`` bytes) only
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

import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

import numpy as np
import numpy.typing as npt

TOKEN_MIN = 4  # shorter forms are not searched
SUBSTRING_MIN = 6  # shorter forms match whole tokens only
LONG = 64  # longer forms are matched (and confirmed) on their first LONG bytes
HASH_MIN = 24  # a run of this many hex characters, letters among them, is hash-like

_PREFIX_WORDS_LOG2 = 21  # 2**21 words of 64 bits = 16 MiB
_WHOLE_WORDS_LOG2 = 22  # 32 MiB
_PREFIX_BITS = 2
_FRONT_BITS_LOG2 = 24  # 2 MiB in front of the prefix filter: every byte of text asks it
_WHOLE_BITS = 3
_PAD = LONG + 8
BUCKET_TAGS = 1 << 17  # tags sorted at once when the index is built (1 MiB)
_BUCKETS_LOG2_MAX = 8  # at most 256 buckets: past 32 M tags they grow, slowly

_U64 = np.uint64
_BASE = _U64(0x100000001B3)
_POWERS = np.concatenate(([_U64(1)], np.cumprod(np.full(LONG - 1, _BASE, dtype=np.uint64))))
_WORD = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD[_c] = True
_WORD[0x80:] = True  # any byte of a non-ASCII character counts as a letter
_SPACES = np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)
_DIGIT = [ord("0") <= c <= ord("9") for c in range(256)]
HEX = np.zeros(256, dtype=bool)
HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True
_HEX = HEX.tolist()

U64Array = npt.NDArray[np.uint64]
_N = TypeVar("_N", bound=np.generic)
IntArray = npt.NDArray[np.int64]


def _mix(h: U64Array, tag: int) -> U64Array:
    """A 64-bit finaliser (murmur3's fmix64) over ``h`` xor a length tag."""
    with np.errstate(over="ignore"):
        h = h ^ _U64((tag * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        h = h ^ (h >> _U64(33))
        h = h * _U64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> _U64(33))
        h = h * _U64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> _U64(33))


def _quick(key: U64Array, tag: int) -> U64Array:
    """A cheap hash of a window (at most 8 bytes, as an integer) for the prefix filter."""
    with np.errstate(over="ignore"):
        h = (key + _U64(tag)) * _U64(0x9E3779B97F4A7C15)
        return h ^ (h >> _U64(29))


def _mask_table(nbits: int) -> U64Array:
    """For every ``6 * nbits``-bit value: the word with the ``nbits`` bits it names set."""
    values = np.arange(1 << (6 * nbits), dtype=np.uint64)
    table = np.zeros(len(values), dtype=np.uint64)
    for i in range(nbits):
        table |= _U64(1) << ((values >> _U64(6 * i)) & _U64(63))
    return table


_TABLES: dict[int, U64Array] = {}


def _bits(h: U64Array, log2: int, nbits: int) -> tuple[U64Array, U64Array]:
    table = _TABLES.get(nbits)
    if table is None:
        table = _TABLES[nbits] = _mask_table(nbits)
    index = h >> _U64(64 - log2)
    mask = table[h & _U64(len(table) - 1)]
    return index, mask


class _Bloom:
    """A blocked Bloom filter: each key sets ``nbits`` bits of one 64-bit word.

    ``front_log2``: a first, small filter of one bit per key (``2**front_log2`` bits,
    a few MiB at most, so it stays in the CPU's cache) that :meth:`test` asks first; only
    the keys it lets pass are looked up in the large filter, whose every lookup is a
    miss of the cache.  Both hold every key, so the pair still never misses one."""

    def __init__(self, log2: int, nbits: int, front_log2: int = 0) -> None:
        self.log2 = log2
        self.nbits = nbits
        self.words = np.zeros(1 << log2, dtype=np.uint64)  # calloc: pages appear as used
        self.front_log2 = front_log2
        self.front = np.zeros(1 << max(front_log2 - 6, 0), dtype=np.uint64) if front_log2 else None

    def _front(self, h: U64Array) -> tuple[U64Array, U64Array]:
        """The word and the bit of the front filter for each key: bits of the hash that
        neither the large filter's word (the top bits) nor its mask (the low bits) use."""
        bit = h >> _U64(16)
        word = (bit >> _U64(6)) & _U64((1 << (self.front_log2 - 6)) - 1)
        return word, _U64(1) << (bit & _U64(63))

    def add(self, h: U64Array) -> int:
        """Insert; return how many keys were not all present before (a distinct count)."""
        if not len(h):
            return 0
        if self.front is not None:
            _set_bits(self.front, *self._front(h))
        index, mask = _bits(h, self.log2, self.nbits)
        new = int(np.count_nonzero((self.words[index] & mask) != mask))
        _set_bits(self.words, index, mask)
        return new

    def test(self, h: U64Array) -> npt.NDArray[np.bool_]:
        if self.front is None:
            index, mask = _bits(h, self.log2, self.nbits)
            result: npt.NDArray[np.bool_] = (self.words[index] & mask) == mask
            return result
        word, bit = self._front(h)
        result = (self.front[word] & bit) != 0
        passed = np.flatnonzero(result)
        if len(passed):
            index, mask = _bits(h[passed], self.log2, self.nbits)
            result[passed] = (self.words[index] & mask) == mask
        return result


def _set_bits(words: U64Array, index: U64Array, mask: U64Array) -> None:
    """OR every key's bits into its word.  Of keys sharing a word, one assignment wins
    per round; the keys whose bits are not all set yet go round again (as many rounds as
    keys share the busiest word: a few; ufunc.at, or sorting the keys, is many times
    slower)."""
    while len(index):
        words[index] |= mask
        missing = (words[index] & mask) != mask
        index, mask = index[missing], mask[missing]


def _whole_candidates(
    data: npt.NDArray[np.uint8], positions: IntArray, lengths: list[int], whole: _Bloom
) -> Iterator[tuple[int, IntArray]]:
    """For each wanted length L: the positions whose ``data[p:p+L]`` passes ``whole``.

    The polynomial hash grows a byte at a time; a position is dropped at the first byte
    no form can contain there (a raw tab or newline ends a COPY field, NUL is padding)."""
    wanted = sorted(lengths)
    h = np.zeros(len(positions), dtype=np.uint64)
    step = 0
    with np.errstate(over="ignore"):
        for i in range(wanted[-1]):
            byte = data[positions + i]
            alive = (byte != 0x09) & (byte != 0x0A) & (byte != 0)
            if not alive.all():
                positions, h, byte = positions[alive], h[alive], byte[alive]
                if not len(positions):
                    return
            h = h + byte.astype(np.uint64) * _POWERS[i]
            while step < len(wanted) and wanted[step] < i + 1:
                step += 1
            if step < len(wanted) and wanted[step] == i + 1:
                passed = positions[whole.test(_mix(h, i + 1))]
                if len(passed):
                    yield i + 1, passed


def _hash_rows(rows: npt.NDArray[np.uint8]) -> U64Array:
    """The same polynomial hash of each row of a zero-padded (n, LONG) array: trailing
    zeros add nothing, so a row hashes as its form does."""
    result: U64Array = np.zeros(len(rows), dtype=np.uint64)
    nonzero = np.flatnonzero(rows.any(axis=0))
    with np.errstate(over="ignore"):
        for i in range(int(nonzero[-1]) + 1 if len(nonzero) else 0):
            result += rows[:, i].astype(np.uint64) * _POWERS[i]
    return result


_MASKS = [_U64((1 << (8 * n)) - 1) for n in range(8)] + [_U64(0xFFFFFFFFFFFFFFFF)]


class LeakFilter:
    """Fixed-size filters in memory, exact forms on disk (thread-safe ``add``)."""

    def __init__(self) -> None:
        self._prefix = _Bloom(_PREFIX_WORDS_LOG2, _PREFIX_BITS, _FRONT_BITS_LOG2)
        self._whole = _Bloom(_WHOLE_WORDS_LOG2, _WHOLE_BITS)
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
        alone is sorted and appended, so the buckets in turn make one sorted index."""
        with self._lock:
            if self._index is not None:
                return
            self._keys.flush()
            shift = 64 - max(0, min(_BUCKETS_LOG2_MAX, (self._stored // BUCKET_TAGS).bit_length()))
            buckets: dict[int, IO[bytes]] = {}
            try:
                self._keys.seek(0)
                while header := self._keys.read(8):
                    count = int(np.frombuffer(header, dtype=np.uint64)[0])
                    tags = np.sort(np.frombuffer(self._keys.read(8 * count), dtype=np.uint64))
                    self._keys.seek(count, 1)  # the lengths
                    top = tags >> _U64(shift) if shift < 64 else np.zeros(count, np.uint64)
                    cuts = np.flatnonzero(top[1:] != top[:-1]) + 1
                    starts = [0, *cuts.tolist()]
                    for start, part in zip(starts, np.split(tags, cuts), strict=True):
                        bucket = int(top[start])
                        if bucket not in buckets:
                            buckets[bucket] = tempfile.TemporaryFile(prefix="drkit-leak-")  # noqa: SIM115
                        buckets[bucket].write(part.tobytes())
                self._keys.seek(0, 2)
                index = tempfile.TemporaryFile(prefix="drkit-leak-")  # noqa: SIM115
                size = 0
                for bucket in sorted(buckets):
                    out = buckets[bucket]
                    out.seek(0)
                    sorted_tags = distinct(np.frombuffer(out.read(), dtype=np.uint64))
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
        """Insert forms of TOKEN_MIN bytes or more (shorter ones are ignored)."""
        unique = list(set(forms))
        if not unique:
            return
        if self._index is not None:
            raise RuntimeError("the leak filter is frozen: no form may be added")
        # fixed-width rows, truncated to LONG and zero-padded by numpy itself
        rows = np.array(unique, dtype=f"S{LONG}").view(np.uint8).reshape(len(unique), LONG)
        lengths = np.count_nonzero(rows, axis=1).astype(np.int64)  # forms hold no NUL
        keep = lengths >= TOKEN_MIN
        edges = rows[np.arange(len(rows)), np.maximum(lengths - 1, 0)]
        padded = np.isin(rows[:, 0], _SPACES) | np.isin(edges, _SPACES)
        for i in np.flatnonzero(keep & padded).tolist():  # rare: blanks around the value
            keep[i] = len(unique[i][:LONG].strip()) >= TOKEN_MIN
        if not keep.all():
            rows, lengths = rows[keep], lengths[keep]
        if not len(rows):
            return
        kept_bytes = rows[np.arange(LONG) < lengths[:, None]].tobytes()
        whole = _hash_rows(rows)
        first8 = np.ascontiguousarray(rows[:, :8]).view("<u8").reshape(len(rows))
        with self._lock:
            tagged = np.empty(len(rows), dtype=np.uint64)
            for length in np.unique(lengths).tolist():
                sel = lengths == length
                tagged[sel] = _mix(whole[sel], length)
                self._lengths.add(length)
                if length < SUBSTRING_MIN:
                    self._tokens.add(length)
                    self._prefix.add(_quick(first8[sel] & _MASKS[length], length))
                else:
                    self._prefix.add(_quick(first8[sel] & _MASKS[SUBSTRING_MIN], 0))
            self.distinct += self._whole.add(tagged)
            # one record per batch: [count][tags][lengths]; the forms go to the data file
            self._stored += len(rows)
            self._keys.write(np.array([len(rows)], dtype=np.uint64).tobytes())
            self._keys.write(tagged.tobytes())
            self._keys.write(lengths.astype(np.uint8).tobytes())
            self._data.write(kept_bytes)

    def candidates(self, block: bytes, *, word_starts: bool = False) -> list[tuple[int, bytes]]:
        """(position, piece) of every piece of ``block`` that may be a stored form.

        ``word_starts``: only pieces that start a word (at the block's start or after a
        byte that is no letter, digit or ``_``), for forms that count as whole words
        alone (names): the filters are asked at those positions only, a fifth or so of
        a text's bytes."""
        if not self._lengths or not block:
            return []
        n = len(block)
        padded = block + bytes(_PAD)
        data = np.frombuffer(padded, dtype=np.uint8)
        long_lengths = sorted(x for x in self._lengths if x >= SUBSTRING_MIN)
        tokens = sorted(self._tokens)
        word = _WORD[data] if tokens or word_starts else None
        found: list[tuple[int, bytes]] = []
        for residue in range(min(8, n)):
            # the 8 bytes at positions residue, residue + 8, ...: a view, no copy
            count = (n - residue + 7) // 8
            windows = np.frombuffer(padded, dtype="<u8", count=count, offset=residue)
            pos = np.arange(residue, n, 8, dtype=np.int64)
            if word_starts:
                assert word is not None
                # word[-1] is a pad byte (not a letter): the block's start is a boundary
                lead = ~word[pos - 1]
                pos, windows = pos[lead], windows[lead]
            if long_lengths:
                key = windows & _MASKS[SUBSTRING_MIN]
                hits = pos[self._prefix.test(_quick(key, 0))]
                if len(hits):
                    found += self._confirm_whole(data, hits, long_lengths, block)
            for length in tokens:
                assert word is not None
                alone = ~(word[pos - 1] & word[pos]) & ~(
                    word[pos + length - 1] & word[pos + length]
                )
                key = windows[alone] & _MASKS[length]
                hits = pos[alone][self._prefix.test(_quick(key, length))]
                if len(hits):
                    found += self._confirm_whole(data, hits, [length], block)
        return found

    def _confirm_whole(
        self, data: npt.NDArray[np.uint8], hits: IntArray, lengths: list[int], block: bytes
    ) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for length, ok in _whole_candidates(data, hits, lengths, self._whole):
            for p in ok.tolist():
                piece = block[p : p + length]
                if len(piece) != length:
                    continue
                # a number glued to more digits is another number: 10.0.0.5 in 10.0.0.55
                if p and _DIGIT[piece[0]] and _DIGIT[block[p - 1]]:
                    continue
                end = p + length
                if length < LONG and end < len(block) and _DIGIT[piece[-1]] and _DIGIT[block[end]]:
                    continue
                if piece.isdigit() and in_hash(block, p, end):
                    continue  # chance digits of an md5, a SHA, a hex id
                out.append((p, piece))
        return out

    def confirm(self, pieces: set[bytes], generated: set[bytes]) -> tuple[set[bytes], int]:
        """The pieces equal to a stored form, and how many distinct stored forms equal a
        generated value (those are never reported: drkit's own output looks the same).

        One pass over the stored forms, a batch at a time: only the forms whose hash is a
        candidate's (or a generated value's) are read back and compared byte for byte."""
        generated = {g[:LONG] for g in generated}
        wanted = pieces | generated
        targets = distinct(tags_of(list(wanted)))
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
                match = np.flatnonzero(np.isin(tags, targets))
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


def in_hash(text: bytes, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` lies in a hash-like token: a run of at least
    ``HASH_MIN`` hex characters with a letter among them.  (Called on pieces of digits
    not glued to more digits, so a run longer than the piece has a letter beside it.)"""
    left = start
    while left > 0 and start - left < HASH_MIN and _HEX[text[left - 1]]:
        left -= 1
    right = end
    while right < len(text) and right - end < HASH_MIN and _HEX[text[right]]:
        right += 1
    return right - left >= HASH_MIN and (left < start or right > end)


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
    forms = [f[:LONG] for f in forms]
    rows = np.array(forms, dtype=f"S{LONG}").view(np.uint8).reshape(len(forms), LONG)
    lengths = np.fromiter(map(len, forms), dtype=np.int64, count=len(forms))
    hashes = _hash_rows(rows)
    out = np.empty(len(forms), dtype=np.uint64)
    for length in np.unique(lengths).tolist():
        sel = lengths == length
        out[sel] = _mix(hashes[sel], length)
    return out
