"""Where drkit's log records go and how they look: text or one JSON object per line.

Both entry points (the typer CLI and the lean WAL path) configure logging here, so
every record passes :class:`drkit.redact.RedactFilter` whatever the level or format.
Logging is for operators and log shippers; what a command prints for people is
``drkit.cli``'s business, and its ``--json`` document is separate from these lines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from drkit.redact import install_log_redaction

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC, ``Z``), ``level``, ``logger``,
    ``message``, and ``exception`` when there is one.  Runs after the redaction filter."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        return json.dumps(document, ensure_ascii=False)


def configure_logging(level: str = "warning", fmt: str = "text") -> None:
    """Send log records to stderr at ``level`` in ``fmt`` (replacing earlier handlers)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    install_log_redaction()
