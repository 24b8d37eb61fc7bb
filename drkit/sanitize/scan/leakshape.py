"""The shape of a form the leak filter stores, shared by the filter and its compiled loops.

Lengths (the shortest form searched, the shortest searched as a substring, the cap on a
form's length), what makes a run of hex characters hash-like, and the byte classes and
hash powers both sides read.
"""

from __future__ import annotations

import numpy as np

TOKEN_MIN = 4  # shorter forms are not searched
SUBSTRING_MIN = 6  # shorter forms match whole tokens only
LONG = 64  # longer forms are matched (and confirmed) on their first LONG bytes
HASH_MIN = 24  # a run of this many hex characters, letters among them, is hash-like

# the polynomial hash of a form: sum of byte[i] * BASE**i, modulo 2**64
_BASE = np.uint64(0x100000001B3)
POWERS = np.concatenate(([np.uint64(1)], np.cumprod(np.full(LONG - 1, _BASE, dtype=np.uint64))))
WORD = np.zeros(256, dtype=bool)  # a letter, digit or _ (the bytes of a word)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    WORD[_c] = True
WORD[0x80:] = True  # any byte of a non-ASCII character counts as a letter
DIGIT = np.zeros(256, dtype=bool)
DIGIT[ord("0") : ord("9") + 1] = True
BLANK = np.zeros(256, dtype=bool)  # the bytes bytes.strip() drops
BLANK[np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)] = True
HEX = np.zeros(256, dtype=bool)
HEX[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = True
