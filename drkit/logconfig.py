"""Where drkit's log records go and how they look: text, or one JSON object per line
(python-json-logger's formatter, every field it emits masked).

Both entry points (the typer CLI and the lean WAL path, :mod:`drkit.wal.entry`)
configure logging here, so every record passes :class:`drkit.redact.RedactFilter`
whatever the level or format.  It lives outside :mod:`drkit.cli` so that the WAL entry,
which PostgreSQL runs, needs nothing of the command-line package.
Logging is for operators and log shippers; what a command prints for people is
``drkit.cli``'s business, and its ``--json`` document is separate from these lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from drkit.redact import install_log_redaction, mask_url

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _masked(value: Any) -> Any:
    """A log field with every secret masked, however deep in lists and mappings."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_url(str(value))


def _masked_text(text: str | list[str]) -> str:
    return mask_url(text if isinstance(text, str) else "\n".join(text))


def json_formatter() -> logging.Formatter:
    """python-json-logger's formatter, one JSON object per line: ``ts`` (RFC 3339, UTC,
    ``Z``), ``level``, ``logger``, ``message``, ``exception`` when there is one, and a
    record's ``extra`` fields.  The redaction filter runs in front of it, on the message
    and the traceback; the formatter reaches further (it formats a traceback itself from
    the exception, a stack, the extras), so everything it emits is masked again here."""
    from pythonjsonlogger.json import JsonFormatter

    class _Formatter(JsonFormatter):
        def formatException(self, ei: Any) -> str:
            return _masked_text(super().formatException(ei))

        def formatStack(self, stack_info: str) -> str:
            return _masked_text(super().formatStack(stack_info))

        def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
            created = log_data.pop("created")
            document = {
                "ts": datetime.fromtimestamp(created, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "level": str(log_data.pop("levelname")).lower(),
                "logger": log_data.pop("name"),
                "message": log_data.pop("message"),
            }
            if "exc_info" in log_data:
                document["exception"] = log_data.pop("exc_info")
            return {key: _masked(value) for key, value in {**document, **log_data}.items()}

    return _Formatter(["created", "levelname", "name", "message"], json_ensure_ascii=False)


def configure_logging(level: str = "warning", fmt: str = "text") -> None:
    """Send log records to stderr at ``level`` in ``fmt`` (replacing earlier handlers)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    install_log_redaction()
