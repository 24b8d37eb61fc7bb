"""drkit: backups, point-in-time recovery, sanitized copies and restore drills for PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"

#: what ``drkit --version`` prints
VERSION_LINE = f"drkit {__version__}"
