"""The run's e-mail map, filled before any row moves.

A ``template`` column that renders e-mail addresses (``user_{id}@example.com``) gives
each address its pseudonym; ``email`` columns and ``replace_pii`` in free text must give
that same pseudonym (:mod:`drkit.sanitize.strategies`).  Tables are copied in any order
and in parallel, so the map cannot be filled as a side effect of copying: before the
copy, each source reads those template columns (and the columns their templates name)
of the *whole* table and feeds the rows through :func:`primer_for`'s transformer, which
registers every address.  A live source uses :func:`prime_from_connection` inside its
snapshot; a backup source :func:`prime_from_backup` (one more data pass over only those
tables).

Memory stays flat: the map (:class:`~drkit.sanitize.pseudomap.PseudonymMap`) keeps up
to 50,000 addresses in memory and the rest in a temporary SQLite file.  Once primed, the
copy's own template rows do not register again (``Compiler.emails_primed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from drkit.errors import DatabaseError
from drkit.pg.connect import first_line
from drkit.sanitize.frombackup import CopyBlock, parse_data_section, restore_from_stream
from drkit.sanitize.plan import Plan, TablePlan
from drkit.sanitize.strategies import Compiler, Keep, Strategy, Template
from drkit.sanitize.transform import RowTransformer
from drkit.storage.repository import Repository, StoredObject


@dataclass(frozen=True)
class Primer:
    """What to read of one table, and the transformer that registers its addresses."""

    table: TablePlan
    columns: list[str]  # COPY column order
    transformer: RowTransformer

    def feed(self, data: bytes) -> None:
        """Complete COPY text lines of ``columns`` (ending with a newline)."""
        if data:
            self.transformer.block(data)


def primer_for(
    tp: TablePlan, compiler: Compiler, order: Sequence[str] | None = None
) -> Primer | None:
    """The primer of a table with a template column that renders e-mails, else None.

    ``order`` is the column order of the lines the source will feed (a backup's COPY
    block has every column); by default only the columns the templates need, in table
    order.
    """
    strategies = {c.name: s for c, s in tp.columns}
    wanted: dict[str, Strategy] = {}
    for name, strategy in strategies.items():
        if isinstance(strategy, Template) and strategy.renders_email():
            for field in strategy.fields():
                wanted.setdefault(field, strategies[field])
            wanted[name] = strategy
    if not wanted:
        return None
    names = list(order) if order is not None else [n for n in strategies if n in wanted]
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise ValueError(f"{tp.key}: the rows lack column {missing[0]}")
    columns: list[tuple[str, Strategy]] = [(n, wanted.get(n, Keep())) for n in names]
    return Primer(tp, names, RowTransformer(columns, compiler))


def primers(plan: Plan, compiler: Compiler) -> list[Primer]:
    found = [primer_for(tp, compiler) for tp in plan.tables]
    return [p for p in found if p is not None]


def prime_from_backup(
    repo: Repository,
    obj: StoredObject | Path,
    pg_restore: str,
    env: dict[str, str],
    plan: Plan,
    compiler: Compiler,
) -> int:
    """Fill ``compiler``'s e-mail map from a logical backup's data; returns rows read.

    One extra ``pg_restore --section=data -t ...`` pass limited to the template tables
    (the archive is streamed again; skipped entirely when no template renders e-mails).
    """
    wanted = {p.table.key: p.table for p in primers(plan, compiler)}
    if not wanted:
        return 0
    args = [pg_restore, "--section=data", "-f", "-"]
    for tp in wanted.values():
        args += ["-t", tp.table.name]
    rows = 0

    def on_block(block: CopyBlock, lines: Iterator[bytes]) -> None:
        nonlocal rows
        tp = wanted.get(f"{block.schema}.{block.table}")
        if tp is None:
            return
        primer = primer_for(tp, compiler, order=block.columns)
        if primer is None:
            return
        batch: list[bytes] = []
        for line in lines:
            batch.append(line if line.endswith(b"\n") else line + b"\n")
            if len(batch) >= 4096:
                primer.feed(b"".join(batch))
                rows += len(batch)
                batch.clear()
        primer.feed(b"".join(batch))
        rows += len(batch)

    with restore_from_stream(
        repo, obj, args, env, "pg_restore (e-mail templates of the backup)", stdout=-1
    ) as proc:
        parse_data_section(proc.stdout, on_block)
    compiler.emails_primed = True
    return rows


def prime_from_connection(conn: psycopg.Connection[Any], plan: Plan, compiler: Compiler) -> int:
    """Fill ``compiler``'s e-mail map from SRC (the caller's snapshot); returns rows read."""
    rows = 0
    for primer in primers(plan, compiler):
        table = primer.table.table
        query = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in primer.columns),
            sql.Identifier(table.schema, table.name),
        )
        carry = b""
        try:
            with conn.cursor().copy(query) as copy:
                for chunk in copy:
                    data = carry + bytes(chunk)
                    cut = data.rfind(b"\n") + 1
                    carry = data[cut:]
                    rows += data.count(b"\n", 0, cut)
                    primer.feed(data[:cut])
        except psycopg.Error as exc:
            raise DatabaseError(
                f"reading the e-mail templates of {table.key}: {first_line(exc)}"
            ) from None
        primer.feed(carry)
    compiler.emails_primed = True
    return rows
