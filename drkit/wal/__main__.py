"""``python -m drkit.wal``: the entries drkit writes for PostgreSQL and starts itself.

The restore_command ``drkit archive-command`` prints, the prefetch helper, the async
archiver's worker and the runtime probe; see :mod:`drkit.wal.entry`.
"""

from __future__ import annotations

import sys

from drkit.wal.entry import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
