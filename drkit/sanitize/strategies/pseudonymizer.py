"""Keyed, deterministic pseudonyms: a function of (salt, strategy options, input) only.

Never Python's ``hash()``: per-purpose keys are derived from the salt with HMAC-SHA256,
and values are MACed with keyed BLAKE2b (RFC 7693 keyed mode, a MAC by design and about
three times faster than HMAC-SHA256 per call in CPython).  So the same value gets the
same pseudonym in every table, column and run, and another salt gives other pseudonyms.
Each function keys its BLAKE2b state once (:func:`keyed_mac`) and copies it per value:
the key block is compressed once per run, not once per row.

``fake`` never calls Faker once per row: for each (salt, provider, args, locale) a pool
of values is made once from a Faker seeded by the salt (:mod:`.fakepool`), and the MAC
of the input picks one.  Unique outputs (``email``, ``hash``, ``fake`` with
``unique: true``) carry an 80-bit keyed tag of the input, so two distinct inputs collide
with probability below 1e-12 even for ten million values; should it ever happen,
PostgreSQL refuses the unique index when the constraints are created and the run fails:
it never copies duplicates.
"""

from __future__ import annotations

import hmac
import json
import struct
import threading
from collections.abc import Callable, Iterable
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from drkit.sanitize.strategies.fakepool import PoolKey, PoolPrefetch, generate_pool

if TYPE_CHECKING:
    from drkit.sanitize.strategies.fake import Fake

POOL_SIZE = 4096  # a power of two: the MAC picks an entry without bias
TAG_BYTES = 10  # 80 bits, 20 hex characters
#: the first 8 bytes of a MAC as a big-endian integer (what picks a pool entry)
_FIRST_U64 = struct.Struct(">Q").unpack_from


def keyed_mac(key: bytes, digest_size: int = 64) -> Callable[[str], bytes]:
    """``value -> BLAKE2b(value's UTF-8, key=key, digest_size)``: the keyed state made
    once, copied for each value (the same digest as keying a new state per call)."""
    keyed = blake2b(key=key, digest_size=digest_size)
    copy = keyed.copy

    def mac(value: str) -> bytes:
        state = copy()
        state.update(value.encode("utf-8", "surrogatepass"))
        return state.digest()

    return mac


class Pseudonymizer:
    """Keyed, deterministic pseudonyms for one salt."""

    def __init__(self, salt: bytes, pool_size: int = POOL_SIZE) -> None:
        if pool_size & (pool_size - 1):
            raise ValueError("pool_size must be a power of two")
        self._salt = salt
        self._keys: dict[str, bytes] = {}
        self._pools: dict[PoolKey, tuple[str, ...]] = {}
        self._pool_size = pool_size
        self._email_mac: Callable[[str], bytes] | None = None
        self._hash_mac: Callable[[str], bytes] | None = None
        self._fake_fns: dict[tuple[str, ...], Callable[[str], str]] = {}
        self._lock = threading.Lock()
        self._prefetch = PoolPrefetch()

    def __repr__(self) -> str:  # never show the salt
        return "Pseudonymizer(salt=***)"

    def key(self, purpose: str) -> bytes:
        found = self._keys.get(purpose)
        if found is None:
            found = hmac.digest(self._salt, b"drkit-sanitize/" + purpose.encode(), "sha256")
            self._keys[purpose] = found
        return found

    # -- fake -----------------------------------------------------------------------

    @staticmethod
    def _fake_id(spec: Fake) -> PoolKey:
        args = json.dumps(spec.args, sort_keys=True, default=str)
        return spec.provider, args, spec.locale

    def pool(self, spec: Fake) -> tuple[str, ...]:
        ident = self._fake_id(spec)
        found = self._pools.get(ident)
        if found is not None:
            return found
        with self._lock:
            found = self._pools.get(ident)
            if found is None:
                found = self._make_pool(spec, ident)
                self._pools[ident] = found
        return found

    def _seed(self, ident: PoolKey) -> int:
        return int.from_bytes(self.key("pool/" + "/".join(ident))[:8], "big")

    def _make_pool(self, spec: Fake, ident: PoolKey) -> tuple[str, ...]:
        made = self._prefetch.take(ident)
        if made is not None and len(made) == self._pool_size:
            return made
        return generate_pool(
            self._seed(ident), spec.provider, spec.args, spec.locale, self._pool_size
        )

    def prefetch(self, specs: Iterable[Fake]) -> None:
        """Start making the pools of ``specs`` in worker processes (see
        :mod:`drkit.sanitize.strategies.fakepool`); :meth:`close` ends them."""
        jobs: dict[PoolKey, tuple[PoolKey, int, Any]] = {}
        for spec in specs:
            ident = self._fake_id(spec)
            if ident not in self._pools and ident not in jobs:
                jobs[ident] = (ident, self._seed(ident), spec.args)
        self._prefetch.start(jobs.values(), self._pool_size)

    def settle(self, specs: Iterable[Fake]) -> None:
        """Every pool of ``specs`` made (or taken from its worker) now, and the workers
        ended: a process forked after this finds each pool it needs in its copy, and
        never reads a worker's pipe."""
        for spec in specs:
            self.pool(spec)
        self._prefetch.close()

    def close(self) -> None:
        """End the pool workers, if any are still running."""
        self._prefetch.close()

    def fake(self, spec: Fake, value: str) -> str:
        return self.fake_fn(spec)(value)

    def fake_fn(self, spec: Fake) -> Callable[[str], str]:
        """The ``fake`` pseudonym function of ``spec``, pool and key resolved once."""
        ident = self._fake_id(spec)
        cached = self._fake_fns.get((*ident, str(spec.unique)))
        if cached is not None:
            return cached
        pool = self.pool(spec)
        mac = keyed_mac(self.key("fake/" + "/".join(ident)))
        mask = len(pool) - 1
        first = _FIRST_U64

        def plain(value: str) -> str:
            picked: str = pool[first(mac(value))[0] & mask]
            return picked

        def unique(value: str) -> str:
            digest = mac(value)
            picked: str = pool[first(digest)[0] & mask]
            tag = digest[8 : 8 + TAG_BYTES].hex()
            if "@" in picked:
                local, _, domain = picked.partition("@")
                return f"{local}.{tag}@{domain}"
            return f"{picked}-{tag}"

        fn = unique if spec.unique else plain
        self._fake_fns[(*ident, str(spec.unique))] = fn
        return fn

    # -- the others ----------------------------------------------------------------

    def email(self, value: str, domain: str) -> str:
        mac = self._email_mac
        if mac is None:
            mac = self._email_mac = keyed_mac(self.key("tag/email"), 32)
        return f"u{mac(value)[:TAG_BYTES].hex()}@{domain}"

    def hash(self, value: str, length: int) -> str:
        return self.hash_fn(length)(value)

    def hash_fn(self, length: int) -> Callable[[str], str]:
        """The ``hash`` pseudonym function: the keyed MAC of the value, ``length`` hex
        characters of it."""
        mac = self._hash_mac
        if mac is None:
            mac = self._hash_mac = keyed_mac(self.key("hash"), 32)
        return lambda value: mac(value).hex()[:length]
