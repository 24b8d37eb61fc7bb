"""The run's e-mail map, filled before any row is written.

A ``template`` column that renders e-mail addresses (``user_{id}@example.com``) gives
each address its pseudonym; ``email`` columns and ``replace_pii`` in free text must give
that same pseudonym (:mod:`drkit.sanitize.strategies.compiler`).  Tables are copied in
any order and in parallel, so the map cannot be filled as a side effect of copying: it
is filled from those template columns (and the columns their templates name) of the
*whole* table, before anything reads it.  Where the source opens its reads in any order
(live), the originals pass does it: it reads those tables whole first, registering
every address as it goes (:class:`~drkit.sanitize.transform.RowOriginals`), and the
tables whose strategies read the map (``Strategy.reads_email_map``) only once they are
done.  Otherwise (a backup source, or a template table that reads the map itself) the
rows go through the :class:`Primer`'s reader before the originals pass: a live source
reads just those columns in its snapshot; a backup source makes one more data pass over
only those tables (its rows carry every column: :func:`primer_for` takes their order).

Memory stays flat: the map (:class:`~drkit.sanitize.strategies.pseudomap.PseudonymMap`)
keeps up to 50,000 addresses in memory and the rest in a temporary SQLite file.  Once
primed, the copy's own template rows do not register again (``Compiler.emails_primed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drkit.sanitize.plan import Plan, TablePlan
from drkit.sanitize.pump import pump
from drkit.sanitize.strategies import Compiler, Keep, Strategy, Template
from drkit.sanitize.transform import RowOriginals, RowTransformer, row_originals


@dataclass(frozen=True)
class Primer:
    """What to read of one table, and the reader that registers its addresses (the
    originals pass's own: its originals reach the sink too)."""

    table: TablePlan
    columns: list[str]  # COPY column order
    transformer: RowOriginals | RowTransformer

    def feed(self, data: bytes | Iterable[bytes | bytearray | memoryview]) -> int:
        """COPY text lines of ``columns`` (whole lines, or chunks cut anywhere); returns
        the rows read."""
        chunks = [data] if isinstance(data, bytes) else data
        return pump(chunks, None, self.transformer, self.table.key, None)


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
    return Primer(tp, names, row_originals(columns, compiler))


def primers(plan: Plan, compiler: Compiler) -> list[Primer]:
    found = [primer_for(tp, compiler) for tp in plan.tables]
    return [p for p in found if p is not None]
