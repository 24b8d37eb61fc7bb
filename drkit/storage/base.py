"""The storage contract every backend implements: put / get / list / delete / head.

Backends implement primitives only (rohmu's ``object_storage/base.py`` and Barman's
``cloud.py`` are the models).  Checksums, prefixes, compression and encryption live
once, above them, in :mod:`drkit.storage.repository`, :mod:`drkit.storage.encoding` and
:mod:`drkit.streams`; this module knows no backend (:func:`scheme_of` only reads a url).

Every ``put`` is atomic: a reader sees either the whole new object or nothing
(``file://`` writes a temp file, fsyncs and renames; S3 completes a single PUT or a
multipart upload only once every part arrived).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


def scheme_of(url: str) -> str:
    """The scheme of a repository url (``s3`` of ``s3://bucket``); "" without one."""
    scheme, separator, _ = url.partition("://")
    return scheme if separator else ""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class Backend(ABC):
    """Primitive object operations on keys relative to the repository's root."""

    #: where the repository lives, for messages (never holds credentials)
    location: str
    #: :meth:`put_stream_new` reads the stored object's size back itself (callers need not)
    new_puts_read_back: bool = False

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> int:
        """Store everything ``stream`` yields until EOF under ``key``; return the size.

        Memory stays bounded whatever the size.  Nothing is visible under ``key`` unless
        the whole stream arrived.  ``size_hint`` is an upper estimate of the size (a
        backend may size its upload parts by it); the stream decides the real size.
        """

    def put_stream_new(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> int:
        """As :meth:`put_stream`, but only if ``key`` does not exist: never replaces.

        Of concurrent calls for one key at most one succeeds; the others raise
        :class:`~drkit.errors.ObjectExists` and leave the stored object alone.  A backend
        without an atomic no-replace primitive refuses (fail closed) rather than racing.
        """
        from drkit.errors import StorageError

        raise StorageError(f"{self.location} cannot store {key} without risking a replace")

    def put_bytes(self, key: str, data: bytes) -> None:
        import io

        self.put_stream(key, io.BytesIO(data))

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; raises ObjectNotFound."""

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as stream:
            return stream.read()

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and modification time of ``key``, or None when it does not exist."""

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 (hex) of the bytes :meth:`put_stream_new` stored under ``key``, kept
        beside the object (file:// extended attribute, S3 user metadata); None when the
        object carries none."""
        return None

    def locked_until(self, key: str) -> datetime | None:
        """Until when the store refuses to delete ``key`` (object lock; a date already past
        means the lock has ended: callers compare it with their clock); None: the object
        carries no lock.  Backends without object lock answer None."""
        return None

    def object_lock_enabled(self) -> bool | None:
        """Whether the store can lock this repository's objects (S3: the bucket has object
        lock enabled); None for a backend that never locks."""
        return None

    def first_existing(self, keys: Sequence[str], *, expected: bool = True) -> ObjectInfo | None:
        """The first of ``keys`` that exists (looked up by name, never by a listing of
        their directory), or None.  ``expected``: whether the caller usually finds one
        (a backend may then look up the first key alone before the others)."""
        for key in keys:
            info = self.head(key)
            if info is not None:
                return info
        return None

    def sweep_incomplete(self, prefix: str, older_than: datetime) -> int:
        """Remove uploads a crash cut short (never visible as objects) started before
        ``older_than`` under ``prefix``; returns how many.  ``prune`` calls this with its
        orphan grace so that an upload in flight is left alone."""
        return 0

    def check_reachable(self) -> None:  # noqa: B027 - optional hook
        """Raise StorageError when the repository itself is missing (a listing of a
        missing file:// root would read as "no backups"); S3 listings already fail."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
