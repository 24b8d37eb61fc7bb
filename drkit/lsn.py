"""WAL positions (LSNs) as PostgreSQL writes them, ``16/B374D848`` — pure, no I/O.

Below every package that reads one: the WAL code (segment arithmetic), the backup
catalog (a manifest's consistent point orders backups) and the restore plan.
"""

from __future__ import annotations

import re

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(lsn: str) -> int:
    """``"16/B374D848"`` -> the 64-bit WAL position."""
    match = _LSN_RE.match(lsn.strip())
    if match is None:
        raise ValueError(f"{lsn!r} is not an LSN (like 0/3000028)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(position: int) -> str:
    """The 64-bit WAL position -> ``"16/B374D848"``."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
