"""Pinning the columns of ``copy: true`` tables into the rules file.

``copy: true`` copies a table's columns as they are, so the rules must say *which*
columns: ``vulnerability: {copy: true, columns: [id, cve, score]}``.  A column that is
not in that list is schema drift like any unlisted column: ``sanitize check`` reports it
and, under ``unlisted_columns: fail``, the run stops (exit 3) before any row moves.

A table written as plain ``{copy: true}`` (or ``table: copy``) has not been pinned yet:
the first ``sanitize check`` or run that meets it writes the table's columns of that
moment into the rules file (comments and layout kept, the file replaced atomically) and
says so; from then on a new column needs a person to add it.  ``sanitize init`` drafts every
column, so its files start pinned.  When the file cannot be written the run refuses
(exit 3) with the line to add by hand: an unpinned table is never copied unpinned.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString

from drkit.errors import CheckFailed
from drkit.sanitize.rules.model import Rules

log = logging.getLogger(__name__)


def pin_line(columns: list[str]) -> str:
    return "columns: [" + ", ".join(columns) + "]"


def settle_pins(rules: Rules, unpinned: dict[str, list[str]]) -> dict[str, list[str]]:
    """Write the pins of the unpinned ``copy: true`` tables (key -> the columns they have
    now) into the rules file; returns what it pinned.

    Raises :class:`~drkit.errors.CheckFailed` when the rules file cannot take them.
    """
    if not unpinned:
        return {}
    by_name = {rules.tables[key].name: columns for key, columns in unpinned.items()}
    try:
        write_pins(Path(rules.source), by_name)
    except (OSError, YAMLError, ValueError) as exc:
        name, columns = next(iter(by_name.items()))
        raise CheckFailed(
            f"{rules.source}: tables.{name}: copy: true has no pinned column list and the "
            f"file cannot be updated ({type(exc).__name__}): add `{pin_line(columns)}` "
            "to it, then rerun"
        ) from None
    for key, columns in unpinned.items():
        log.warning("pinned %s's columns in %s: %s", key, rules.source, ", ".join(columns))
    return dict(unpinned)


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# words YAML 1.1 (PyYAML, which reads rules files) takes for booleans or null
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _scalar(name: str) -> str:
    """A column name as a YAML scalar that PyYAML reads back as that very string."""
    if _PLAIN.fullmatch(name) and name.lower() not in _YAML11_WORDS:
        return name
    quoted: str = SingleQuotedScalarString(name)
    return quoted


def write_pins(path: Path, tables: dict[str, list[str]]) -> None:
    """Add ``columns: [...]`` to each named ``copy: true`` table of the file at ``path``."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    text = path.read_text(encoding="utf-8")
    doc = yaml.load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
        raise ValueError("no tables mapping")
    for name, columns in tables.items():
        entry = doc["tables"].get(name)
        if isinstance(entry, str) and entry == "copy":
            entry = CommentedMap([("copy", True)])
            entry.fa.set_flow_style()
            doc["tables"][name] = entry
        if not isinstance(entry, dict) or entry.get("copy") is not True:
            raise ValueError(f"tables.{name} is not a copy: true table")
        if entry.get("columns"):
            raise ValueError(f"tables.{name} already has columns")
        seq = CommentedSeq([_scalar(c) for c in columns])
        seq.fa.set_flow_style()
        entry["columns"] = seq
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.dump(doc, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        if os.geteuid() == 0:  # keep the owner when root updates someone's file
            info = path.stat()
            os.chown(tmp, info.st_uid, info.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
