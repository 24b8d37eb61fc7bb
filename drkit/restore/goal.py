"""Where one recovery must end, and the checks of what it reached against that: a
server that stopped short is named from the fetch journal (the WAL file wal-fetch could
not serve), never from log text, and one that paused short is never promoted."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from drkit.catalog import iso
from drkit.errors import CheckFailed, DatabaseError, DrkitError, OperationError
from drkit.lsn import parse_lsn
from drkit.pg import PostgresServer
from drkit.restore.plan import RecoveryPlan, consistent_point
from drkit.restore.replay import Replayed
from drkit.storage import Repository
from drkit.wal import (
    FetchOutcome,
    find_wal_key,
    is_segment,
    parse_segment,
    read_fetch_journal,
    timeline_at,
)

if TYPE_CHECKING:
    from drkit.restore.pitr import PitrResult

log = logging.getLogger(__name__)

#: PostgreSQL's FATAL when the WAL ends before an explicit target
NOT_REACHED = "recovery ended before configured recovery target was reached"


class RecoveryStoppedShort(CheckFailed):
    """Replay ended before the planned end: a WAL file could not be fetched, vanished or
    would not replay.  The server was not promoted (exit 3)."""

    def __init__(self, message: str, segment: str | None) -> None:
        super().__init__(message)
        self.segment = segment


class Goal:
    """Where one recovery must end, and the checks of what it reached against that."""

    def __init__(
        self, plan: RecoveryPlan, repo: Repository, target: datetime | None, end_lsn: str | None
    ) -> None:
        self.plan = plan
        self.repo = repo
        self.target = target
        self.end_lsn = end_lsn

    def describe(self) -> str:
        last = self.plan.reach.last_segment
        if self.plan.partial is not None:
            last = f"the streamed partial {self.plan.partial.segment}"
        if self.end_lsn is not None:
            return f"the planned end {self.end_lsn} (the last WAL record of {last})"
        point = self.plan.point
        if point.kind == "time":
            return f"recovery target {iso(self.target)}"
        at = f" at {self.plan.stop_lsn}" if self.plan.stop_lsn and point.kind != "lsn" else ""
        return f"recovery target {point.describe()}{at}"

    def _planned_last(self) -> int:
        return parse_segment(str(self.plan.reach.last_segment), self.plan.segment_size).segno

    def _missing_planned(self, journal: list[FetchOutcome]) -> list[str]:
        """Planned segments wal-fetch found missing (removed since the plan)."""
        last = self._planned_last()
        found = []
        for entry in journal:
            if entry.outcome != "missing" or not is_segment(entry.name):
                continue
            segno = parse_segment(entry.name, self.plan.segment_size).segno
            if segno <= last and entry.name == self.plan.planned_segment(segno):
                found.append(entry.name)
        return found

    def _ran_out(self, journal: list[FetchOutcome]) -> bool:
        """Whether replay consumed every planned segment and stopped only because the
        first one after them is not in the archive."""
        after = self.plan.planned_segment(self._planned_last() + 1)
        return any(e.outcome == "missing" and e.name == after for e in journal)

    def ended_at_plan_end(self, server: PostgresServer) -> bool:
        """Whether a recovery to a time that stopped did so only because the planned WAL
        ended: every planned segment was served, the first one after them is what
        wal-fetch found missing, and the archive still lacks it."""
        if self.target is None or self.end_lsn is not None or server.is_running():
            return False
        journal = read_fetch_journal(server.data_dir / "pg_wal")
        if any(e.outcome == "failed" for e in journal) or self._missing_planned(journal):
            return False
        after = self.plan.planned_segment(self._planned_last() + 1)
        if not any(e.outcome == "missing" and e.name == after for e in journal):
            return False
        if find_wal_key(self.repo, after) is not None:
            raise CheckFailed(
                f"WAL segment {after} reached {self.repo.location} while recovering to "
                f"{iso(self.target)}: the archive grew past the plan, run the restore again"
            )
        return True

    def stopped_short(self, server: PostgresServer, wanted: str) -> DrkitError:
        """The error for a server that died before pausing at its end, from the fetch
        journal (what wal-fetch could not serve) rather than from log text."""
        journal = read_fetch_journal(server.data_dir / "pg_wal")
        where = f"(log: {server.log_file})"
        failed = [e for e in journal if e.outcome == "failed"]
        if failed:
            first = failed[0]
            return RecoveryStoppedShort(
                f"recovery stopped at WAL {first.name}, which could not be fetched from "
                f"{self.repo.location} ({first.detail}): everything before it was replayed, "
                f"short of {wanted}; the server was not promoted {where}",
                first.name,
            )
        vanished = self._missing_planned(journal)
        if vanished:
            return RecoveryStoppedShort(
                f"recovery stopped at WAL segment {vanished[0]}: it is no longer in "
                f"{self.repo.location} (removed since recovery was planned), short of "
                f"{wanted}; the server was not promoted {where}",
                vanished[0],
            )
        fatal = server.last_fatal()
        if NOT_REACHED in fatal and self.plan.point.kind == "xid" and self._ran_out(journal):
            return RecoveryStoppedShort(
                f"recovery replayed the whole archive ({self.plan.reach.last_segment} and every "
                f"segment before it) and transaction {self.plan.point.xid} did not end in it, "
                f"short of {wanted}; the server was not promoted {where}",
                None,
            )
        if NOT_REACHED in fatal:
            return RecoveryStoppedShort(
                f"recovery ended before {wanted} though wal-fetch failed to serve no file: a "
                "segment it served holds invalid WAL (damaged before it was archived, or an "
                "uncompressed one without a checksum); run drkit verify, "
                f"{self.plan.window.describe()}; the server was not promoted {where}",
                None,
            )
        return OperationError(
            f"PostgreSQL stopped during recovery: {fatal or 'see the log'}; the server was "
            f"not promoted {where}"
        )

    def check(self, replayed: Replayed, server: PostgresServer) -> None:
        """A paused server must have replayed up to its end: the planned LSN, or no
        commit later than the time target."""
        where = f"(log: {server.log_file})"
        if self.end_lsn is not None and parse_lsn(replayed.lsn) < parse_lsn(self.end_lsn):
            raise RecoveryStoppedShort(
                f"recovery paused at {replayed.lsn}, short of {self.describe()}: PostgreSQL "
                "paused on its own (a hot standby setting lower than the primary's, such as "
                f"max_connections, does that); the server was stopped, not promoted {where}",
                None,
            )
        if (
            self.target is not None
            and replayed.last_commit is not None
            and (
                replayed.last_commit > self.target
                or (not self.plan.point.inclusive and replayed.last_commit == self.target)
            )
        ):
            raise CheckFailed(
                f"recovery to {iso(self.target)} replayed a commit of "
                f"{iso(replayed.last_commit)}; the server was stopped, not promoted {where}"
            )
        self._check_point(replayed, server, where)
        for entry in read_fetch_journal(server.data_dir / "pg_wal"):
            if entry.outcome == "failed":  # served on a later try: the end was reached
                log.warning("fetching %s failed once during recovery: %s", entry.name, entry.detail)

    def _check_point(self, replayed: Replayed, server: PostgresServer, where: str) -> None:
        """A target of another kind than a time, checked on the paused server itself:
        a name or ``immediate`` paused exactly at or past its LSN, an LSN at or past it
        (inclusive), a transaction ended (inclusive) or not (exclusive)."""
        point, stop = self.plan.point, self.plan.stop_lsn
        reached = parse_lsn(replayed.lsn)
        short = False
        if point.kind == "name":
            short = reached != parse_lsn(str(stop))  # the end of the restore point's record
        elif point.kind == "immediate" or (point.kind == "lsn" and point.inclusive):
            short = reached < parse_lsn(str(stop))
        elif point.kind == "xid":
            status = xact_status(server, int(str(point.xid)))
            ended = status in ("committed", "aborted")
            short = not ended if point.inclusive else False
            if ended and not point.inclusive:
                raise CheckFailed(
                    f"recovery to {point.describe()} replayed the end of that transaction "
                    f"({status}); the server was stopped, not promoted {where}"
                )
        if short:
            raise RecoveryStoppedShort(
                f"recovery paused at {replayed.lsn}, not at {self.describe()}; the server "
                f"was stopped, not promoted {where}",
                None,
            )

    def record(self, result: PitrResult, replayed: Replayed) -> None:
        result.lsn = replayed.lsn
        result.reached_at = replayed.last_commit or consistent_point(self.plan.manifest)
        position = max(parse_lsn(replayed.lsn) - 1, 0)
        result.timeline = timeline_at(position, self.plan.followed.timeline, self.plan.history)


def xact_status(server: PostgresServer, xid: int) -> str:
    """``pg_xact_status`` of a transaction on a (paused) server: committed, aborted, in
    progress; a transaction the server has not seen yet is ``future``."""
    try:
        row = server.query(f"SELECT pg_xact_status('{int(xid)}'::xid8)")
    except DatabaseError as exc:
        if "in the future" in str(exc):
            return "future"
        raise
    return str(row[0]) if row and row[0] is not None else "unknown"
