"""Looking for personal data: in what a copy holds, and in what a schema suggests.

- :mod:`.leakscan`: the leak scan of a built copy, every column of every type and the
  catalog, for the originals the strategies replaced (exit 3 on a hit, never the value);
- :mod:`.leakfilter`: its bounded-memory substring search over any number of originals;
  its compiled loops in :mod:`.leakloops` (numba is loaded when they first run), and
  the shape of a stored form both share in :mod:`.leakshape`;
- :mod:`.catalog`: the catalog texts a reader of a database can see (comments, defaults,
  view and function bodies, policies, object names, large objects);
- :mod:`.pii`: personal data guessed from a column's name and type (``sanitize check``
  warnings, ``sanitize init`` drafts).
"""

from __future__ import annotations

from drkit.sanitize.scan.leakscan import LeakIndex as LeakIndex
from drkit.sanitize.scan.leakscan import LeakReport as LeakReport
from drkit.sanitize.scan.leakscan import LeakScan as LeakScan
from drkit.sanitize.scan.leakscan import Searcher as Searcher
from drkit.sanitize.scan.leakscan import scan_database as scan_database
from drkit.sanitize.scan.pii import Guess as Guess
from drkit.sanitize.scan.pii import guess_strategy as guess_strategy
from drkit.sanitize.scan.pii import pii_kind as pii_kind
