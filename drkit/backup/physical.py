"""Physical base backups for point-in-time recovery: ``drkit backup ENV --physical``.

``pg_basebackup -Ft -D - -X none --checkpoint=fast`` streams one tar of the data
directory through the repository's encoding into ``backups/<id>/base.tar.zst``; WAL
comes from the archive (``wal-push``), not from the backup.  With ``-X none`` the server
ends the backup only once its WAL is archived, and would wait forever on a failing
``archive_command``: :class:`ArchiveWatch` ends that wait after ``DRKIT_ARCHIVE_WAIT``
seconds with the archiver's last error.  While the tar streams, its
``backup_label`` is picked out of it (start LSN and timeline).  A backup is only
restorable once the WAL up to its stop point is archived, so after pg_basebackup ends
drkit waits for the ``.backup`` history file (stop LSN) and the stop segment to be in
the repository before it writes the manifest.  Then it takes a snapshot in every
database, writes a named restore point right after and counts rows in those snapshots:
a drill pauses recovery at that restore point to compare the counts.

With ``--incremental`` (PostgreSQL 17+, ``summarize_wal = on``) the backup is taken
relative to its parent: the newest physical backup of the same cluster (system
identifier) and timeline lineage whose chain is whole and whose PostgreSQL
``backup_manifest`` is stored (:mod:`drkit.backup.chain`).  That manifest is fetched and
passed to ``pg_basebackup --incremental``; drkit's manifest records ``parent``.  Every
base backup, full or incremental, stores PostgreSQL's ``backup_manifest`` (taken from the
tar stream, where pg_basebackup puts it) as an object of its own.

Limits: one tablespace (``-D -`` cannot stream several); a cluster with extra
tablespaces is refused rather than backed up incompletely.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import psycopg
from psycopg.conninfo import make_conninfo

from drkit.backup.archivewait import (
    ARCHIVE_WAIT_ENV,
    DEFAULT_ARCHIVE_WAIT,
    ArchiveWatch,
    wait_for_wal,
)
from drkit.backup.chain import PG_MANIFEST_NAME, choose_parent, pg_manifest_object
from drkit.backup.lock import HeldLock, acquire_backup_lock
from drkit.backup.logical import ServerReading, discard_partial, new_backup_id, read_position
from drkit.backup.relations import CATALOG_KEY, read_relation_catalog
from drkit.catalog import Manifest, backup_prefix, list_backups, write_manifest
from drkit.config import Policy
from drkit.errors import DatabaseError, OperationError, SafetyRefused, UsageError
from drkit.lsn import parse_lsn
from drkit.pg import (
    PipeProcess,
    connect,
    count_rows,
    find_client,
    first_line,
    for_subprocess,
    list_tables,
    server_major,
    server_version,
)
from drkit.progress import Meter, OnProgress
from drkit.storage import Repository, StoredObject
from drkit.wal import (
    backup_file_name,
    find_wal_key,
    lsn_to_segment_name,
    open_wal_object,
    read_identity,
)

log = logging.getLogger(__name__)

BASE_NAME = "base.tar"

ProgressCallback = OnProgress  # phase "base backup", item base.tar, in raw bytes

_START_RE = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.M)
_START_TLI_RE = re.compile(r"^START TIMELINE: (\d+)", re.M)
_STOP_RE = re.compile(r"^STOP WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.M)
_STOP_TLI_RE = re.compile(r"^STOP TIMELINE: (\d+)", re.M)


class TarTap:
    """Passes a tar stream through unchanged while capturing small named members.

    ``stop``, when given, is asked after every read: a reason it returns is raised as an
    OperationError instead of handing on the stream (a watch that ended the producer)."""

    #: the largest member captured; PostgreSQL's backup_manifest grows with the file count
    LIMITS = {"backup_manifest": 512 * 1024 * 1024}
    DEFAULT_LIMIT = 1024 * 1024

    def __init__(
        self,
        source: BinaryIO,
        wanted: tuple[str, ...] = ("backup_label",),
        stop: Callable[[], str | None] | None = None,
    ) -> None:
        self._source = source
        self._wanted = wanted
        self._stop = stop
        self._header = b""
        self._skip = 0  # bytes of member data + padding still to pass
        self._capture_name: str | None = None
        self._capture_left = 0
        self.members: dict[str, bytes] = {}
        self.names: list[str] = []

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if self._stop is not None and (reason := self._stop()):
            raise OperationError(reason)
        if data:
            self._feed(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._source.close()

    def _feed(self, data: bytes) -> None:
        i = 0
        n = len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                if self._capture_name is not None and self._capture_left:
                    part = data[i : i + min(take, self._capture_left)]
                    self.members[self._capture_name] += part
                    self._capture_left -= len(part)
                self._skip -= take
                i += take
                continue
            need = 512 - len(self._header)
            self._header += data[i : i + need]
            i += min(need, n - i)
            if len(self._header) == 512:
                self._parse_header(self._header)
                self._header = b""

    def _parse_header(self, header: bytes) -> None:
        self._capture_name = None
        if header == b"\0" * 512:
            return
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix and header[257:262] == b"ustar":
            name = f"{prefix}/{name}"
        raw_size = header[124:136]
        if raw_size[0] & 0x80:  # base-256 for sizes over 8 GB
            size = int.from_bytes(raw_size[1:], "big")
        else:
            text = raw_size.split(b"\0", 1)[0].strip()
            size = int(text, 8) if text else 0
        self._skip = (size + 511) // 512 * 512
        self.names.append(name)
        clean = name.removeprefix("./")
        if clean in self._wanted and size <= self.LIMITS.get(clean, self.DEFAULT_LIMIT):
            self._capture_name = clean
            self._capture_left = size
            self.members[clean] = b""
        elif clean in self._wanted:
            log.warning("tar member %s (%d bytes) is too large to capture", clean, size)


@dataclass
class ServerFacts:
    version: str
    major: int
    segment_size: int
    databases: list[str]
    size: int  # of all databases: about what the base backup's tar holds
    system_identifier: str = ""
    timeline: int = 1


def _server_facts(dsn: str, bound: str | None = None) -> ServerFacts:
    """What a base backup needs to know of the server, refused first when the archive is
    bound (``identity.json``) to another cluster: such a backup would become ``latest``
    with none of its WAL in the archive."""
    with connect(dsn) as conn:
        try:
            rows = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('archive_mode', 'archive_command', 'archive_library', 'wal_segment_size',"
                    " 'wal_level')"
                ).fetchall()
            )
            tablespaces = conn.execute(
                "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')"
            ).fetchall()
            databases = [
                str(r[0])
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                    "ORDER BY datname"
                ).fetchall()
            ]
            size_row = conn.execute("SELECT sum(pg_database_size(oid)) FROM pg_database").fetchone()
            ident = conn.execute(
                "SELECT s.system_identifier::text, c.timeline_id "
                "FROM pg_control_system() s, pg_control_checkpoint() c"
            ).fetchone()
        except Exception as exc:
            raise DatabaseError(f"reading server settings: {first_line(exc)}") from None
        facts = ServerFacts(
            server_version(conn),
            server_major(conn),
            int(rows["wal_segment_size"]),
            databases,
            int(size_row[0]) if size_row and size_row[0] is not None else 0,
            str(ident[0]) if ident else "",
            int(ident[1]) if ident else 1,
        )
    if bound and facts.system_identifier and facts.system_identifier != bound:
        raise SafetyRefused(
            f"the server is PostgreSQL cluster {facts.system_identifier} but this "
            f"environment's WAL archive belongs to cluster {bound}: nothing was stored; "
            "check the policy's database url, or give this cluster its own environment"
        )
    if rows.get("archive_mode") not in ("on", "always") or not (
        rows.get("archive_command") or rows.get("archive_library")
    ):
        raise OperationError(
            "the server does not archive WAL (archive_mode/archive_command): a base backup "
            "without archived WAL cannot be restored; set archive_command = "
            "'drkit wal-push ENV %p' and archive_mode = on first"
        )
    if rows.get("wal_level") == "minimal":
        raise OperationError("wal_level is minimal: set wal_level = replica for base backups")
    if tablespaces:
        raise OperationError(
            f"the cluster has extra tablespaces ({', '.join(str(t[0]) for t in tablespaces)}); "
            "drkit base backups support the default tablespace only"
        )
    return facts


def _setting(conn: psycopg.Connection[Any], name: str) -> str | None:
    try:
        row = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(f"reading server setting {name}: {first_line(exc)}") from None
    return str(row[0]) if row else None


def _next_xid(dsn: str) -> int:
    """The first transaction ID the server has not assigned yet (full, with its epoch),
    read without assigning one."""
    with connect(dsn) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


def _server_clock(dsn: str) -> ServerReading:
    """The server's clock now, and the host clock's distance from it."""
    with connect(dsn) as conn:
        reading, _ = read_position(conn, None)
    return reading


@dataclass
class CountedPoint:
    """Exact row counts of every database and the named restore point that replays to
    them: a drill pauses recovery there, compares, then replays the rest."""

    restore_point: str
    lsn: str
    row_counts: dict[str, dict[str, int]]


def count_rows_at_restore_point(
    dsn: str, databases: list[str], name: str, timeline: int, segment_size: int
) -> tuple[CountedPoint, str]:
    """Take a REPEATABLE READ snapshot in every database, write a restore point right
    after (nothing commits between them on a quiet server; on a busy one the window is
    milliseconds), switch WAL so the restore point's segment gets archived, then count in
    the snapshots.  Returns the point and the segment that must reach the archive."""
    conns: list[tuple[str, psycopg.Connection[Any]]] = []
    try:
        for database in databases:
            conn = connect(dsn, database, autocommit=False)
            conns.append((database, conn))
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute("SELECT 1")  # takes the transaction's snapshot now
        with connect(dsn) as admin:
            row = admin.execute(
                "SELECT pg_create_restore_point(%s)::text, pg_switch_wal()::text", (name,)
            ).fetchone()
        assert row is not None
        point, switched = str(row[0]), str(row[1])
        counts = {}
        for database, conn in conns:
            counts[database] = count_rows(conn, list_tables(conn))
    except psycopg.Error as exc:
        raise DatabaseError(f"counting rows for the drill: {first_line(exc)}") from None
    finally:
        for _database, conn in conns:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            conn.close()
    segment = lsn_to_segment_name(parse_lsn(switched) - 1, timeline, segment_size)
    return CountedPoint(name, point, counts), segment


def manifest_stop_point(pg_manifest: bytes) -> tuple[str, int] | None:
    """(stop LSN, stop timeline) from a ``backup_manifest``: its ``WAL-Ranges`` end where
    the backup stopped (the range ending last); None when it does not say."""
    try:
        ranges = json.loads(pg_manifest)["WAL-Ranges"]
        ends = [(parse_lsn(r["End-LSN"]), r["End-LSN"], int(r["Timeline"])) for r in ranges]
    except (ValueError, KeyError, TypeError):
        return None
    if not ends:
        return None
    _value, lsn, tli = max(ends)
    return lsn, tli


def read_backup_history(repo: Repository, name: str) -> str:
    key = find_wal_key(repo, name)
    if key is None:
        raise OperationError(f"{name} is not in {repo.location}")
    with open_wal_object(repo, key) as stream:
        data: bytes = stream.read()
    return data.decode("utf-8", "replace")


def _find_parent(repo: Repository, policy: Policy, facts: ServerFacts) -> Manifest:
    from drkit.backup.walchain import timeline_history

    history = timeline_history(repo, facts.timeline)
    parent = choose_parent(
        list_backups(repo, "physical"), facts.system_identifier, facts.timeline, history
    )
    if parent is None:
        raise OperationError(
            f"no base backup of {policy.name}'s cluster (system identifier "
            f"{facts.system_identifier}, timeline {facts.timeline}) with a stored "
            f"backup_manifest in {repo.location} to take an incremental from: take a full "
            f"one first with drkit backup {policy.name} --physical"
        )
    return parent


def _fetch_pg_manifest(repo: Repository, parent: Manifest, directory: str) -> str:
    """The parent's PostgreSQL backup_manifest, checked (size, sha256) and written to a file."""
    obj = pg_manifest_object(parent)
    if obj is None:  # choose_parent only picks backups that have one
        raise OperationError(f"backup {parent.id} has no stored backup_manifest")
    path = os.path.join(directory, PG_MANIFEST_NAME)
    try:
        with repo.open_decoded(obj) as stream, open(path, "wb") as out:
            shutil.copyfileobj(stream, out, 1024 * 1024)
    except SafetyRefused as exc:
        # encrypted to the repository's recipients: reading it back needs a private key
        raise SafetyRefused(
            f"an incremental base backup reads its parent's backup_manifest ({parent.id}) "
            f"back from the encrypted repository, and this host cannot decrypt it ({exc}); "
            "give it repository.encryption.identity_file, or take full base backups"
        ) from None
    return path


def run_physical_backup(
    policy: Policy,
    *,
    repo: Repository | None = None,
    on_progress: ProgressCallback | None = None,
    archive_wait: float | None = None,
    incremental: bool = False,
) -> Manifest:
    """Take a base backup, wait for its WAL to be archived, publish the manifest last."""
    repo = repo or Repository.for_policy(policy)
    repo.check_encryption_available()
    dsn = policy.database.url.get_secret_value()
    if incremental:  # refused whole, never half-done
        _check_incremental(policy, dsn)
    facts = _server_facts(dsn, read_identity(repo))
    if not policy.wal_archiving:
        log.info("policy %s has wal_archiving: false but takes a base backup", policy.name)
    wait = archive_wait
    if wait is None:
        wait = float(os.environ.get(ARCHIVE_WAIT_ENV, DEFAULT_ARCHIVE_WAIT))
    pg_basebackup = find_client("pg_basebackup", facts.major)
    lock = acquire_backup_lock(policy, "physical")  # a concurrent one is refused (exit 1)
    scratch: str | None = None
    try:
        parent: Manifest | None = None
        parent_file: str | None = None
        if incremental:
            parent = _find_parent(repo, policy, facts)
            scratch = tempfile.mkdtemp(prefix="drkit-incremental-")
            parent_file = _fetch_pg_manifest(repo, parent, scratch)
        base = _BaseBackup(policy, repo, dsn, facts, wait, on_progress, lock)
        manifest = base.take(pg_basebackup, parent, parent_file)
    finally:
        lock.release()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    log.info("physical backup %s finished: %d bytes stored", manifest.id, manifest.size)
    return manifest


def _check_incremental(policy: Policy, dsn: str) -> None:
    """An incremental base backup needs PostgreSQL 17+ summarizing WAL."""
    with connect(dsn) as conn:
        major = server_major(conn)
        summarizing = major >= 17 and _setting(conn, "summarize_wal") == "on"
    if major < 17:
        raise UsageError(
            f"--incremental needs PostgreSQL 17+ (summarize_wal); {policy.name}'s server "
            f"is {major}: take a full base backup with --physical"
        )
    if not summarizing:
        raise OperationError(
            f"summarize_wal is off on {policy.name}'s server: incremental base backups "
            "need it; set summarize_wal = on (ALTER SYSTEM SET summarize_wal = on; SELECT "
            "pg_reload_conf()), then take a full base backup with --physical"
        )


def _label_start(label: str) -> tuple[str, int]:
    """(start LSN, timeline) from a backup_label."""
    start = _START_RE.search(label)
    start_tli = _START_TLI_RE.search(label)
    if start is None or start_tli is None:
        raise OperationError("pg_basebackup's tar stream had no readable backup_label")
    return start.group(1), int(start_tli.group(1))


@dataclass
class _WalSpan:
    """The WAL a base backup needs: from its start (backup_label) to its stop point."""

    start: str
    timeline: int
    stop: str
    stop_timeline: int
    start_segment: str
    stop_segment: str
    history_name: str


class _BaseBackup:
    """One base backup, stage by stage (:meth:`take`): stream the tar into the
    repository, find its WAL span and wait for it to be archived, count rows at a
    restore point just after it, publish the manifest.  A failure discards what was
    stored."""

    def __init__(
        self,
        policy: Policy,
        repo: Repository,
        dsn: str,
        facts: ServerFacts,
        wait: float,
        on_progress: ProgressCallback | None,
        lock: HeldLock,
    ) -> None:
        self.policy = policy
        self.lock = lock
        self.repo = repo
        self.dsn = dsn
        self.facts = facts
        self.wait = wait
        self.on_progress = on_progress

    def take(
        self, pg_basebackup: str, parent: Manifest | None, parent_file: str | None
    ) -> Manifest:
        backup_id, started = new_backup_id(self.repo, "physical", self.lock)
        args, env, application_name = self._command(pg_basebackup, backup_id, parent_file)
        log.info("physical backup %s started", backup_id)
        try:
            objects, tap = self._stream(backup_id, args, env, application_name, parent)
            clock = _server_clock(self.dsn)
            next_xid = _next_xid(self.dsn)
            relations = self._relations(backup_id)
            label = tap.members.get("backup_label", b"").decode("utf-8", "replace")
            wal_start, timeline = _label_start(label)
            archived = Meter(self.on_progress, "WAL archived")  # a phase that counts nothing
            span = self._wal_span(wal_start, timeline, tap.members.get(PG_MANIFEST_NAME))
            counted = None
            wanted = [span.start_segment, span.stop_segment]
            try:
                counted, counted_segment = count_rows_at_restore_point(
                    self.dsn,
                    self.facts.databases,
                    f"drkit {backup_id}",
                    span.stop_timeline,
                    self.facts.segment_size,
                )
                wanted.append(counted_segment)
            except DatabaseError as exc:
                # the backup stands without them; a drill then reports row counts NOT_RUN
                log.warning("physical backup %s: no row counts recorded: %s", backup_id, exc)
            wait_for_wal(self.repo, wanted, self.wait, self.dsn)
            archived.finish()
            manifest = Manifest(
                id=backup_id,
                kind="physical",
                environment=self.policy.name,
                databases=self.facts.databases,
                server_version=self.facts.version,
                started_at=started,
                finished_at=datetime.now(UTC),
                consistent_at=clock.at,
                # the stop point orders it among the cluster's backups (drkit.catalog.order)
                consistent_lsn=span.stop,
                consistent_timeline=span.stop_timeline,
                clock_skew=clock.clock_skew,
                objects=objects,
                wal_start=span.start,
                wal_stop=span.stop,
                wal_start_segment=span.start_segment,
                wal_stop_segment=span.stop_segment,
                timeline=span.timeline,
                backup_label=label,
                parent=parent.id if parent is not None else None,
                system_identifier=self.facts.system_identifier or None,
                row_counts=counted.row_counts if counted else {},
                extra={
                    "wal_segment_size": self.facts.segment_size,
                    "stop_timeline": span.stop_timeline,
                    "backup_history_file": span.history_name,
                    "tar_members": len(tap.names),
                    # no transaction from this ID on committed before the consistent
                    # point: --target-xid chooses a backup by it
                    "next_xid": next_xid,
                },
            )
            if relations is not None:
                manifest.extra[CATALOG_KEY] = relations
            if counted is not None:
                manifest.extra["row_counts_restore_point"] = counted.restore_point
                manifest.extra["row_counts_lsn"] = counted.lsn
            write_manifest(self.repo, manifest)
        except BaseException:
            discard_partial(self.repo, backup_id)
            raise
        return manifest

    def _relations(self, backup_id: str) -> dict[str, Any] | None:
        """The relation catalog drkit wal-search starts from; a backup stands without
        it (wal-search then refuses to start from this backup)."""
        try:
            return read_relation_catalog(self.dsn, self.facts.databases)
        except DatabaseError as exc:
            log.warning("physical backup %s: no relation catalog recorded: %s", backup_id, exc)
            return None

    def _command(
        self, pg_basebackup: str, backup_id: str, parent_file: str | None
    ) -> tuple[list[str], dict[str, str], str]:
        """pg_basebackup streaming one tar to stdout, WAL left to the archive; and the
        application name by which ArchiveWatch finds its walsender."""
        conninfo, env = for_subprocess(self.dsn)
        application_name = f"drkit {backup_id}"[:63]
        args = [
            pg_basebackup,
            "-d",
            make_conninfo(conninfo, application_name=application_name),
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "--checkpoint=fast",
            "-l",
            f"drkit {backup_id}",
        ]
        if parent_file is not None:
            args.append(f"--incremental={parent_file}")
        return args, env, application_name

    def _stream(
        self,
        backup_id: str,
        args: list[str],
        env: dict[str, str],
        application_name: str,
        parent: Manifest | None,
    ) -> tuple[list[StoredObject], TarTap]:
        """pg_basebackup's tar into ``base.tar``, and PostgreSQL's backup_manifest (taken
        from the stream) into an object of its own."""
        # the databases' sizes: the tar holds them (and a little more), an estimate
        size = self.facts.size
        meter = Meter(self.on_progress, "base backup", BASE_NAME, total=size, estimate=True)
        with (
            PipeProcess(args, env=env, what="pg_basebackup", stdout=-1) as proc,
            ArchiveWatch(self.dsn, application_name, self.wait, proc.proc.kill) as watch,
        ):
            tap = TarTap(
                proc.stdout,  # type: ignore[arg-type]
                ("backup_label", PG_MANIFEST_NAME),
                stop=watch.reason,
            )
            obj = self.repo.store(
                f"{backup_prefix(backup_id)}{BASE_NAME}",
                tap,  # type: ignore[arg-type]
                on_raw_bytes=meter if self.on_progress else None,
                size_hint=size * 3 // 2,  # the databases, growing while it runs
            )
            proc.wait()
        meter.finish()
        objects = [obj]
        pg_manifest = tap.members.get(PG_MANIFEST_NAME)
        if pg_manifest:
            # the next incremental is taken relative to it
            key = f"{backup_prefix(backup_id)}{PG_MANIFEST_NAME}"
            objects.append(self.repo.store(key, io.BytesIO(pg_manifest)))
        elif parent is not None:
            raise OperationError("pg_basebackup's tar stream had no backup_manifest")
        else:
            log.warning("physical backup %s: no backup_manifest in the tar stream", backup_id)
        return objects, tap

    def _wal_span(self, wal_start: str, timeline: int, pg_manifest: bytes | None) -> _WalSpan:
        """Wait for the backup history file to be archived; the stop point from
        PostgreSQL's backup_manifest, else from that history file."""
        segment_size = self.facts.segment_size
        history_name = backup_file_name(wal_start, timeline, segment_size)
        wait_for_wal(self.repo, [history_name], self.wait, self.dsn)
        # the stop point from pg_basebackup's own manifest: the backup host holds the
        # recipients only, and the archived history file may be encrypted to them
        stop_point = manifest_stop_point(pg_manifest) if pg_manifest else None
        if stop_point is None:  # no manifest (or an unreadable one): the history file
            history = read_backup_history(self.repo, history_name)
            stop = _STOP_RE.search(history)
            stop_tli = _STOP_TLI_RE.search(history)
            if stop is None:
                raise OperationError(f"{history_name} has no STOP WAL LOCATION")
            stop_point = (stop.group(1), int(stop_tli.group(1)) if stop_tli else timeline)
        wal_stop, stop_timeline = stop_point
        return _WalSpan(
            start=wal_start,
            timeline=timeline,
            stop=wal_stop,
            stop_timeline=stop_timeline,
            start_segment=lsn_to_segment_name(wal_start, timeline, segment_size),
            # the stop LSN points just past the last record: the segment holding stop-1
            stop_segment=lsn_to_segment_name(
                max(parse_lsn(wal_stop) - 1, parse_lsn(wal_start)), stop_timeline, segment_size
            ),
            history_name=history_name,
        )
