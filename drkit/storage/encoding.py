"""How a stored object is encoded, told by its key: the one table of suffixes.

Every object goes through the repository's encoding: compressed (zstd or gzip), then
encrypted with age, and named ``<name><compression suffix>[.age]``
(``base.tar.zst.age``).  The suffixes alone say how to read an object back, whatever the
policy says today: a policy may change its compression or encryption, and objects
stored before keep theirs.  :data:`CODECS` is the one place a compression algorithm's
suffix, levels and self-check are written; a new one is a line there (and its stream
stage in :mod:`drkit.streams`).

:func:`decoded` is the one way stored bytes become the original again (decrypted, then
decompressed), for manifest objects and WAL alike; :func:`open_stored` reads an object
by its key alone, which is all the lean WAL fetch has.  Nothing heavy is imported here
(age runs only for an encrypted object): the lean fetch reads objects with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from drkit.errors import CheckFailed
from drkit.streams import ChecksumReader, decompress

if TYPE_CHECKING:
    from drkit.storage.base import Backend


@dataclass(frozen=True)
class Codec:
    """A compression algorithm as stored objects carry it."""

    suffix: str
    #: the levels a policy may ask for, inclusive
    levels: tuple[int, int]
    #: what the compressed bytes check about themselves when decoded ("": nothing)
    self_check: str


#: compression algorithm -> its codec, in the order a lookup tries encodings
CODECS: dict[str, Codec] = {
    "zstd": Codec(".zst", (1, 22), "zstd frame checksum"),
    "gzip": Codec(".gz", (1, 9), "gzip CRC-32"),
    "none": Codec("", (0, 22), ""),
}
#: appended after the compression suffix of an object encrypted with age
ENCRYPTED_SUFFIX = ".age"
_AGE_CHECK = "age authentication"


@dataclass(frozen=True)
class Encoding:
    """How one object's stored bytes are encoded: a compression, and age or not."""

    compression: str = "none"
    encrypted: bool = False

    @property
    def suffix(self) -> str:
        """What the object's name gets appended: ``.zst``, ``.zst.age``, ``.age``, ..."""
        return CODECS[self.compression].suffix + (ENCRYPTED_SUFFIX if self.encrypted else "")

    @property
    def checks_itself(self) -> bool:
        """Whether the stored bytes carry their own check (zstd and gzip checksums, age's
        authenticated chunks); an object stored as is needs a digest kept elsewhere."""
        return self.compression != "none" or self.encrypted

    @property
    def self_check(self) -> str:
        """What checks the stored bytes as they are decoded, in words ("" for none)."""
        checks = [_AGE_CHECK] if self.encrypted else []
        checks += [c for c in (CODECS[self.compression].self_check,) if c]
        return " + ".join(checks)

    def strip(self, name: str) -> str:
        """``name`` without this encoding's suffixes (those it carries)."""
        if self.encrypted:
            name = name.removesuffix(ENCRYPTED_SUFFIX)
        codec = CODECS.get(self.compression)
        return name.removesuffix(codec.suffix) if codec is not None and codec.suffix else name


#: every encoding an object may carry, in the order a lookup tries them
ENCODINGS: tuple[Encoding, ...] = tuple(
    Encoding(compression, encrypted) for compression in CODECS for encrypted in (False, True)
)


def encoding_of(key: str) -> Encoding:
    """The encoding a stored key's suffixes name."""
    encrypted = key.endswith(ENCRYPTED_SUFFIX)
    base = key.removesuffix(ENCRYPTED_SUFFIX) if encrypted else key
    for compression, codec in CODECS.items():
        if codec.suffix and base.endswith(codec.suffix):
            return Encoding(compression, encrypted)
    return Encoding("none", encrypted)


def plain_name(key: str) -> str:
    """The last part of ``key`` without the suffixes of its encoding."""
    name = key.rsplit("/", 1)[-1]
    return encoding_of(name).strip(name)


@contextmanager
def decoded(
    stored: BinaryIO,
    encoding: Encoding,
    *,
    name: str,
    identities: Sequence[str] = (),
    on_damage: Callable[[], object] | None = None,
) -> Iterator[BinaryIO]:
    """The original bytes of ``stored`` (an object's stored bytes, however the caller
    checks them): decrypted with any of ``identities`` when age-encrypted, then
    decompressed.  Damage raises CheckFailed by the end of the stream; ``on_damage`` is
    called first (to tell damaged stored bytes from a damaged encoding)."""
    decryptor = None
    try:
        stream = stored
        if encoding.encrypted:
            from drkit import crypto

            decryptor = crypto.decrypt_stream(stream, list(identities), name=name)
            stream = decryptor.reader
        try:
            yield decompress(stream, encoding.compression, name=name)
            if decryptor is not None:
                decryptor.finish()
        except CheckFailed:
            if on_damage is not None:
                on_damage()
            raise
    finally:
        if decryptor is not None:
            decryptor.abort()


@contextmanager
def open_stored(
    backend: Backend,
    key: str,
    *,
    expected_sha256: str | None = None,
    identities: Sequence[str] = (),
) -> Iterator[BinaryIO]:
    """Object ``key`` of ``backend`` decoded as its key's suffixes say; with
    ``expected_sha256`` (of the stored bytes, for an object that does not check itself)
    a mismatch raises CheckFailed at the end of the stream."""
    raw = backend.open_read(key)
    try:
        stored = raw
        if expected_sha256 is not None:
            stored = cast(BinaryIO, ChecksumReader(raw, expected_sha256, key))
        with decoded(stored, encoding_of(key), name=key, identities=identities) as stream:
            yield stream
    finally:
        raw.close()
