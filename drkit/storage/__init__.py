"""Repositories: a small storage contract (put/get/list/delete/head) and its backends.

This is the package's face: callers outside it import from here.  Inside:

- :mod:`.base`: the primitives every backend implements, and nothing of any backend;
- :mod:`.file` and :mod:`.s3`: the drivers;
- :mod:`.config`: a policy's ``repository`` section, one model per backend chosen by
  the url's scheme, answering the backend facts (where a file repository is, how many
  uploads at once);
- :mod:`.factory`: the one place a model chooses its driver (the S3 SDK is imported only
  for an ``s3://`` repository);
- :mod:`.encoding`: how an object's key says it is compressed and encrypted;
- :mod:`.repository`: one environment's view of a repository, where encoding, checksums
  and reading any object back (WAL included) live once.

A new backend (Azure, GCS) is one driver module, one model in :mod:`.config` and one
line in :mod:`.factory`.  The models (pydantic) are loaded on first use of their names:
a WAL command that needs no policy never imports pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face
from drkit.storage.base import Backend as Backend
from drkit.storage.base import ObjectInfo as ObjectInfo
from drkit.storage.base import scheme_of as scheme_of
from drkit.storage.encoding import CODECS as CODECS
from drkit.storage.encoding import ENCODINGS as ENCODINGS
from drkit.storage.encoding import Encoding as Encoding
from drkit.storage.encoding import decoded as decoded
from drkit.storage.encoding import encoding_of as encoding_of
from drkit.storage.encoding import open_stored as open_stored
from drkit.storage.encoding import plain_name as plain_name
from drkit.storage.factory import open_backend as open_backend
from drkit.storage.file import FileBackend as FileBackend
from drkit.storage.file import local_root as local_root
from drkit.storage.repository import Repository as Repository
from drkit.storage.repository import StoredObject as StoredObject

if TYPE_CHECKING:
    from drkit.storage.config import BACKENDS as BACKENDS
    from drkit.storage.config import CompressionConfig as CompressionConfig
    from drkit.storage.config import EncryptionConfig as EncryptionConfig
    from drkit.storage.config import FileRepositoryConfig as FileRepositoryConfig
    from drkit.storage.config import RepositoryConfig as RepositoryConfig
    from drkit.storage.config import S3RepositoryConfig as S3RepositoryConfig

#: the models of :mod:`.config`, loaded on first use (pydantic with them)
lazy_face(
    __name__,
    {
        "config": (
            "BACKENDS CompressionConfig EncryptionConfig FileRepositoryConfig "
            "RepositoryConfig S3RepositoryConfig"
        ),
    },
)
