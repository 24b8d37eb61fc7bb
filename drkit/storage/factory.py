"""Choosing a backend for a repository (rohmu's ``object_storage`` factory).

The base module knows nothing of what extends it; this module alone imports the drivers,
each lazily, so the S3 SDK is imported only when an ``s3://`` repository is used
(start-up time matters for wal-push).  Each backend's model (:mod:`drkit.storage.config`)
names its scheme; a new backend adds its line to :func:`open_backend`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit.storage.base import Backend

if TYPE_CHECKING:
    from drkit.storage.config import RepositoryConfig


def open_backend(config: RepositoryConfig) -> Backend:
    """The driver of a repository's backend; the S3 SDK is imported only for ``s3://``."""
    if config.scheme == "file":
        from drkit.storage.file import FileBackend

        return FileBackend.from_url(config.url)
    if config.scheme == "s3":
        from drkit.storage.s3 import S3Backend

        return S3Backend.from_config(config)
    raise ValueError(f"unsupported repository url {config.url!r}")
