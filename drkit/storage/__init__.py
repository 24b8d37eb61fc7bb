"""Repositories: a small storage contract (put/get/list/delete/head) and its backends.

This is the package's face: callers outside it import from here.  Inside:

- :mod:`.base`: the primitives every backend implements, and nothing of any backend;
- :mod:`.file` and :mod:`.s3`: the drivers;
- :mod:`.factory`: the one place a repository url's scheme chooses a driver (the S3 SDK
  is imported only for an ``s3://`` repository);
- :mod:`.encoding`: how an object's key says it is compressed and encrypted;
- :mod:`.repository`: one environment's view of a repository, where encoding, checksums
  and reading any object back (WAL included) live once.
"""

from __future__ import annotations

from drkit.storage.base import Backend as Backend
from drkit.storage.base import ObjectInfo as ObjectInfo
from drkit.storage.encoding import CODECS as CODECS
from drkit.storage.encoding import ENCODINGS as ENCODINGS
from drkit.storage.encoding import Encoding as Encoding
from drkit.storage.encoding import encoding_of as encoding_of
from drkit.storage.encoding import plain_name as plain_name
from drkit.storage.factory import open_backend as open_backend
from drkit.storage.repository import Repository as Repository
from drkit.storage.repository import StoredObject as StoredObject
