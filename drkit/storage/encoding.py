"""How a stored object is encoded, told by its key: the one table of suffixes.

Every object goes through the repository's encoding: compressed (zstd or gzip), then
encrypted with age, and named ``<name><compression suffix>[.age]``
(``base.tar.zst.age``).  The suffixes alone say how to read an object back, whatever the
policy says today: a policy may change its compression or encryption, and objects
stored before keep theirs.  :data:`CODECS` is the one place a compression algorithm's
suffix, levels and self-check are written; a new one is a line there (and its stream
stage in :mod:`drkit.streams`).

Standard library only: the lean WAL fetch reads keys with it before anything else loads.
"""

from __future__ import annotations

from dataclasses import dataclass


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
