"""The leak filter's compiled loops (:mod:`drkit.jit`): hashing and inserting forms,
and searching a block of text for them, one native pass without the GIL.

Every operand of the hashes is a uint64, so products wrap modulo 2**64; the tables of
:mod:`.leakshape` are read as constants.  Like every :mod:`drkit.jit` loop, they are
compiled (and numba loaded) only when a filter is first filled or searched.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from drkit.jit import njit
from drkit.sanitize.scan.leakshape import (
    BLANK,
    DIGIT,
    HASH_MIN,
    HEX,
    LONG,
    POWERS,
    SUBSTRING_MIN,
    WORD,
)

U64Array = npt.NDArray[np.uint64]
IntArray = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]

_CHUNK = 1 << 10  # positions sieved at once


@njit
def _mix(h: np.uint64, tag: np.uint64) -> np.uint64:
    """A 64-bit finaliser (murmur3's fmix64) over ``h`` xor a length tag."""
    h = h ^ (tag * np.uint64(0x9E3779B97F4A7C15))
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@njit
def _quick(key: np.uint64, tag: np.uint64) -> np.uint64:
    """A cheap hash of a window (at most 8 bytes, as an integer) for the prefix filter."""
    h = (key + tag) * np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(29))


@njit
def _word_and_mask(h: np.uint64, log2: int, nbits: int) -> tuple[np.uint64, np.uint64]:
    """The word a key sets bits in (the hash's top ``log2`` bits) and those ``nbits``
    bits (each named by 6 of the hash's low bits)."""
    mask = np.uint64(0)
    for i in range(nbits):
        mask |= np.uint64(1) << ((h >> np.uint64(6 * i)) & np.uint64(63))
    return h >> np.uint64(64 - log2), mask


@njit
def _front_bit(h: np.uint64, front: U64Array) -> tuple[np.uint64, np.uint64]:
    """The word and the bit of the front filter for a key: bits of the hash that neither
    the large filter's word (the top bits) nor its mask (the low bits) use."""
    bit = h >> np.uint64(16)
    return (bit >> np.uint64(6)) & np.uint64(len(front) - 1), np.uint64(1) << (bit & np.uint64(63))


@njit
def _member(h: np.uint64, words: U64Array, log2: int, nbits: int, front: U64Array) -> bool:
    """Whether a key may be in a filter: its front (if any, asked first), then its words."""
    if len(front):
        word, bit = _front_bit(h, front)
        if front[word] & bit == np.uint64(0):
            return False
    index, mask = _word_and_mask(h, log2, nbits)
    return bool(words[index] & mask == mask)


@njit
def insert(keys: U64Array, words: U64Array, log2: int, nbits: int, front: U64Array) -> int:
    """Set every key's bits; return how many keys did not have all of theirs before the
    call (a distinct count: the keys are all asked before any is set)."""
    new = 0
    for h in keys:
        index, mask = _word_and_mask(h, log2, nbits)
        if words[index] & mask != mask:
            new += 1
    for h in keys:
        index, mask = _word_and_mask(h, log2, nbits)
        words[index] |= mask
        if len(front):
            word, bit = _front_bit(h, front)
            front[word] |= bit
    return new


@njit
def members(
    keys: U64Array, words: U64Array, log2: int, nbits: int, front: U64Array
) -> npt.NDArray[np.bool_]:
    """Whether each key may be in a filter (:func:`_member` of each)."""
    out = np.empty(len(keys), dtype=np.bool_)
    for r in range(len(keys)):
        out[r] = _member(keys[r], words, log2, nbits, front)
    return out


@njit
def insert_lengths(keys: U64Array, lengths: IntArray, table: U64Array, log2: int) -> None:
    """Record the length of each form of ``SUBSTRING_MIN`` bytes or more in its prefix
    key's slot of ``table`` (``2**log2`` words, indexed by the key's top bits): bit
    ``length - 1``, so a slot holds every length a form of that prefix may have."""
    for r in range(len(keys)):
        length = lengths[r]
        if length >= SUBSTRING_MIN:
            slot = keys[r] >> np.uint64(64 - log2)
            table[slot] |= np.uint64(1) << np.uint64(length - 1)


@njit
def in_hash(data: Bytes, n: int, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` (of a text of ``n`` bytes) lies in a hash-like token:
    a run of at least ``HASH_MIN`` hex characters with a letter among them.  (Asked of
    pieces of digits not glued to more digits, so a run longer than the piece has a
    letter beside it.)"""
    left = start
    while left > 0 and start - left < HASH_MIN and HEX[data[left - 1]]:
        left -= 1
    right = end
    while right < n and right - end < HASH_MIN and HEX[data[right]]:
        right += 1
    return right - left >= HASH_MIN and (left < start or right > end)


@njit
def _stands(data: Bytes, n: int, start: int, length: int) -> bool:
    """Whether the piece ``data[start:start+length]`` may count as an original where it
    stands: inside the text, not a number glued to more digits (``10.0.0.5`` in
    ``10.0.0.55``), not digits alone inside a hash-like token."""
    end = start + length
    if end > n:
        return False
    if start and DIGIT[data[start]] and DIGIT[data[start - 1]]:
        return False
    if length < LONG and end < n and DIGIT[data[end - 1]] and DIGIT[data[end]]:
        return False
    for i in range(start, end):
        if not DIGIT[data[i]]:
            return True
    return not in_hash(data, n, start, end)


@njit
def _window(data: Bytes, p: int) -> np.uint64:
    """The 8 bytes at ``p``, as a little-endian integer."""
    window = np.uint64(0)
    for k in range(8):
        window |= np.uint64(data[p + k]) << np.uint64(8 * k)
    return window


@njit
def _front_passes(
    data: Bytes,
    start: int,
    stop: int,
    front: U64Array,
    longest: int,
    tokens: IntArray,
    word_starts: bool,
    out: IntArray,
) -> int:
    """The positions of ``data[start:stop]`` where a key of the prefix filter passes its
    front (the long forms' window, or a short form's where it stands alone), into
    ``out``; returns how many.  A first sieve, kept free of unpredictable branches so
    the CPU overlaps the front's cache misses: nearly every position fails it, and a
    position that passes is asked everything again by :func:`_pieces_at`.  The one
    branch: ``word_starts`` skips a position inside a word before hashing anything
    (measured: a names' search of English text a third cheaper; the same early exit on
    digits glued to digits made the full search slower, so it is left to
    :func:`_pieces_at`).  What the arguments decide is decided once, before the loop;
    the common case, long forms alone asked at every position, has a loop of its own
    (measured: two fifths cheaper than the general loop, which pays for its tests even
    when there is no short form)."""
    six = (np.uint64(1) << np.uint64(8 * SUBSTRING_MIN)) - np.uint64(1)
    count = 0
    window = _window(data, start)
    fronted = len(front) > 0
    asked = longest > 0 and fronted  # the long forms' window asks the front
    shorts = len(tokens) if fronted else 0
    if asked and not shorts and not word_starts:
        for p in range(start, stop):
            if p > start:
                window = (window >> np.uint64(8)) | (np.uint64(data[p + 7]) << np.uint64(56))
            word, bit = _front_bit(_quick(window & six, np.uint64(0)), front)
            out[count] = p
            count += front[word] & bit != np.uint64(0)
        return count
    for p in range(start, stop):
        if p > start:
            window = (window >> np.uint64(8)) | (np.uint64(data[p + 7]) << np.uint64(56))
        if word_starts and p and WORD[data[p - 1]]:
            continue  # inside a word: no hash is computed (most positions of a text)
        passes = not fronted  # no front: every position goes on
        if asked:
            word, bit = _front_bit(_quick(window & six, np.uint64(0)), front)
            passes = front[word] & bit != np.uint64(0)
        for t in range(shorts):  # (an index: iterating costs more)
            length = tokens[t]
            mask = (np.uint64(1) << np.uint64(8 * length)) - np.uint64(1)
            word, bit = _front_bit(_quick(window & mask, np.uint64(length)), front)
            passes |= front[word] & bit != np.uint64(0)
        out[count] = p
        count += passes
    return count


@njit
def _pieces_at(
    data: Bytes,
    n: int,
    p: int,
    prefix: U64Array,
    prefix_log2: int,
    prefix_bits: int,
    front: U64Array,
    whole: U64Array,
    whole_log2: int,
    whole_bits: int,
    whole_front: U64Array,
    held: U64Array,
    held_log2: int,
    wanted: npt.NDArray[np.bool_],
    longest: int,
    tokens: IntArray,
    positions: IntArray,
    lengths: IntArray,
    count: int,
) -> int:
    """The candidate pieces at position ``p``, appended to ``positions`` and ``lengths``
    from ``count`` on; returns the new count.

    The ``SUBSTRING_MIN``-byte window asks the prefix filter (if forms that long exist:
    ``longest`` > 0); if it passes, the polynomial hash grows a byte at a time up to
    ``longest`` bytes, stopping at the first byte no form holds (a raw tab or newline
    ends a COPY field, NUL is padding) or past the longest length its slot of ``held``
    (:func:`insert_lengths`) records, and the hash of each ``wanted`` length the slot
    records asks the whole filter (a few lengths, not every length an original has).
    Each short form length of ``tokens`` asks both filters only where the piece stands
    as a whole token.  Every piece that passes must also stand as
    :func:`_stands` says."""
    if p and DIGIT[data[p]] and DIGIT[data[p - 1]]:
        return count  # a digit glued to the one before: _stands refuses every piece here
    window = _window(data, p)
    six = (np.uint64(1) << np.uint64(8 * SUBSTRING_MIN)) - np.uint64(1)
    key = _quick(window & six, np.uint64(0))
    if longest and _member(key, prefix, prefix_log2, prefix_bits, front):
        here = held[key >> np.uint64(64 - held_log2)]  # the lengths of this prefix's forms
        h = np.uint64(0)
        for i in range(longest):
            if here >> np.uint64(i) == np.uint64(0):
                break  # no form of this prefix is longer
            byte = data[p + i]
            if byte == 0x09 or byte == 0x0A or byte == 0:
                break
            h += np.uint64(byte) * POWERS[i]
            end = p + i + 1
            if i + 1 < LONG and end < n and DIGIT[byte] and DIGIT[data[end]]:
                continue  # glued to more digits: _stands would refuse it (asked first)
            if (
                wanted[i + 1]
                and here >> np.uint64(i) & np.uint64(1)
                and _member(_mix(h, np.uint64(i + 1)), whole, whole_log2, whole_bits, whole_front)
                and _stands(data, n, p, i + 1)
            ):
                positions[count] = p
                lengths[count] = i + 1
                count += 1
    for t in range(len(tokens)):
        length = tokens[t]
        if p and WORD[data[p - 1]] and WORD[data[p]]:
            continue  # inside a longer word on the left
        if WORD[data[p + length - 1]] and WORD[data[p + length]]:
            continue  # on the right
        mask = (np.uint64(1) << np.uint64(8 * length)) - np.uint64(1)
        tag = np.uint64(length)
        if not _member(_quick(window & mask, tag), prefix, prefix_log2, prefix_bits, front):
            continue
        h = np.uint64(0)
        whole_piece = True
        for i in range(length):
            byte = data[p + i]
            if byte == 0x09 or byte == 0x0A or byte == 0:
                whole_piece = False
                break
            h += np.uint64(byte) * POWERS[i]
        if (
            whole_piece
            and _member(_mix(h, tag), whole, whole_log2, whole_bits, whole_front)
            and _stands(data, n, p, length)
        ):
            positions[count] = p
            lengths[count] = length
            count += 1
    return count


@njit
def search(
    data: Bytes,
    n: int,
    prefix: U64Array,
    prefix_log2: int,
    prefix_bits: int,
    front: U64Array,
    whole: U64Array,
    whole_log2: int,
    whole_bits: int,
    whole_front: U64Array,
    held: U64Array,
    held_log2: int,
    wanted: npt.NDArray[np.bool_],
    longest: int,
    tokens: IntArray,
    word_starts: bool,
    start: int,
    positions: IntArray,
    lengths: IntArray,
) -> tuple[int, int]:
    """The candidate pieces of ``data[:n]`` (``data`` is padded with ``_PAD`` zero bytes)
    from position ``start`` on, written to ``positions`` and ``lengths``: returns how
    many, and the position it stopped at (``n``, or where the arrays could overflow: the
    caller empties them and calls again from there).  Positions are sieved by the prefix
    filter's front a ``_CHUNK`` at a time, then those that pass are searched.  (No array
    is reassigned in these loops: that would cost reference counting at every byte.)"""
    count = 0
    room = len(positions) - LONG - len(tokens)  # a position adds at most this many
    passed = np.empty(_CHUNK, dtype=np.int64)
    for chunk in range(start, n, _CHUNK):
        stop = min(chunk + _CHUNK, n)
        for j in range(
            _front_passes(data, chunk, stop, front, longest, tokens, word_starts, passed)
        ):
            p = passed[j]
            if count > room:
                return count, p
            count = _pieces_at(
                data,
                n,
                p,
                prefix,
                prefix_log2,
                prefix_bits,
                front,
                whole,
                whole_log2,
                whole_bits,
                whole_front,
                held,
                held_log2,
                wanted,
                longest,
                tokens,
                positions,
                lengths,
                count,
            )
    return count, n


@njit
def separated(data: Bytes, count: int) -> tuple[IntArray, IntArray]:
    """Where each NUL-separated piece of ``data`` starts, and its length (more than
    ``count`` pieces: the arrays stop at ``count + 1``, so the caller sees the excess)."""
    starts = np.empty(count + 1, dtype=np.int64)
    lengths = np.empty(count + 1, dtype=np.int64)
    pieces = 0
    start = 0
    for i in range(len(data) + 1):
        if i == len(data) or data[i] == 0:
            if pieces <= count:
                starts[pieces] = start
                lengths[pieces] = i - start
            pieces += 1
            start = i + 1
    found = min(pieces, count + 1)
    return starts[:found], lengths[:found]


@njit
def tags(data: Bytes, starts: IntArray, lengths: IntArray) -> U64Array:
    """The key ``whole`` and the store give each form of a joined buffer (form ``r`` is
    ``data[starts[r]:starts[r] + lengths[r]]``, at most ``LONG`` bytes): its polynomial
    hash, mixed with its length."""
    out = np.empty(len(starts), dtype=np.uint64)
    for r in range(len(starts)):
        h = np.uint64(0)
        start = starts[r]
        for i in range(lengths[r]):
            h += np.uint64(data[start + i]) * POWERS[i]
        out[r] = _mix(h, np.uint64(lengths[r]))
    return out


@njit
def prefix_keys(data: Bytes, starts: IntArray, lengths: IntArray) -> U64Array:
    """The prefix filter's key of each form of a joined buffer (as :func:`tags` reads
    it): its first ``SUBSTRING_MIN`` bytes (untagged), or the whole of a shorter form,
    tagged by its length."""
    out = np.empty(len(starts), dtype=np.uint64)
    for r in range(len(starts)):
        length = lengths[r]
        width = length if length < SUBSTRING_MIN else SUBSTRING_MIN
        key = np.uint64(0)
        for k in range(width):
            key |= np.uint64(data[starts[r] + k]) << np.uint64(8 * k)
        out[r] = _quick(key, np.uint64(length if length < SUBSTRING_MIN else 0))
    return out


@njit
def kept(data: Bytes, starts: IntArray, lengths: IntArray, shortest: int) -> npt.NDArray[np.bool_]:
    """Whether each form of a joined buffer (as :func:`tags` reads it) is stored: at
    least ``shortest`` bytes without the blanks around it (those ``bytes.strip`` drops)."""
    out = np.empty(len(starts), dtype=np.bool_)
    for r in range(len(starts)):
        first = starts[r]
        last = first + lengths[r]
        while first < last and BLANK[data[first]]:
            first += 1
        while last > first and BLANK[data[last - 1]]:
            last -= 1
        out[r] = last - first >= shortest
    return out


@njit
def gathered(data: Bytes, starts: IntArray, lengths: IntArray) -> Bytes:
    """The forms of a joined buffer (as :func:`tags` reads them), one after the other."""
    out = np.empty(lengths.sum(), dtype=np.uint8)
    size = 0
    for r in range(len(starts)):
        out[size : size + lengths[r]] = data[starts[r] : starts[r] + lengths[r]]
        size += lengths[r]
    return out
