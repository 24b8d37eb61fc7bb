"""Secrets out of text: one masking function, and the logging filter that applies it.

:func:`mask_url` is the one place that knows what a secret looks like in text:

* the password of a URL (``postgresql://user:p@ss@host/db`` masks ``p@ss`` whole: the
  password runs to the *last* ``@`` of the URL, as libpq and urllib read it);
* what libpq quotes of a connection string it cannot parse (``invalid percent-encoded
  token: "p%zz"`` quotes a password with a ``%`` that is no valid escape);
* ``password=`` and ``sslpassword=`` of a conninfo string, quoted or not;
* AWS access key ids (``AKIA…``/``ASIA…``, and whatever follows ``Credential=`` in a
  signed request), secret keys and session tokens named as such
  (``X-Amz-Security-Token: …``, ``aws_secret_access_key=…``);
* age identities (``AGE-SECRET-KEY-1…``, plugin identities);
* the values of the secret environment variables drkit and its libraries read
  (``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``PGPASSWORD``, …), wherever they
  appear, so a secret in a shape not listed above is masked too.

Error lines (``drkit: error: …``) go through it, and :func:`install_log_redaction` puts
:class:`RedactFilter` on every handler of the root logger, so no log record at any level
(botocore's debug log of signed requests included, ``drkit -v``) prints a secret.

This module imports nothing heavy: the WAL commands use it on their lean path.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"

_URL_PASSWORD_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)\S*@", re.IGNORECASE)
_KV_PASSWORD_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_AWS_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b")
_AWS_NAMED_RE = re.compile(
    r"((?:x-amz-security-token|aws_secret_access_key|aws_session_token|aws_access_key_id"
    r"|secret_key|session_token|secretaccesskey|sessiontoken|access_key)"
    r"""['"]?\s*[:=]\s*b?['"]?)[^'"\s,;}&]+""",
    re.IGNORECASE,
)
_AWS_CREDENTIAL_RE = re.compile(r"(Credential=)[^/\s,'\"]+")
_AGE_RE = re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+|AGE-PLUGIN-[0-9A-Za-z-]+")
_LIBPQ_QUOTE_RE = re.compile(
    r"((?:percent-encoded (?:token|value)|URI query parameter|in URI(?: \([^)\n]*\))?)"
    r'\s*:\s*)"[^"\n]*"'
)

#: environment variables whose values are secrets wherever they show up
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "PGPASSWORD",
    "DRKIT_SANITIZE_SALT",
)
#: shorter values are not masked by value (they would mask ordinary words)
_MIN_SECRET_LEN = 6


def mask_url(text: str) -> str:
    """``text`` with every secret drkit knows how to recognise replaced by ``***``."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= _MIN_SECRET_LEN and value in text:
            text = text.replace(value, MASK)
    text = _LIBPQ_QUOTE_RE.sub(r'\1"' + MASK + '"', text)
    text = _URL_PASSWORD_RE.sub(r"\1" + MASK + "@", text)
    text = _KV_PASSWORD_RE.sub(r"\1" + MASK, text)
    text = _AWS_NAMED_RE.sub(r"\1" + MASK, text)
    text = _AWS_CREDENTIAL_RE.sub(r"\1" + MASK, text)
    text = _AWS_KEY_ID_RE.sub(MASK, text)
    return _AGE_RE.sub(MASK, text)


class RedactFilter(logging.Filter):
    """Masks secrets in a record's message, exception and stack text (never drops it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask_url(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_url(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_url(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put one :class:`RedactFilter` on every handler of ``logger`` (default: root)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
