"""Choosing a backend for a repository url (rohmu's ``object_storage`` factory).

The base module knows nothing of what extends it; this module alone imports the drivers,
each lazily, so the S3 SDK is imported only when an ``s3://`` repository is used
(start-up time matters for wal-push).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit.storage.base import Backend

if TYPE_CHECKING:
    from drkit.config import RepositoryConfig


def open_backend(config: RepositoryConfig) -> Backend:
    """The backend for a repository url; the S3 SDK is imported only for ``s3://``."""
    url = config.url
    if url.startswith("file://"):
        from drkit.storage.file import FileBackend

        return FileBackend.from_url(url)
    if url.startswith("s3://"):
        from drkit.storage.s3 import S3Backend

        return S3Backend.from_config(config)
    raise ValueError(f"unsupported repository url {url!r}")
