"""``drkit wal-receive``: WAL streamed from a physical replication slot, beside archiving.

``pg_receivewal`` (the server's major or newer) streams from the slot ``drkit_<env>``
(created if missing, WAL reserved at once) into a local spool directory.  It confirms a
segment to the slot once the segment is whole and synced (not ``--synchronous``, whose
sync per message cuts catch-up throughput several times): the local copy is not what
protects a commit, the repository is, and the spool's files are read from as written.
This module watches the spool:

- each *finished* segment (and history file) is stored with :func:`drkit.wal.push.push_file`,
  the function archive_command runs: same keys, checksums, encoding, the no-replace
  store, the identity check of every file; archive_command storing the same segment too
  is normal (identical bytes: "exists"; different bytes: :class:`WalConflict`). Only
  then is the local copy removed;
- the segment being received (``<segment>.partial``) is stored every
  ``wal_streaming.partial_interval`` seconds under ``stream/`` (never in ``wal/``, whose
  names are stored at most once), as ``<segment>.<end>.partial`` where ``end`` is where
  its WAL stops: a copy is never overwritten, the longest is the newest, and older
  copies are removed once a longer one (or the whole segment) is stored.  PITR to
  ``latest`` and drills recover through the newest one (:mod:`drkit.restore.plan`).

Before anything streams, the server's system identifier is checked against the one the
archive belongs to (:mod:`drkit.wal.identity`), so a slot on another cluster never feeds
this environment's archive.  The run ends when ``pg_receivewal`` ends (its error is the
run's) or when asked to stop, after storing what was received; the scheduler restarts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import DrkitError, ObjectExists, OperationError, UsageError
from drkit.wal.identity import ForeignWal, check_identity, read_identity, record_identity
from drkit.wal.keys import STREAM_DIR, partial_name, stored_partials
from drkit.wal.names import is_history, is_segment
from drkit.wal.push import push_file

if TYPE_CHECKING:
    import psycopg

    from drkit.config import Policy
    from drkit.storage import Repository
    from drkit.wal.documents import WalReceiveDocument

log = logging.getLogger(__name__)

SLOT_PREFIX = "drkit_"
RECEIVE_DIR_ENV = "DRKIT_RECEIVE_DIR"
DEFAULT_RECEIVE_ROOT = "/var/lib/drkit/receive"
#: how often the spool is looked at for finished segments (and pg_receivewal for its end)
POLL_SECONDS = 0.5
_SLOT_CHARS = re.compile(r"[^a-z0-9_]")


def slot_name(env: str) -> str:
    """The physical replication slot of ``env``: ``drkit_<env>``, in the characters a slot
    name allows (lower-case letters, digits, underscore), at most 63 of them."""
    return (SLOT_PREFIX + _SLOT_CHARS.sub("_", env.lower()))[:63]


def receive_dir(env: str) -> Path:
    """The spool of ``env``: ``$DRKIT_RECEIVE_DIR/<env>``, else /var/lib/drkit/receive
    (root) or the user's own state directory."""
    configured = os.environ.get(RECEIVE_DIR_ENV)
    if configured:
        root = Path(configured)
    elif os.geteuid() == 0:
        root = Path(DEFAULT_RECEIVE_ROOT)
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        root = Path(state) / "drkit" / "receive"
    return root / env


# ---------------------------------------------------------------------------
# The slot
# ---------------------------------------------------------------------------


@dataclass
class SlotState:
    """A replication slot as the server reports it; lag is the WAL it still holds."""

    name: str
    exists: bool
    active: bool = False
    lag_bytes: int | None = None
    restart_lsn: str | None = None
    current_lsn: str | None = None

    def dropped_document(self, environment: str) -> WalReceiveDocument:
        """``wal-receive --drop-slot --json``, from the state :func:`drop_slot` returns:
        the slot removed if it existed."""
        from drkit.wal.documents import WalReceiveDocument

        return WalReceiveDocument(
            ok=True,
            environment=environment,
            slot=self.name,
            dropped=self.exists,
            created_slot=False,
            segments_stored=0,
            partials_stored=0,
            last_partial=None,
            duration_seconds=0.0,
        )


def slot_state(conn: psycopg.Connection[Any], name: str) -> SlotState:
    """The slot ``name`` on the server ``conn`` reaches (``exists`` False without one)."""
    row = conn.execute(
        "SELECT s.active, s.restart_lsn::text, pg_current_wal_lsn()::text, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint, s.slot_type "
        "FROM pg_replication_slots s WHERE s.slot_name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return SlotState(name, exists=False)
    active, restart, current, lag, kind = row
    if kind != "physical":
        raise OperationError(
            f"replication slot {name} is a {kind} slot, not the physical slot drkit streams "
            "from; drop it or give this environment another name"
        )
    return SlotState(name, True, bool(active), None if lag is None else int(lag), restart, current)


def ensure_slot(conn: psycopg.Connection[Any], name: str) -> bool:
    """Create the physical slot ``name``, reserving WAL at once, unless it exists; whether
    it was created."""
    import psycopg

    if slot_state(conn, name).exists:
        return False
    try:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    except psycopg.errors.DuplicateObject:  # another wal-receive created it meanwhile
        return False
    log.info("created the physical replication slot %s", name)
    return True


def drop_slot(policy: Policy) -> SlotState:
    """``wal-receive --drop-slot``: remove the environment's slot, so the server stops
    holding WAL for it.  Refused while a receiver streams from it (stop it first); a slot
    that does not exist is not an error (the state says so)."""
    import psycopg

    from drkit.pg import connect, first_line

    name = slot_name(policy.name)
    with connect(policy.database.url.get_secret_value(), autocommit=True) as conn:
        state = slot_state(conn, name)
        if not state.exists:
            return state
        if state.active:
            raise OperationError(
                f"replication slot {name} is in use by a running wal-receive: stop it "
                "(or the scheduler running it), then drop the slot"
            )
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        except psycopg.Error as exc:
            raise OperationError(
                f"cannot drop replication slot {name}: {first_line(exc)}"
            ) from None
    log.info("dropped the physical replication slot %s", name)
    return state


# ---------------------------------------------------------------------------
# Receiving
# ---------------------------------------------------------------------------


@dataclass
class ReceiveReport:
    """What one wal-receive run stored."""

    slot: str
    spool: str
    created_slot: bool = False
    segments: list[str] = field(default_factory=list)
    partials: int = 0
    last_partial: str | None = None
    seconds: float = 0.0

    def document(self, environment: str) -> WalReceiveDocument:
        """``wal-receive --json``: what this run stored."""
        from drkit.wal.documents import WalReceiveDocument

        return WalReceiveDocument(
            ok=True,
            environment=environment,
            slot=self.slot,
            dropped=False,
            spool=self.spool,
            created_slot=self.created_slot,
            segments_stored=len(self.segments),
            segments=self.segments,
            partials_stored=self.partials,
            last_partial=self.last_partial,
            duration_seconds=round(self.seconds, 3),
        )


def _wal_end(path: Path) -> int:
    """Where the WAL in a segment pg_receivewal pre-filled with zeros stops: the offset
    after its last non-zero byte (a lower bound: zeros are never WAL beyond the end)."""
    block = 1024 * 1024
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start).rstrip(b"\0")
            if chunk:
                return start + len(chunk)
            pos = start
    return 0


class Receiver:
    """One run of pg_receivewal for ``policy``, storing what it receives into ``repo``."""

    def __init__(
        self,
        policy: Policy,
        repo: Repository,
        spool: Path | None = None,
        *,
        partial_interval: float | None = None,
    ) -> None:
        self.policy = policy
        self.repo = repo
        self.spool = spool or receive_dir(policy.name)
        self.slot = slot_name(policy.name)
        self.interval = partial_interval or policy.wal_streaming.partial_interval
        self.report = ReceiveReport(self.slot, str(self.spool))
        self._stored_partial: tuple[str, int] | None = None
        self._segment_size: int | None = None

    # -- before streaming ------------------------------------------------------------

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        """Check the server is the archive's cluster, create the slot, find pg_receivewal;
        its command line and environment (secrets in the environment, never argv)."""
        from psycopg.conninfo import make_conninfo

        from drkit.pg import connect, find_client, for_subprocess, server_major, system_identifier

        dsn = self.policy.database.url.get_secret_value()
        with connect(dsn, autocommit=True) as conn:
            sysid = system_identifier(conn)
            if sysid is None:
                raise OperationError("cannot read the server's system identifier")
            recorded = read_identity(self.repo)
            if recorded is None:
                recorded = record_identity(self.repo, int(sysid), f"wal-receive {self.slot}")
            if recorded != sysid:
                raise ForeignWal(
                    f"the database server is PostgreSQL cluster {sysid} but {self.repo.location} "
                    f"archives cluster {recorded}: nothing streamed. Point the policy at the "
                    "archive's cluster, or give this cluster its own environment"
                )
            row = conn.execute("SHOW wal_segment_size").fetchone()
            self._segment_size = _size_setting(str(row[0])) if row else None
            self.report.created_slot = ensure_slot(conn, self.slot)
            major = server_major(conn)
        program = find_client("pg_receivewal", major)
        conninfo, env = for_subprocess(dsn)
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [
            program,
            "-d",
            make_conninfo(conninfo, application_name=f"drkit wal-receive {self.policy.name}"),
            "-D",
            str(self.spool),
            "-S",
            self.slot,
            "--no-loop",
            "-s",
            "1",
        ]
        return args, env

    # -- storing ---------------------------------------------------------------------

    def _store_finished(self) -> None:
        """Store every finished segment and history file in the spool (history files
        first, then the segments in parallel, as wal-push archives ahead), removing each
        local copy once stored; a failure leaves it for the next pass and is raised."""
        names = sorted(
            (e.name for e in os.scandir(self.spool) if is_segment(e.name) or is_history(e.name)),
            key=lambda n: (not is_history(n), n[8:], n),
        )
        for name in [n for n in names if is_history(n)]:
            push_file(self.repo, self.spool / name, self._segment_size)
            (self.spool / name).unlink()
        segments = [n for n in names if is_segment(n)]
        if not segments:
            return
        jobs = min(self.policy.repository.parallel_uploads, len(segments))
        threads = 0 if jobs > 1 else None  # as wal-push: one compression thread per file
        failure: DrkitError | None = None
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                name: pool.submit(
                    push_file,
                    self.repo,
                    self.spool / name,
                    self._segment_size,
                    compress_threads=threads,
                )
                for name in segments
            }
            for name, future in futures.items():
                try:
                    log.info("streamed %s: %s", name, future.result().status)
                except DrkitError as exc:
                    failure = failure or exc
                    continue
                self.report.segments.append(name)
                (self.spool / name).unlink()
        if failure is not None:
            raise failure
        self._drop_partials(upto=segments[-1])

    def _store_partial(self) -> None:
        """Store the segment being received, if it grew since it was last stored."""
        partials = sorted(p for p in os.listdir(self.spool) if p.endswith(".partial"))
        if not partials:
            return
        path = self.spool / partials[-1]
        segment = path.name.removesuffix(".partial")
        if not is_segment(segment):
            return
        end = _wal_end(path)
        if end == 0 or self._stored_partial == (segment, end):
            return
        check_identity(self.repo, path)  # its own page header names its cluster
        copy = self.spool / ".upload" / partial_name(segment, end)
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, copy)  # the file keeps growing: store one fixed state of it
        try:
            end = min(end, _wal_end(copy))
            # ObjectExists: this very state is stored already
            with open(copy, "rb") as f, contextlib.suppress(ObjectExists):
                self.repo.store(
                    f"{STREAM_DIR}{partial_name(segment, end)}",
                    f,
                    size_hint=os.fstat(f.fileno()).st_size,
                    exclusive=True,
                )
        finally:
            copy.unlink(missing_ok=True)
        self._stored_partial = (segment, end)
        self.report.partials += 1
        self.report.last_partial = partial_name(segment, end)
        self._drop_partials(keep=(segment, end))

    def _drop_partials(
        self, *, upto: str | None = None, keep: tuple[str, int] | None = None
    ) -> None:
        """Remove stored partials made obsolete: those of segments up to ``upto`` (stored
        whole), or every one older than ``keep``."""
        for stored in stored_partials(self.repo):
            order = (stored.segment[8:], stored.segment[:8])
            whole = upto is not None and order <= (upto[8:], upto[:8])
            older = keep is not None and (order, stored.end) < ((keep[0][8:], keep[0][:8]), keep[1])
            if whole or older:
                self.repo.delete(stored.key)

    # -- the run ---------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> ReceiveReport:
        """Stream until pg_receivewal ends or ``stop`` is set; store what was received.

        pg_receivewal ending on its own (the server went away, the slot was dropped) is
        an :class:`OperationError` carrying its last error line, after everything it
        wrote was stored."""
        from drkit.pg import PipeProcess

        started = time.monotonic()
        stop = stop or threading.Event()
        self.repo.check_encryption_available()
        args, env = self._prepare()
        self._store_finished()  # what a previous run received and did not store
        failure: DrkitError | None = None
        with PipeProcess(args, env=env, what="pg_receivewal") as proc:
            next_partial = time.monotonic()
            while True:
                ended = proc.proc.poll() is not None
                self._store_finished()
                if time.monotonic() >= next_partial or ended or stop.is_set():
                    self._store_partial()
                    next_partial = time.monotonic() + self.interval
                if ended:
                    try:
                        proc.wait()
                        failure = OperationError(
                            "pg_receivewal ended: the server closed the stream"
                        )
                    except DrkitError as exc:
                        failure = exc
                    break
                if stop.wait(min(POLL_SECONDS, self.interval)):
                    proc.proc.send_signal(signal.SIGINT)  # flushes what it received, then exits
                    try:
                        proc.proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    self._store_finished()
                    self._store_partial()
                    break
        self.report.seconds = time.monotonic() - started
        if failure is not None and not stop.is_set():
            raise OperationError(f"wal-receive {self.policy.name}: {failure}")
        return self.report


def _size_setting(text: str) -> int | None:
    """A size setting as SHOW prints it (``16MB``, ``1GB``) in bytes."""
    match = re.fullmatch(r"(\d+)\s*(kB|MB|GB)", text.strip())
    if match is None:
        return None
    return int(match.group(1)) * {"kB": 1024, "MB": 1024**2, "GB": 1024**3}[match.group(2)]


def receive_wal(
    policy: Policy,
    *,
    spool: Path | None = None,
    stop: threading.Event | None = None,
    partial_interval: float | None = None,
) -> ReceiveReport:
    """``drkit wal-receive ENV``: stream WAL into the repository until stopped."""
    if not policy.wal_streaming.enabled:
        raise UsageError(
            f"{policy.name}: wal_streaming is not enabled in its policy (wal_streaming: true)"
        )
    from drkit.storage import Repository

    return Receiver(
        policy, Repository.for_wal(policy), spool, partial_interval=partial_interval
    ).run(stop)


# ---------------------------------------------------------------------------
# The slot's lag, for status and /metrics
# ---------------------------------------------------------------------------


@dataclass
class SlotLag:
    """How far the environment's slot is behind the server, as status and /metrics show.

    ``lag_bytes``: while a receiver streams, the WAL the server wrote that the receiver
    has not written yet; else the WAL the slot holds (the server's write position minus
    the slot's restart LSN, which pg_receivewal advances a whole segment at a time, so a
    stopped receiver's lag may read up to one segment high, never low).
    ``lag_seconds``: 0 when nothing is behind; while a receiver streams, the server's
    write lag for it; else the age of the newest WAL the stream stored
    (``newest_stored``), the time since which the held WAL has been waiting; None when
    unknown.  ``problem``: why the server could not say."""

    slot: str
    reached: bool = False  # whether the server answered
    exists: bool = False
    active: bool = False
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    problem: str | None = None


def slot_lag(policy: Policy, newest_stored: datetime | None, now: datetime) -> SlotLag:
    """The lag of ``policy``'s slot, read from its server (never raises: a server that
    cannot be reached is a ``problem``, and the lag unknown)."""
    from drkit.pg import connect

    out = SlotLag(slot_name(policy.name))
    try:
        with connect(policy.database.url.get_secret_value(), autocommit=True) as conn:
            state = slot_state(conn, out.slot)
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), r.write_lsn)::bigint, "
                "extract(epoch FROM r.write_lag)::float8 FROM pg_stat_replication r "
                "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
                (out.slot,),
            ).fetchone()
    except DrkitError as exc:
        out.problem = str(exc)
        return out
    out.reached = True
    out.exists, out.active, out.lag_bytes = state.exists, state.active, state.lag_bytes
    if not state.exists:
        out.problem = f"slot {out.slot} does not exist (drkit wal-receive {policy.name} creates it)"
        return out
    streaming = state.active and row is not None and row[0] is not None
    if streaming and row is not None:
        out.lag_bytes = max(0, int(row[0]))
    write_lag = None if row is None or row[1] is None else float(row[1])
    if not out.lag_bytes:
        out.lag_seconds = 0.0
    elif streaming and write_lag is not None:
        out.lag_seconds = write_lag
    elif newest_stored is not None:
        out.lag_seconds = max(0.0, (now - newest_stored).total_seconds())
    return out
