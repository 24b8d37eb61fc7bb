"""Connection strings libpq would misread, refused before anything reads them.

A password written as it is into a url (``postgresql://app:p/ss@db/x``) or unquoted into
a key=value string (``password=p ss``) is cut by libpq elsewhere than its author meant:
a piece of it becomes a host, a port, a database name or a parameter, which messages
show, or libpq quotes it in its complaint.  :func:`check_url` refuses such strings by
their shape alone and never shows them.  No import here is heavy: policies are checked
on the WAL commands' lean path too.
"""

from __future__ import annotations

import re

from drkit.errors import UsageError

_URL_SCHEMES = ("postgresql://", "postgres://")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_KEY = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=\s*")


def check_url(dsn: str) -> None:
    """Refuse (exit 2) a url whose user or password holds a character a url must escape
    (``@ / ? #``, white space, a ``%`` that is no ``%XX`` escape), and a key=value string
    with a value libpq would split (white space outside quotes)."""
    text = dsn.strip()
    if text.lower().startswith(_URL_SCHEMES):
        userinfo, at, _ = text.split("://", 1)[1].split("?", 1)[0].rpartition("@")
        if at and (
            any(c in userinfo for c in "/?#@")
            or any(c.isspace() for c in userinfo)
            or _BAD_ESCAPE.search(userinfo)
        ):
            raise UsageError(
                "invalid database url: its user or password holds a character a url must "
                "escape (write @ / ? # % and spaces as %40 %2F %3F %23 %25 %20), or use a "
                "key=value connection string"
            )
    elif "=" in text and not _pairs(text):
        raise UsageError(
            "invalid database url: a key=value connection string with a value libpq would "
            "split (quote values holding spaces or quotes: password='...', with \\' for ')"
        )


def _pairs(text: str) -> bool:
    """Whether ``text`` is ``key=value`` pairs as libpq reads them (values unquoted
    without white space, or single-quoted with backslash escapes)."""
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            return True
        key = _KEY.match(text, pos)
        if key is None:
            return False
        pos = key.end()
        if pos < len(text) and text[pos] == "'":
            pos += 1
            while pos < len(text) and text[pos] != "'":
                pos += 2 if text[pos] == "\\" else 1
            if pos >= len(text):
                return False  # unterminated quote
            pos += 1
        else:
            while pos < len(text) and not text[pos].isspace():
                pos += 2 if text[pos] == "\\" else 1
        if pos < len(text) and not text[pos].isspace():
            return False
    return True
