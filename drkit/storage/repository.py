"""One environment's view of a repository: keys under ``<env>/``, encoded objects, checksums.

This is the layer above the backends where compression, encryption and sha256 live
once.  :meth:`Repository.store` encodes and uploads a raw stream and returns a
:class:`StoredObject` describing what landed (the manifest records it);
:meth:`Repository.open_decoded` streams it back, decoded, checking its size and
sha256 as it goes.  :meth:`Repository.open_key` reads any object by its key alone (WAL:
no manifest describes it), decoded as its suffixes say.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from drkit.errors import CheckFailed, StorageError
from drkit.storage.base import Backend, ObjectInfo
from drkit.storage.encoding import Encoding, decoded, encoding_of, open_stored
from drkit.storage.factory import open_backend
from drkit.streams import (
    CountingReader,
    HashingReader,
    Tap,
    compress,
)

if TYPE_CHECKING:
    from drkit.storage.config import CompressionConfig, RepositoryConfig


@dataclass
class StoredObject:
    """What the manifest says about one stored object."""

    key: str  # relative to the repository root, e.g. prod/backups/<id>/app.dump.zst
    stored_size: int
    sha256: str
    raw_size: int
    compression: str
    encryption_recipients: list[str] = field(default_factory=list)
    database: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredObject:
        return cls(
            key=str(data["key"]),
            stored_size=int(data["stored_size"]),
            sha256=str(data["sha256"]),
            raw_size=int(data["raw_size"]),
            compression=str(data.get("compression", "none")),
            encryption_recipients=[str(r) for r in data.get("encryption_recipients", [])],
            database=data.get("database"),
        )

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class EnvironmentPolicy(Protocol):
    """What a repository is opened for: an environment (a policy) names itself and its
    repository section, and the encoding its WAL is stored with."""

    @property
    def name(self) -> str: ...

    @property
    def repository(self) -> RepositoryConfig: ...

    def wal_compression(self) -> CompressionConfig: ...


class Repository:
    """The repository of one environment (``<repo>/<env>/...``)."""

    def __init__(self, backend: Backend, env: str, config: RepositoryConfig) -> None:
        self.backend = backend
        self.env = env
        self.config = config

    @classmethod
    def for_policy(cls, policy: EnvironmentPolicy) -> Repository:
        return cls(open_backend(policy.repository), policy.name, policy.repository)

    @classmethod
    def for_wal(cls, policy: EnvironmentPolicy) -> Repository:
        """The repository as wal-push writes it: WAL at ``wal_archiver.compression_level``."""
        config = policy.repository.model_copy(update={"compression": policy.wal_compression()})
        return cls(open_backend(policy.repository), policy.name, config)

    @property
    def location(self) -> str:
        return f"{self.backend.location}/{self.env}"

    def key(self, relative: str) -> str:
        return f"{self.env}/{relative}"

    # -- encoding -------------------------------------------------------------------

    @property
    def encoding(self) -> Encoding:
        """How this repository encodes what it stores now (the policy's choice)."""
        return Encoding(self.config.compression.algorithm, self.config.encryption is not None)

    @property
    def suffix(self) -> str:
        """What stored names get appended: ``.zst``, ``.zst.age``, ..."""
        return self.encoding.suffix

    def check_encryption_available(self) -> None:
        """Fail closed (exit 4) before anything is uploaded if encryption cannot run."""
        if self.config.encryption is None:
            return
        from drkit import crypto

        crypto.check_recipients(self.config.encryption.recipients)

    def store(
        self,
        relative_base: str,
        raw: BinaryIO,
        *,
        database: str | None = None,
        on_raw_bytes: Callable[[int], None] | None = None,
        size_hint: int | None = None,
        exclusive: bool = False,
        compress_threads: int | None = None,
    ) -> StoredObject:
        """Encode ``raw`` (compress, then encrypt) and upload it as ``relative_base+suffix``.

        ``size_hint``: an upper estimate of the raw size, for the backend's part sizes.
        ``exclusive``: never replace an existing object (raises ObjectExists).
        ``compress_threads``: zstd worker threads (None: the default; 0: none, for callers
        that run several stores in parallel)."""
        comp = self.config.compression
        counter = CountingReader(raw, on_raw_bytes, close_source=False)  # raw is the caller's
        stream: BinaryIO = compress(
            counter,  # type: ignore[arg-type]
            comp.algorithm,
            comp.level,
            threads=compress_threads,
        )
        recipients: list[str] = []
        encryptor = None
        key = self.key(relative_base + self.suffix)
        if self.config.encryption is not None:
            self.check_encryption_available()
            from drkit import crypto

            recipients = list(self.config.encryption.recipients)
            encryptor = crypto.encrypt_stream(stream, recipients, name=key)
            stream = encryptor.reader
        hashing = HashingReader(stream)
        try:
            put = self.backend.put_stream_new if exclusive else self.backend.put_stream
            stored = put(key, hashing, size_hint)  # type: ignore[arg-type]
            if encryptor is not None:
                encryptor.finish()
        except BaseException:
            if encryptor is not None:
                encryptor.abort()
            raise
        if stored != hashing.count:
            raise StorageError(f"{key}: stored {stored} bytes but produced {hashing.count}")
        return StoredObject(
            key=key,
            stored_size=stored,
            sha256=hashing.hexdigest(),
            raw_size=counter.count,
            compression=comp.algorithm,
            encryption_recipients=recipients,
            database=database,
        )

    def identities(self) -> list[str]:
        """The age identity files that decrypt this repository's objects, where any are
        configured (restores, verifies and drills)."""
        return self.config.encryption.identities() if self.config.encryption else []

    @contextmanager
    def open_decoded(self, obj: StoredObject) -> Iterator[BinaryIO]:
        """Stream an object back decoded; a size or sha256 mismatch raises CheckFailed.

        The check of the stored bytes completes when the stream is read to its end;
        callers that stop early get no verdict.  A decoding error is most often damaged
        stored bytes: it is reported as such when the sha256 of what is stored disagrees
        with the manifest.
        """
        raw = self.backend.open_read(obj.key)
        checked = _VerifyingReader(raw, obj)
        encoding = Encoding(obj.compression, bool(obj.encryption_recipients))
        try:
            with decoded(
                cast(BinaryIO, checked),
                encoding,
                name=obj.key,
                identities=self.identities() if encoding.encrypted else (),
                on_damage=checked.finish,
            ) as stream:
                yield stream
        finally:
            raw.close()

    def open_key(
        self, key: str, *, expected_sha256: str | None = None
    ) -> AbstractContextManager[BinaryIO]:
        """Stream object ``key`` back decoded as its suffixes say (WAL, which no manifest
        describes); ``expected_sha256``: of its stored bytes, checked at their end."""
        encrypted = encoding_of(key).encrypted
        return open_stored(
            self.backend,
            key,
            expected_sha256=expected_sha256,
            identities=self.identities() if encrypted else (),
        )

    # -- plain JSON documents (manifests, reports) -------------------------------------

    def put_json(self, relative: str, document: dict[str, Any], *, exclusive: bool = False) -> None:
        """Store a JSON document; ``exclusive``: never replace one (ObjectExists)."""
        data = json.dumps(document, indent=2, sort_keys=True, default=str).encode() + b"\n"
        if exclusive:
            self.backend.put_stream_new(self.key(relative), io.BytesIO(data), len(data))
        else:
            self.backend.put_bytes(self.key(relative), data)

    def get_json(self, relative: str) -> dict[str, Any]:
        data = self.backend.get_bytes(self.key(relative))
        try:
            document = json.loads(data)
        except ValueError:
            raise CheckFailed(f"{self.key(relative)}: not valid JSON") from None
        if not isinstance(document, dict):
            raise CheckFailed(f"{self.key(relative)}: not a JSON object")
        return document

    def list(self, relative_prefix: str) -> list[ObjectInfo]:
        return self.backend.list(self.key(relative_prefix))

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    def close(self) -> None:
        self.backend.close()


class _VerifyingReader(Tap):
    """Checks the stored bytes against the manifest's size and sha256 while streaming."""

    def __init__(self, source: BinaryIO, obj: StoredObject) -> None:
        super().__init__(source, self._seen, self.verify)
        self._obj = obj
        self._hash = hashlib.sha256()
        self._count = 0

    def _seen(self, data: bytes) -> None:
        self._hash.update(data)
        self._count += len(data)
        if self._count > self._obj.stored_size:
            raise CheckFailed(
                f"{self._obj.key}: larger than the manifest's {self._obj.stored_size} bytes"
            )

    def finish(self) -> None:
        """Read the rest of the stored bytes and verify them (raises on mismatch)."""
        if self._ended:
            return
        try:
            while self.read(1024 * 1024):
                pass
        except (OSError, StorageError):
            return

    def verify(self) -> None:
        if self._count != self._obj.stored_size:
            raise CheckFailed(
                f"{self._obj.key}: size {self._count} bytes, manifest says "
                f"{self._obj.stored_size} (truncated or replaced object)"
            )
        if self._hash.hexdigest() != self._obj.sha256:
            raise CheckFailed(f"{self._obj.key}: sha256 mismatch (the object is corrupt)")
