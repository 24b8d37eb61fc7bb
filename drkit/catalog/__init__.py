"""The backup catalog: which backups an environment's repository holds, and their order.

This is the package's face: callers outside it import from here.  It sits below every
package that reads backups — :mod:`drkit.backup` writes it, :mod:`drkit.wal` reads the
newest base backup's cluster when it binds an archive, :mod:`drkit.restore`,
:mod:`drkit.drill`, :mod:`drkit.status` and the scheduler read it — and it imports only
:mod:`drkit.storage`, :mod:`drkit.lsn` and the modules of the bottom line:

- :mod:`.manifests`: a backup's manifest (the record on disk, written last: a backup
  exists iff its manifest does), the keep records beside it, the listing of
  ``backups/``, and ``latest``/``random``/an id resolved to one manifest;
- :mod:`.order`: the order of backups by what the server says, never the host clock
  (pure).
"""

from __future__ import annotations

from drkit.catalog.manifests import CUSTOM as CUSTOM
from drkit.catalog.manifests import DIRECTORY as DIRECTORY
from drkit.catalog.manifests import ID_FORMAT as ID_FORMAT
from drkit.catalog.manifests import KEEP as KEEP
from drkit.catalog.manifests import KINDS as KINDS
from drkit.catalog.manifests import MANIFEST as MANIFEST
from drkit.catalog.manifests import MANIFEST_FORMAT as MANIFEST_FORMAT
from drkit.catalog.manifests import Hold as Hold
from drkit.catalog.manifests import Listing as Listing
from drkit.catalog.manifests import Manifest as Manifest
from drkit.catalog.manifests import backup_prefix as backup_prefix
from drkit.catalog.manifests import dump_entries as dump_entries
from drkit.catalog.manifests import hold_key as hold_key
from drkit.catalog.manifests import iso as iso
from drkit.catalog.manifests import list_backups as list_backups
from drkit.catalog.manifests import make_backup_id as make_backup_id
from drkit.catalog.manifests import newest_holding as newest_holding
from drkit.catalog.manifests import parse_backup_id as parse_backup_id
from drkit.catalog.manifests import parse_ts as parse_ts
from drkit.catalog.manifests import read_hold as read_hold
from drkit.catalog.manifests import read_manifest as read_manifest
from drkit.catalog.manifests import resolve_backup as resolve_backup
from drkit.catalog.manifests import restorable_span as restorable_span
from drkit.catalog.manifests import scan as scan
from drkit.catalog.manifests import skewed_backups as skewed_backups
from drkit.catalog.manifests import write_manifest as write_manifest
from drkit.catalog.order import SKEW_BOUND as SKEW_BOUND
from drkit.catalog.order import Ordered as Ordered
from drkit.catalog.order import ServerPoint as ServerPoint
from drkit.catalog.order import chronological as chronological
from drkit.catalog.order import describe_skew as describe_skew
from drkit.catalog.order import host_clock_skew as host_clock_skew
from drkit.catalog.order import measured_skew as measured_skew
from drkit.catalog.order import newest as newest
from drkit.catalog.order import precedes as precedes
from drkit.catalog.order import skewed as skewed
