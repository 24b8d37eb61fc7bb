"""PostgreSQL COPY text format: one field's escaping and unescaping.

Rows are lines, fields are separated by tabs, NULL is ``\\N``.  PostgreSQL writes only
``\\\\ \\b \\f \\n \\r \\t \\v`` as escapes, so keeping untouched fields as raw bytes
and decoding only the fields a strategy needs is safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable

NULL = b"\\N"

_UNESCAPES = {
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_NEEDS_ESCAPE = re.compile(r"[\\\n\r\t]")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _unescape_one(match: re.Match[str]) -> str:
    token = match.group(1)
    if token in _UNESCAPES:
        return _UNESCAPES[token]
    if token[0] == "x" and len(token) > 1:
        return chr(int(token[1:], 16))
    if token[0] in "01234567":
        return chr(int(token, 8) & 0xFF)
    return token


def unescape(field: bytes) -> str:
    """A COPY text field (not ``\\N``) as the value it stands for."""
    text = field.decode("utf-8")
    if "\\" not in text:
        return text
    return _ESCAPE_RE.sub(_unescape_one, text)


def escape_text(value: str) -> str:
    """A value in COPY text form (as a str)."""
    # four substring tests cost half of one regex search on the short values of a row
    if not ("\\" in value or "\n" in value or "\r" in value or "\t" in value):
        return value
    return _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], value)


def escape(value: str | None) -> bytes:
    """A value (or NULL) as a COPY text field."""
    if value is None:
        return NULL
    return escape_text(value).encode("utf-8")


def field_fn(fn: Callable[[str], str | None]) -> Callable[[bytes], bytes]:
    """``fn`` over COPY text fields: a field unescaped, through ``fn``, escaped again;
    ``\\N`` stays ``\\N`` (``fn`` never sees NULL) and ``fn`` returning None is ``\\N``.
    The same bytes as ``escape(fn(unescape(field)))``, with the common case (nothing to
    unescape or escape) done in place, without those calls for every field of a row."""

    def field(raw: bytes) -> bytes:
        if raw == NULL:
            return raw
        text = raw.decode("utf-8")
        if "\\" in text:  # (a str test: ``in`` on bytes costs a buffer per call)
            text = _ESCAPE_RE.sub(_unescape_one, text)
        out = fn(text)
        if out is None:
            return NULL
        if "\\" in out or "\n" in out or "\r" in out or "\t" in out:
            return escape_text(out).encode("utf-8")
        return out.encode("utf-8")

    return field
