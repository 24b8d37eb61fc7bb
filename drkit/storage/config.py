"""A policy's ``repository`` section: one model per backend, chosen by the url's scheme.

As rohmu's ``object_storage/config.py``: the section has one set of keys whatever the
backend (``url``, ``endpoint_url``, ``region``, ``storage_class``, ``compression``,
``encryption``), so that one policy file can switch backends with
``url: ${REPO_URL:-s3://...}``; validating it (or constructing
``RepositoryConfig(url=...)``) yields the model of its url's scheme, which checks the
url its own way and answers the backend facts callers need — where a ``file://``
repository's files are (:attr:`~RepositoryConfig.local_root`), how many uploads to run
at once (:attr:`~RepositoryConfig.parallel_uploads`).  A ``file://`` repository ignores
the S3 keys.  :mod:`drkit.storage.factory` opens the driver for a model.

A new backend (Azure, GCS) is then one driver module, one model here (its scheme, url
check, keys and facts) listed in :data:`BACKENDS`, and one line in the factory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from drkit.storage.base import scheme_of
from drkit.storage.encoding import CODECS
from drkit.storage.file import local_root


class _Section(BaseModel):
    """Frozen, and a key it does not know is an error (as every part of a policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CompressionConfig(_Section):
    algorithm: Literal["zstd", "gzip", "none"] = "zstd"
    level: int = 3

    @model_validator(mode="after")
    def _level_in_range(self) -> CompressionConfig:
        low, high = CODECS[self.algorithm].levels
        if not low <= self.level <= high:
            raise ValueError(f"{self.algorithm} level must be between {low} and {high}")
        return self


class EncryptionConfig(_Section):
    recipients: list[str] = Field(min_length=1)
    identity_file: str | None = None
    identity_files: list[str] = Field(default_factory=list)

    @field_validator("recipients")
    @classmethod
    def _recipients_look_like_age(cls, v: list[str]) -> list[str]:
        for r in v:
            if not r.startswith(("age1", "ssh-")):
                raise ValueError(f"recipient {r[:12]!r}... is not an age public key (age1...)")
        return v

    def identities(self) -> list[str]:
        files = [self.identity_file] if self.identity_file else []
        files += [f for f in self.identity_files if f and f not in files]
        env_file = os.environ.get("DRKIT_AGE_IDENTITY_FILE")
        if env_file and env_file not in files:
            files.append(env_file)
        return files


class ObjectLockConfig(_Section):
    """``repository.object_lock``: every object drkit writes is retained by the store for
    ``days`` days (S3 Object Lock, ``governance`` or ``compliance`` mode); the bucket must
    have object lock enabled (``drkit check`` proves it)."""

    mode: Literal["governance", "compliance"]
    days: int = Field(ge=1)


class RepositoryConfig(_Section):
    """The ``repository`` section; every instance is the model of its url's scheme."""

    #: the url scheme of this backend's repositories (``""``: none, this is the section)
    scheme: ClassVar[str] = ""

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    storage_class: str | None = None
    compression: CompressionConfig = CompressionConfig()
    encryption: EncryptionConfig | None = None
    object_lock: ObjectLockConfig | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> RepositoryConfig:
        """``RepositoryConfig(url=...)`` makes the model of the url's scheme."""
        chosen = backend_model(kwargs.get("url")) if cls is RepositoryConfig else None
        return super().__new__(chosen or cls)

    @model_validator(mode="wrap")
    @classmethod
    def _by_scheme(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """A section validated inside a policy becomes the model of its url's scheme."""
        if cls is RepositoryConfig and isinstance(data, Mapping):
            chosen = backend_model(data.get("url"))
            if chosen is not None:
                return chosen.model_validate(data)  # type: ignore[return-value]
        return handler(data)

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if backend_model(v) is None:
            schemes = " or ".join(f"{model.scheme}://" for model in BACKENDS)
            raise ValueError(f"repository url must start with {schemes}, got {v!r}")
        return v

    @field_validator("endpoint_url", "region", "storage_class")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None

    @property
    def local_root(self) -> Path | None:
        """The directory a ``file://`` repository lives in; None for an object store."""
        return None

    @property
    def parallel_uploads(self) -> int:
        """How many objects to upload at once when nothing says otherwise."""
        return max(2, os.cpu_count() or 1)

    #: prefixes of the process environment variables this backend's driver reads (its
    #: credentials, region, endpoint), which the WAL commands must see as drkit saw them
    environment_prefixes: ClassVar[tuple[str, ...]] = ()


class FileRepositoryConfig(RepositoryConfig):
    """``file:///path``: a directory tree (the S3 keys are ignored; ``object_lock`` is
    refused)."""

    scheme: ClassVar[str] = "file"

    @field_validator("url")
    @classmethod
    def _absolute_path(cls, v: str) -> str:
        if len(v) <= len("file://"):
            raise ValueError("file:// url needs a path")
        parts = urlsplit(v)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            # file://relative/dir would be resolved against the working directory:
            # archive_command's is the data directory, so WAL would land inside it
            raise ValueError(
                f"file:// url must name an absolute path (file:///var/lib/drkit/repo), got {v!r}"
            )
        return v

    @field_validator("object_lock")
    @classmethod
    def _no_object_lock(cls, v: ObjectLockConfig | None) -> ObjectLockConfig | None:
        if v is not None:
            # a file anyone with the repository's rights can delete is no immutable backup:
            # refuse rather than promise a lock nothing enforces
            raise ValueError(
                "object_lock needs an s3:// repository (a file:// repository cannot lock its "
                "files): copy the backups to an S3 bucket with object lock instead"
            )
        return v

    @property
    def local_root(self) -> Path | None:
        return local_root(self.url)


class S3RepositoryConfig(RepositoryConfig):
    """``s3://bucket/prefix``: AWS S3 or a compatible store (``endpoint_url``), its
    ``region``, the ``storage_class`` of uploaded objects and their ``object_lock``."""

    scheme: ClassVar[str] = "s3"
    environment_prefixes: ClassVar[tuple[str, ...]] = ("AWS_", "DRKIT_S3_")

    @field_validator("url")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not urlsplit(v).netloc:
            raise ValueError("s3:// url needs a bucket: s3://bucket/prefix")
        return v

    @property
    def parallel_uploads(self) -> int:
        return 8  # the network, not the cores, bounds an upload


#: the backends' models; a url's scheme chooses one
BACKENDS: tuple[type[RepositoryConfig], ...] = (FileRepositoryConfig, S3RepositoryConfig)


def backend_model(url: object) -> type[RepositoryConfig] | None:
    """The model of ``url``'s scheme; None for no backend's."""
    scheme = scheme_of(url) if isinstance(url, str) else ""
    return next((model for model in BACKENDS if model.scheme == scheme), None)
