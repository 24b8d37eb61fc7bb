"""Where a sanitize run's schema and rows come from.

- :mod:`.base`: the :class:`Source` protocol the orchestrator calls, and what it asks
  for (:class:`Read`) and gets (:class:`Rows`);
- :mod:`.live`: SRC's database, in one exported snapshot (:func:`open_live`);
- :mod:`.backup`: a logical backup in SRC's repository (``--from-backup``), read through
  :mod:`.archive` (``pg_restore`` over the stored dump, its data section parsed).
  ``open_backup`` is imported from there by the run that needs it: it brings the
  repository and backup catalog code, which a live run does without.
"""

from __future__ import annotations

from drkit.sanitize.sources.base import Read as Read
from drkit.sanitize.sources.base import Rows as Rows
from drkit.sanitize.sources.base import SequenceValue as SequenceValue
from drkit.sanitize.sources.base import Source as Source
from drkit.sanitize.sources.live import open_live as open_live
