"""``drkit sanitize init SRC``: a complete rules file drafted from SRC's schema.

Every table and column is listed; columns that look like personal data get a strategy,
the rest ``keep``; a comment marks every guess for a person to review.
:func:`init_rules` drafts them (and writes them, never over a file) and returns the
command's ``--json`` document; :func:`review_draft` is the draft ``sanitize scan`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drkit.config import Policy
from drkit.documents import Document, described
from drkit.errors import UsageError
from drkit.pg import connect
from drkit.sanitize.guards import database_dsn
from drkit.sanitize.rules import Rules
from drkit.sanitize.scan import guess_strategy
from drkit.sanitize.schema import Schema, read_schema


def lower_environment(src: Policy) -> str:
    """The usual target: PROD -> STAGING -> DEV."""
    return {"prod": "staging", "staging": "dev", "test": "dev"}.get(src.environment, "dev")


def _yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value.isidentifier() else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return json.dumps(value)


def _key(name: str) -> str:
    return name if name.isidentifier() else json.dumps(name)


def draft_text(schema: Schema, src: str, dst: str) -> str:
    lines = [
        f"# Drafted by `drkit sanitize init {src}`: review every '# guessed' line before use.",
        "# Strategies: keep, nullify, constant, template, fake, hash, mask, email,",
        "# replace_pii, json (see docs/sanitize-rules.md).",
        "version: 1",
        f"from: {src}",
        f"to: {dst}",
        "salt: ${DRKIT_SANITIZE_SALT}",
        "defaults:",
        "  unlisted_tables: fail",
        "  unlisted_columns: fail",
        "tables:",
    ]
    for table in schema.tables.values():
        name = table.name if table.schema == "public" else f"{table.schema}.{table.name}"
        lines.append(f"  {_key(name)}:")
        lines.append("    columns:")
        for column in table.copy_columns():
            guess = guess_strategy(table, column)
            text = f"      {_key(column.name)}: {_yaml_value(guess.strategy)}"
            if guess.comment:
                text += f"    # {guess.comment}"
            lines.append(text)
    return "\n".join(lines) + "\n"


def draft_rules(src: Policy, dst: str | None = None) -> str:
    with connect(database_dsn(src), autocommit=False) as conn:
        conn.read_only = True
        schema = read_schema(conn)
        conn.rollback()
    target = dst or lower_environment(src)
    return draft_text(schema, src.name, target)


def init_rules(src: Policy, out: Path | None = None) -> SanitizeInitDocument:
    """``sanitize init``: the rules drafted from SRC's schema and, with ``out``, written
    there (a new file: one that exists is never replaced)."""
    text = draft_rules(src)
    if out is not None:
        if out.exists():
            raise UsageError(f"{out} exists: choose another --out or remove it first")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return SanitizeInitDocument(ok=True, out=str(out) if out is not None else None, rules=text)


class SanitizeInitDocument(Document):
    """`drkit sanitize init SRC [--out FILE] --json`"""

    out: str | None = described("where the draft was written")
    rules: str = described("the drafted rules file (YAML)")


def review_draft(findings: dict[str, dict[str, int]], rules: Rules) -> str:
    """A draft of rules for the columns ``sanitize scan`` found personal data in: a
    strategy for each (``replace_pii`` where only addresses were found, else
    ``nullify``) and, commented out, the review a person may record instead."""
    lines = [
        "# Drafted by `drkit sanitize scan`: personal data found by content in columns the",
        f"# rules ({rules.source}) keep.  Merge what you choose into the rules file: mask",
        "# the column, or, after a person's review, keep it with the reason:",
        "#   COLUMN: {strategy: keep, pii: none}  # why this is not personal data",
        "tables:",
    ]
    by_table: dict[str, list[tuple[str, dict[str, int]]]] = {}
    for place, kinds in sorted(findings.items()):
        schema, _, rest = place.partition(".")
        table, _, column = rest.rpartition(".")
        if not table or not column or " " in place:
            continue  # a catalog object: fixed in SRC, not in the rules
        name = table if schema == "public" else f"{schema}.{table}"
        by_table.setdefault(name, []).append((column, kinds))
    for name, columns in by_table.items():
        lines.append(f"  {_key(name)}:")
        lines.append("    columns:")
        for column, kinds in columns:
            found = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
            addresses = set(kinds) <= {"email", "phone", "ip"}
            strategy: Any = (
                {"strategy": "replace_pii", "kinds": sorted(kinds)} if addresses else "nullify"
            )
            lines.append(f"      {_key(column)}: {_yaml_value(strategy)}    # found: {found}")
    return "\n".join(lines) + "\n"
