"""Choosing a backend for a repository (rohmu's ``object_storage`` factory).

The base module knows nothing of what extends it; this module alone imports the drivers,
each lazily, so the S3 SDK is imported only when an ``s3://`` repository is used
(start-up time matters for wal-push).  Each backend's model (:mod:`drkit.storage.config`)
names its scheme; a new backend adds its line to :func:`open_backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from drkit.storage.base import Backend

if TYPE_CHECKING:
    from drkit.storage.config import RepositoryConfig


def scheme_of(url: str) -> str:
    """The scheme of a repository url (``s3`` of ``s3://bucket``); "" without one."""
    scheme, separator, _ = url.partition("://")
    return scheme if separator else ""


def open_backend(config: RepositoryConfig) -> Backend:
    """The driver of a repository's backend; the S3 SDK is imported only for ``s3://``."""
    if config.scheme == "file":
        from drkit.storage.file import FileBackend

        return FileBackend.from_url(config.url)
    if config.scheme == "s3":
        from drkit.storage.s3 import S3Backend

        return S3Backend.from_config(config)
    raise ValueError(f"unsupported repository url {config.url!r}")


def local_root(url: str) -> Path | None:
    """The directory of a ``file://`` repository url; None for an object store."""
    if scheme_of(url) != "file":
        return None
    from drkit.storage.file import FileBackend

    return FileBackend.from_url(url).root
