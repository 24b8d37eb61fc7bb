"""``drkit wal-search``: the committed transactions that touched one table in the archived
WAL, each with the restore flags that stop just before it.

A table is known by its relation file (``relfilenode``) in its database, never by its
name: the name is looked up once, in the relation catalog a base backup recorded
(``manifest.extra["relations"]``, read with the LSN it holds at), and from there the
table's file is followed through the WAL, segment by segment, as pg_waldump decodes it:

- data: heap records (``INSERT``, ``MULTI_INSERT``, ``UPDATE``, ``HOT_UPDATE``,
  ``DELETE``) on the table's file count rows, per top-level transaction (a
  subtransaction's records join its parent's at the parent's commit); aborted
  transactions are left out;
- ``DROP TABLE``: the commit drops the table's file and its statistics entry (the
  table's oid in the commit's "dropped stats", PostgreSQL 15+); the search ends there;
- a rewrite gives the table a new file in the transaction that drops the old one.
  ``TRUNCATE`` keeps the table's oid and files the new one; ``VACUUM FULL``, ``CLUSTER``
  and a rewriting ``ALTER TABLE`` build a transient table (its own oid, whose file
  becomes the table's, and whose statistics entry the commit drops).  The new file is
  taken as **the first relation file the transaction created** that it did not also
  drop: PostgreSQL creates the new heap before its TOAST table and indexes.  That is a
  heuristic, so it is refused rather than guessed when the transaction also dropped the
  file of another table of the catalog, or invalidated another table of the catalog
  (its commit's relcache messages name relations by oid, which survives rewrites: one
  ``TRUNCATE a, b``, a foreign key rebuilt by ``ALTER TABLE``), or dropped the table's
  file while creating none.  Tables created after the catalog are unknown to it: a
  transaction that created one before rewriting the table is not recognised.  Searching from a newer base backup (``--since``) starts
  from that backup's own catalog instead.

Segments are fetched one at a time (with the next one beside it, for a record that
crosses into it) into a private temporary directory, decoded and deleted: disk holds two
segments, memory the transactions in flight that touched the table.  A missing segment
between the start and the end of the unbroken archive is exit 3, never a shorter answer.

:func:`search_table` returns a :class:`SearchResult`; its ``document()`` is the
command's ``--json`` document (:class:`WalSearchDocument`).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drkit.backup import (
    CATALOG_KEY,
    WalIndex,
    backup_on_timeline,
    reach_on_timeline,
    segment_on_path,
    timeline_history,
)
from drkit.catalog import Manifest, iso, list_backups
from drkit.documents import Document, Shape, Timestamp, described
from drkit.errors import CheckFailed, OperationError, UsageError
from drkit.lsn import format_lsn, parse_lsn
from drkit.restore.plan import choose_timeline, consistent_point, size_of
from drkit.storage import Repository
from drkit.wal import (
    TimelineSwitch,
    download,
    fetch_attempts,
    timeline_at,
)

log = logging.getLogger(__name__)

#: the operations a transaction is reported with (``--op`` filters on all but rewrite)
OPERATIONS = ("insert", "update", "delete", "truncate", "drop")
#: a rewrite that kept the rows (VACUUM FULL, CLUSTER, ALTER TABLE ... TYPE)
REWRITE = "rewrite"
#: pg_default's oid: the tablespace of a file under base/
DEFAULT_TABLESPACE = 1663
#: above this many relation files to follow in one segment, it is decoded whole
MAX_FILTERED_FILES = 8
#: relation kinds a catalog records; a search is of a table with storage
TABLE_KINDS = ("r", "m")

_RECORD_RE = re.compile(
    r"^rmgr: (\w+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), "
    r"prev [0-9A-F]+/[0-9A-F]+, desc: (.*)$"
)
_BLOCK_REL_RE = re.compile(r"blkref #0: rel \d+/(\d+)/(\d+)")
_CREATE_RE = re.compile(r"^CREATE (?:base|pg_tblspc/(\d+)/[^/]+)/(\d+)/(\d+)")
_TUPLES_RE = re.compile(r"(?:ntuples: (\d+)|(\d+) tuples)")
_COMMIT_RE = re.compile(r"^(COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([\w/+-]+)")
_RELS_RE = re.compile(r"rels: ([^;]*)")
_STATS_RE = re.compile(r"dropped stats: ([^;]*)")
_SUBXACTS_RE = re.compile(r"subxacts: ([\d ]+)")
_RELCACHE_RE = re.compile(r"\brelcache (\d+)")


# ---------------------------------------------------------------------------
# The relation catalog a base backup records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    oid: int
    relfilenode: int
    name: str  # schema.name
    kind: str
    toast: int  # the TOAST table's oid, 0 without one
    tablespace: int = DEFAULT_TABLESPACE  # where its file is (pg_default: 1663)


@dataclass(frozen=True)
class TableRef:
    """A table of one database, as a base backup's catalog knew it."""

    database: str
    database_oid: int
    relation: Relation
    catalog_lsn: str
    #: the files of every table of that database in the catalog (for the ambiguity check)
    table_files: frozenset[int]
    #: the oids of every table, TOAST and partitioned table of that database in the
    #: catalog: an oid survives rewrites, so it names another table at any time
    table_oids: frozenset[int] = frozenset()


def catalog_of(manifest: Manifest) -> dict[str, Any] | None:
    doc = manifest.extra.get(CATALOG_KEY)
    return doc if isinstance(doc, dict) else None


def find_table(manifest: Manifest, table: str) -> TableRef:
    """``table`` (schema.name) in the relation catalog ``manifest`` recorded."""
    doc = catalog_of(manifest)
    if doc is None:
        raise CheckFailed(f"backup {manifest.id} records no relation catalog")
    found: list[TableRef] = []
    for database, entry in sorted(dict(doc.get("databases", {})).items()):
        rels = [Relation(*row) for row in entry["relations"]]
        files = frozenset(r.relfilenode for r in rels if r.kind in TABLE_KINDS)
        oids = frozenset(r.oid for r in rels)
        found += [
            TableRef(database, int(entry["oid"]), r, str(doc["lsn"]), files, oids)
            for r in rels
            if r.name == table and r.kind in (*TABLE_KINDS, "p")
        ]
    if not found:
        raise CheckFailed(
            f"table {table} is not in the relation catalog of backup {manifest.id} (databases: "
            f"{', '.join(sorted(doc.get('databases', {}))) or 'none'}): check the name "
            "(schema.name), or search from a base backup taken after the table was created"
        )
    if len(found) > 1:
        raise CheckFailed(
            f"table {table} exists in databases {', '.join(f.database for f in found)} of "
            f"backup {manifest.id}: wal-search cannot tell which one is meant"
        )
    ref = found[0]
    if ref.relation.kind == "p":
        raise UsageError(
            f"{table} is a partitioned table, which holds no rows itself: search its partitions"
        )
    return ref


# ---------------------------------------------------------------------------
# What a search returns
# ---------------------------------------------------------------------------


@dataclass
class Found:
    """One committed transaction that touched the table."""

    xid: int
    committed_at: datetime
    timeline: int
    first_lsn: str
    commit_lsn: str
    operations: dict[str, int]  # operation -> rows (truncate/drop/rewrite: 1)
    relfilenode: int

    @property
    def restore_flags(self) -> str:
        return f"--target-xid {self.xid} --exclusive"

    def document(self) -> WalSearchTransaction:
        return WalSearchTransaction(
            xid=self.xid,
            committed_at=iso(self.committed_at),
            timeline=self.timeline,
            first_lsn=self.first_lsn,
            commit_lsn=self.commit_lsn,
            operations=dict(self.operations),
            relfilenode=self.relfilenode,
            restore_flags=self.restore_flags,
        )


@dataclass
class SearchResult:
    environment: str
    table: str
    database: str
    backup: str
    timeline: int
    searched_from: str  # LSN
    searched_to: str  # LSN: the end of the last segment read
    segments: int
    transactions: list[Found] = field(default_factory=list)
    #: the table's files, in order, each with the transaction that gave it (None: the catalog)
    files: list[tuple[int, int | None]] = field(default_factory=list)
    dropped_by: int | None = None

    def document(self) -> WalSearchDocument:
        return WalSearchDocument(
            ok=True,
            environment=self.environment,
            table=self.table,
            database=self.database,
            backup=self.backup,
            timeline=self.timeline,
            searched_from=self.searched_from,
            searched_to=self.searched_to,
            segments=self.segments,
            relfilenodes=[WalSearchFile(relfilenode=f, since_xid=x) for f, x in self.files],
            dropped_by=self.dropped_by,
            transactions=[t.document() for t in self.transactions],
        )


class WalSearchTransaction(Shape):
    xid: int = described("the transaction ID (64-bit, with its epoch): what --target-xid takes")
    committed_at: Timestamp = described("the commit record's time (the server's clock)")
    timeline: int = described("the timeline its commit record is on")
    first_lsn: str = described(
        "where its first record that touched the table (or created a file) is"
    )
    commit_lsn: str = described("where its commit record is")
    operations: dict[str, int] = described(
        "what it did to the table: insert, update, delete (rows), truncate, drop, rewrite "
        "(VACUUM FULL, CLUSTER, a rewriting ALTER TABLE: rows kept) (1 each)"
    )
    relfilenode: int = described("the table's relation file the transaction found")
    restore_flags: str = described(
        "the drkit restore flags that recover to just before it: --target-xid X --exclusive"
    )


class WalSearchFile(Shape):
    relfilenode: int
    since_xid: int | None = described(
        "the transaction that gave the table this file (null: the backup's catalog)"
    )


class WalSearchDocument(Document):
    """`drkit wal-search ENV --table S.T --json`: the committed transactions that touched
    the table in the archived WAL of production's timeline, oldest first"""

    environment: str
    table: str = described("schema.name, as given")
    database: str = described("the database holding it, from the backup's relation catalog")
    backup: str = described("the base backup whose relation catalog the search started from")
    timeline: int = described("the timeline followed (production's)")
    searched_from: str = described("the LSN the search started at (the catalog's)")
    searched_to: str = described("the end of the last WAL segment read")
    segments: int = described("WAL segments decoded")
    relfilenodes: list[WalSearchFile] = described("the table's relation files, in order")
    dropped_by: int | None = described("the transaction that dropped the table, if one did")
    transactions: list[WalSearchTransaction]


# ---------------------------------------------------------------------------
# Following the table through pg_waldump's records
# ---------------------------------------------------------------------------


@dataclass
class _Pending:
    """The records of one (sub)transaction in flight."""

    first_lsn: int
    ops: dict[int, Counter[str]] = field(default_factory=dict)  # relfilenode -> op -> rows
    created: list[int] = field(default_factory=list)  # relation files it created, in order


class Follower:
    """The state of one search: the table's current file, the transactions in flight."""

    def __init__(
        self, ref: TableRef, full_xid_base: int, timeline_of: Callable[[int], int]
    ) -> None:
        self.ref = ref
        self.db = ref.database_oid
        self.file: int | None = ref.relation.relfilenode
        self.pending: dict[int, _Pending] = {}
        self.found: list[Found] = []
        self.files: list[tuple[int, int | None]] = [(ref.relation.relfilenode, None)]
        self.dropped_by: int | None = None
        self.base = full_xid_base
        self.timeline_of = timeline_of
        #: the tablespace of each relation file followed or created
        self.tablespace: dict[int, int] = {ref.relation.relfilenode: ref.relation.tablespace}

    def files_to_watch(self, control: list[str]) -> list[tuple[int, int]] | None:
        """(tablespace, file) of every relation file whose heap records this segment may
        need: the table's, those created earlier by transactions still in flight, and
        those created in the segment (``control``: its transaction and storage records).
        None: too many, decode the segment whole."""
        files = {} if self.file is None else {self.file: self.tablespace[self.file]}
        for pending in self.pending.values():
            files.update((r, self.tablespace.get(r, DEFAULT_TABLESPACE)) for r in pending.created)
        for line in control:
            if line.startswith("rmgr: Storage"):
                record = _RECORD_RE.match(line)
                created = _CREATE_RE.match(record.group(4)) if record else None
                if created is not None and int(created.group(2)) == self.db:
                    files[int(created.group(3))] = int(created.group(1) or DEFAULT_TABLESPACE)
        if len(files) > MAX_FILTERED_FILES:
            return None
        return sorted((spc, rel) for rel, spc in files.items())

    def full_xid(self, xid: int) -> int:
        """The 64-bit transaction ID (what --target-xid compares) of a 32-bit one, by the
        epoch of the catalog's backup: WAL records carry 32 bits."""
        epoch = self.base >> 32
        full = (epoch << 32) | xid
        if full < self.base - 2**31:
            full += 2**32
        return full

    def _entry(self, xid: int, lsn: int) -> _Pending:
        entry = self.pending.get(xid)
        if entry is None:
            entry = self.pending[xid] = _Pending(lsn)
        return entry

    def feed(self, line: str) -> None:
        """One line of pg_waldump's output."""
        if line.startswith("rmgr: Heap"):
            found = _BLOCK_REL_RE.search(line)
            if found is None or int(found.group(1)) != self.db:
                return
            rel = int(found.group(2))
            if rel != self.file and not self._created_in_flight(rel):
                return
            record = _RECORD_RE.match(line)
            if record is None:
                return
            op, rows = _heap_op(record.group(1), record.group(4))
            if op is None:
                return
            xid, lsn = int(record.group(2)), parse_lsn(record.group(3))
            counts = self._entry(xid, lsn).ops.setdefault(rel, Counter())
            counts[op] += rows
        elif line.startswith("rmgr: Storage"):
            record = _RECORD_RE.match(line)
            if record is None:
                return
            created = _CREATE_RE.match(record.group(4))
            xid = int(record.group(2))
            if created is None or int(created.group(2)) != self.db or xid == 0:
                return
            rel = int(created.group(3))
            self.tablespace[rel] = int(created.group(1) or DEFAULT_TABLESPACE)
            self._entry(xid, parse_lsn(record.group(3))).created.append(rel)
        elif line.startswith("rmgr: Transaction"):
            record = _RECORD_RE.match(line)
            if record is None:
                return
            self._end(int(record.group(2)), record.group(3), record.group(4))

    def _other_tables(self, desc: str) -> set[int]:
        """The catalog's other tables a commit invalidated (its relcache messages name
        relations by oid): a transaction that changed them too may have rewritten them."""
        own = {self.ref.relation.oid, self.ref.relation.toast}
        named = {int(oid) for oid in _RELCACHE_RE.findall(desc)}
        return (named & self.ref.table_oids) - own

    def _created_in_flight(self, rel: int) -> bool:
        return any(rel in p.created for p in self.pending.values())

    def _end(self, xid: int, lsn_text: str, desc: str) -> None:
        ended = _COMMIT_RE.match(desc)
        if ended is None:
            return  # PREPARE, COMMIT_PREPARED, ASSIGNMENT...: not followed
        subs = _SUBXACTS_RE.search(desc)
        members = [xid, *(int(s) for s in subs.group(1).split())] if subs else [xid]
        parts = [p for p in (self.pending.pop(m, None) for m in members) if p is not None]
        if ended.group(1) == "ABORT" or self.file is None:
            return
        dropped = _dropped_rels(desc, self.db)
        stats = _dropped_stats(desc, self.db)
        if not parts and self.file not in dropped:
            return
        ops: Counter[str] = Counter()
        for part in parts:
            ops.update(part.ops.get(self.file, Counter()))
        created = [r for p in parts for r in p.created if r not in dropped]
        old = self.file
        if self.file in dropped:
            if self.ref.relation.oid in stats:
                ops = Counter({k: v for k, v in ops.items()})
                ops["drop"] = 1
                self.file = None
                self.dropped_by = self.full_xid(xid)
            else:
                others = ((dropped & self.ref.table_files) - {self.file}) | self._other_tables(desc)
                if not created or others:
                    raise CheckFailed(
                        f"transaction {self.full_xid(xid)} (commit at {lsn_text}) replaced the file "
                        f"of {self.ref.relation.name} and "
                        + (
                            f"of {len(others)} other table(s) at once"
                            if others
                            else "created none: its new file is unknown"
                        )
                        + "; wal-search cannot tell which new file is the table's: search from a "
                        "base backup taken after it (--since)"
                    )
                new = created[0]
                if new in stats:  # a transient table became the table: the rows were kept
                    ops[REWRITE] = 1
                else:
                    ops["truncate"] = 1
                    for part in parts:  # rows written after the truncate, same transaction
                        ops.update(part.ops.get(new, Counter()))
                self.file = new
                self.files.append((new, self.full_xid(xid)))
        if not ops:
            return
        first = min(p.first_lsn for p in parts) if parts else parse_lsn(lsn_text)
        when = _commit_time(ended.group(2), ended.group(3))
        commit_lsn = parse_lsn(lsn_text)
        self.found.append(
            Found(
                self.full_xid(xid),
                when,
                self.timeline_of(commit_lsn),
                format_lsn(first),
                format_lsn(commit_lsn),
                dict(sorted(ops.items())),
                old,
            )
        )


def _heap_op(rmgr: str, desc: str) -> tuple[str | None, int]:
    """(operation, rows) of one heap record's description; (None, 0) for the others."""
    word = desc.split(" ", 1)[0]
    if rmgr == "Heap":
        if word in ("INSERT", "INSERT+INIT"):
            return "insert", 1
        if word in ("UPDATE", "HOT_UPDATE", "UPDATE+INIT", "HOT_UPDATE+INIT"):
            return "update", 1
        if word == "DELETE":
            return ("delete", 1) if "SUPER" not in desc else (None, 0)  # speculative abort
        return None, 0
    if word.startswith("MULTI_INSERT"):
        found = _TUPLES_RE.search(desc)
        return "insert", int(next(g for g in found.groups() if g)) if found else 1
    return None, 0


def _dropped_rels(desc: str, db: int) -> set[int]:
    found = _RELS_RE.search(desc)
    out: set[int] = set()
    for path in found.group(1).split() if found else []:
        parts = path.split("/")
        if len(parts) >= 3 and parts[-2] == str(db):
            out.add(int(parts[-1]))
    return out


def _dropped_stats(desc: str, db: int) -> set[int]:
    found = _STATS_RE.search(desc)
    out: set[int] = set()
    for item in found.group(1).split() if found else []:
        parts = item.split("/")
        if len(parts) == 3 and parts[1] == str(db):
            out.add(int(parts[2]))
    return out


def _commit_time(stamp: str, zone: str) -> datetime:
    if zone != "UTC":
        raise OperationError(f"pg_waldump printed commit times in {zone}, not UTC")
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)


# ---------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------


def choose_anchor(backups: list[Manifest], since: datetime | None) -> Manifest:
    """The base backup whose catalog a search starts from: the newest with a catalog
    consistent at or before ``since`` (refused when there is none: the search would
    start later than asked), or without ``since`` the oldest with one."""
    with_catalog = sorted(
        (b for b in backups if catalog_of(b) is not None), key=lambda b: consistent_point(b)
    )
    if not with_catalog:
        raise CheckFailed(
            "no physical backup records a relation catalog (they were taken before drkit "
            "recorded one): take one with drkit backup ENV --physical; wal-search then "
            "searches the WAL written after it"
        )
    if since is None:
        return with_catalog[0]
    before = [b for b in with_catalog if consistent_point(b) <= since]
    if not before:
        oldest = with_catalog[0]
        raise CheckFailed(
            f"--since {iso(since)} is before the oldest base backup with a relation catalog "
            f"({oldest.id}, consistent at {iso(consistent_point(oldest))}): the WAL before it "
            "cannot be searched; give a later --since, or none"
        )
    return before[-1]


def search_table(
    repo: Repository,
    table: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    op: str | None = None,
) -> SearchResult:
    """The committed transactions that touched ``table`` (schema.name) in the archive, on
    production's timeline, oldest first."""
    if "." not in table:
        raise UsageError(f"--table takes schema.name, not {table!r} (public.{table}?)")
    if op is not None and op not in OPERATIONS:
        raise UsageError(f"--op must be one of {', '.join(OPERATIONS)}, not {op!r}")
    index = WalIndex.load(repo)
    backups = list_backups(repo, "physical")
    followed = choose_timeline(repo, index, backups, "current")
    tli = followed.timeline
    history = timeline_history(repo, tli, index)
    usable = [b for b in backups if backup_on_timeline(b, tli, history)]
    if not usable:
        raise CheckFailed(f"no physical backup on timeline {tli} of {repo.location}")
    anchor = choose_anchor(usable, since)
    ref = find_table(anchor, table)
    size = size_of(anchor)
    reach = reach_on_timeline(repo, anchor, tli, index, history)
    if reach.gap:
        raise CheckFailed(
            f"the archive has a gap on timeline {tli}: WAL segment {reach.missing} is missing "
            f"below newer ones; wal-search would miss the transactions in it (restore the "
            f"segment, or search with --until before {iso(reach.end)})"
        )
    if reach.last_segment is None:
        raise CheckFailed(f"no WAL archived after backup {anchor.id}")
    start = parse_lsn(ref.catalog_lsn)
    first_segno = start // size
    last_segno = int(reach.last_segment[8:16], 16) * (0x100000000 // size) + int(
        reach.last_segment[16:24], 16
    )
    base_xid = int(anchor.extra.get("next_xid") or 0)
    follower = Follower(ref, base_xid, lambda lsn: timeline_at(lsn, tli, history))
    waldump = _waldump(anchor)
    segments = 0
    decoded = _decoded(repo, waldump, first_segno, last_segno, tli, history, size)
    with contextlib.closing(decoded):
        for run in decoded:
            segments += 1
            for line in _segment_lines(run, follower):
                follower.feed(line)
            if follower.file is None:  # dropped: nothing after it is the table's
                break
    end = (first_segno + segments) * size
    result = SearchResult(
        repo.env,
        table,
        ref.database,
        anchor.id,
        tli,
        format_lsn(start),
        format_lsn(end),
        segments,
        files=follower.files,
        dropped_by=follower.dropped_by,
    )
    result.transactions = [
        t
        for t in follower.found
        if (since is None or t.committed_at >= since)
        and (until is None or t.committed_at <= until)
        and (op is None or op in t.operations)
    ]
    return result


#: pg_waldump over the current segment, with these filter options
Dump = Callable[[list[str]], Iterator[str]]


def _segment_lines(run: Dump, follower: Follower) -> Iterator[str]:
    """The records of one segment the follower needs, in WAL order: every transaction
    and storage record, and the heap records of the files it may follow (one pg_waldump
    each, filtered by relation: most of a busy segment is other tables' rows)."""
    control = list(run(["--rmgr=Transaction", "--rmgr=Storage"]))
    files = follower.files_to_watch(control)
    if files is None:
        yield from run([])
        return
    streams = [iter(control)] + [
        run(["--rmgr=Heap", "--rmgr=Heap2", f"--relation={spc}/{follower.db}/{rel}"])
        for spc, rel in files
    ]
    previous = -1
    for line in heapq.merge(*streams, key=_line_lsn):
        lsn = _line_lsn(line)
        if lsn != previous:  # a record that touched two followed files, once
            yield line
        previous = lsn


def _line_lsn(line: str) -> int:
    at = line.find(", lsn: ")
    if at < 0:
        return -1
    return parse_lsn(line[at + 7 : line.index(",", at + 7)])


def _waldump(anchor: Manifest) -> str:
    from drkit.pg import find_binary

    return find_binary("pg_waldump", anchor.major)


def _decoded(
    repo: Repository,
    waldump: str,
    first: int,
    last: int,
    tli: int,
    history: list[TimelineSwitch],
    size: int,
) -> Generator[Dump, None, None]:
    """pg_waldump over each segment in turn (a function of its filter options), from
    segment number ``first`` to ``last`` on ``tli``'s path.  Each segment is decoded with the next one beside it (a
    record that starts in it may end in the next), both under the name of the segment's
    own timeline, which is what pg_waldump reads."""
    tmp = Path(tempfile.mkdtemp(prefix="drkit-walsearch-"))
    try:
        held: dict[int, Path] = {}
        for segno in range(first, last + 1):
            seg = segment_on_path(segno, tli, history, size)
            for n in (segno, segno + 1):
                if n > last or n in held:
                    continue
                name = segment_on_path(n, tli, history, size).name(size)
                path = tmp / f"fetched-{n}"
                if not download(repo, name, path, size, attempts=fetch_attempts()):
                    raise CheckFailed(
                        f"WAL segment {name} is missing from {repo.location}: wal-search "
                        "cannot read past it"
                    )
                held[n] = path
            work = tmp / "dump"
            work.mkdir(exist_ok=True)
            names = []
            for n in (segno, segno + 1):
                if n in held:
                    name = type(seg)(n, seg.timeline).name(size)
                    os.link(held[n], work / name)
                    names.append(name)
            yield functools.partial(
                _run_waldump, waldump, work, names, seg.timeline, segno, size, segno == last
            )
            shutil.rmtree(work)
            held.pop(segno).unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_waldump(
    waldump: str,
    work: Path,
    names: list[str],
    tli: int,
    segno: int,
    size: int,
    last: bool,
    filters: list[str],
) -> Iterator[str]:
    start, end = segno * size, (segno + 1) * size
    argv = [
        waldump,
        "--path",
        str(work),
        "--timeline",
        str(tli),
        "--start",
        format_lsn(start),
        "--end",
        format_lsn(end),
        *filters,
    ]
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        yield from proc.stdout
        err = proc.stderr.read()
        code = proc.wait()
    if code != 0 and not _ends_cleanly(err, last):
        raise OperationError(
            f"pg_waldump failed on WAL segment {names[0]}: "
            f"{err.strip().splitlines()[-1] if err.strip() else f'exit {code}'}"
        )


def _ends_cleanly(stderr: str, last: bool) -> bool:
    """Whether pg_waldump's error is the end of the archived WAL: only in the last
    segment, at its unused tail (zeros) or where a record crosses into the segment not
    archived yet.  Anywhere else an error is a damaged or foreign segment."""
    text = stderr.strip()
    return last and (
        ("invalid record length" in text and "got 0" in text)
        or "could not find file" in text
        or "could not open file" in text
    )
