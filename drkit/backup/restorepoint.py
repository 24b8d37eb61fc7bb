"""Named restore points: ``drkit restore-point ENV NAME``.

In order: the name is refused if the repository already records it (and again, by a
put-if-absent, when the record is written, so two runs racing cannot both succeed);
``pg_create_restore_point(NAME)`` and ``pg_switch_wal()`` in one statement on the
policy's server; a bounded wait until the segment holding the restore point is in the
repository (``DRKIT_ARCHIVE_WAIT`` seconds, as a base backup waits for its WAL); then
the record ``<env>/restore-points/NAME.json``: the server's time, the LSN, the timeline,
the system identifier, the segment and the next transaction ID.  A restore point exists
for drkit iff its record does, and a record exists only once its WAL is archived, so
``--target-name NAME`` always names a point the archive reaches.

The LSN recorded is what ``pg_create_restore_point`` returns, the end of its record:
where a recovery to that name pauses (``pg_last_wal_replay_lsn()``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drkit.catalog import iso, parse_ts
from drkit.config import Policy
from drkit.documents import Document, Shape, Timestamp, described
from drkit.errors import DatabaseError, ObjectExists, ObjectNotFound, SafetyRefused, UsageError
from drkit.storage import Repository

RESTORE_POINTS_DIR = "restore-points/"


@dataclass(frozen=True)
class RestorePoint:
    """A restore point drkit created and recorded."""

    name: str
    environment: str
    created_at: datetime  # the server's clock
    lsn: str  # the end of the restore point record, as PostgreSQL prints it
    timeline: int
    system_identifier: str
    segment: str  # the WAL segment that holds it (archived before it was recorded)
    next_xid: int | None = None  # the first transaction ID not yet assigned then

    def document(self) -> RestorePointDocument:
        """``drkit restore-point --json``: the point created, archived and recorded."""
        return RestorePointDocument.model_validate({"ok": True, **self.to_dict()})

    def row(self) -> RestorePointRow:
        """This point as ``drkit backups --json`` lists it: the stored record's fields."""
        return RestorePointRow.model_validate(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The stored record (``restore-points/NAME.json``)."""
        return {
            "name": self.name,
            "environment": self.environment,
            "created_at": iso(self.created_at),
            "lsn": self.lsn,
            "timeline": self.timeline,
            "system_identifier": self.system_identifier,
            "segment": self.segment,
            "next_xid": self.next_xid,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RestorePoint:
        created = parse_ts(doc.get("created_at"))
        if created is None:
            raise ValueError("no created_at")
        return cls(
            name=str(doc["name"]),
            environment=str(doc["environment"]),
            created_at=created,
            lsn=str(doc["lsn"]),
            timeline=int(doc["timeline"]),
            system_identifier=str(doc["system_identifier"]),
            segment=str(doc["segment"]),
            next_xid=int(doc["next_xid"]) if doc.get("next_xid") is not None else None,
        )


class RestorePointRow(Shape):
    name: str = described("what --target-name takes")
    environment: str
    created_at: Timestamp = described("the server's clock when it was created")
    lsn: str = described("the end of the restore point's WAL record: where recovery to it pauses")
    timeline: int
    system_identifier: str = described("the cluster it was created on (pg_control_system())")
    segment: str = described("the WAL segment holding it, archived before it was recorded")
    next_xid: int | None = described("the first transaction ID not yet assigned then")


class RestorePointDocument(Document, RestorePointRow):
    """`drkit restore-point ENV NAME --json`: the restore point created, archived and
    recorded"""


def check_restore_point_name(name: str, *, option: str = "NAME") -> None:
    """A restore point name: what PostgreSQL accepts (under 64 bytes) and what can name
    an object in the repository (no path separators, no leading dot, printable)."""
    if (
        not name
        or len(name.encode()) >= 64
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or not name.isprintable()
    ):
        raise UsageError(
            f"{option} must be 1-63 bytes, printable, without '/' or a leading '.', not {name!r}"
        )


def _record_key(name: str) -> str:
    return f"{RESTORE_POINTS_DIR}{name}.json"


def get_restore_point(repo: Repository, name: str) -> RestorePoint | None:
    """The recorded restore point ``name``, or None when the repository has none."""
    from drkit.errors import CheckFailed

    try:
        doc = repo.get_json(_record_key(name))
    except ObjectNotFound:
        return None
    try:
        return RestorePoint.from_dict(doc)
    except (KeyError, TypeError, ValueError):
        raise CheckFailed(
            f"{repo.key(_record_key(name))} is not a restore point record drkit can read"
        ) from None


def list_restore_points(repo: Repository) -> list[RestorePoint]:
    """Every recorded restore point, oldest first (by LSN on its timeline, as the server
    ordered them; unreadable records are skipped with a warning)."""
    import logging

    from drkit.errors import CheckFailed
    from drkit.lsn import parse_lsn

    points = []
    for info in repo.list(RESTORE_POINTS_DIR):
        base = info.key.rsplit("/", 1)[-1]
        if not base.endswith(".json"):
            continue
        try:
            point = get_restore_point(repo, base[: -len(".json")])
        except CheckFailed as exc:
            logging.getLogger(__name__).warning("%s", exc)
            continue
        if point is not None:
            points.append(point)
    return sorted(points, key=lambda p: (p.timeline, parse_lsn(p.lsn)))


def create_restore_point(policy: Policy, name: str, *, wait: float | None = None) -> RestorePoint:
    """Create the restore point ``name`` on the policy's server, wait until its segment is
    archived, and record it (see the module docstring)."""
    from drkit.backup.archivewait import ARCHIVE_WAIT_ENV, DEFAULT_ARCHIVE_WAIT, wait_for_wal
    from drkit.pg import connect, first_line

    check_restore_point_name(name)
    repo = Repository.for_policy(policy)
    if get_restore_point(repo, name) is not None:
        raise SafetyRefused(
            f"restore point {name!r} is already recorded in {repo.location} "
            "(names are never reused: choose another name)"
        )
    dsn = policy.database.url.get_secret_value()
    import psycopg

    try:
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT lsn::text, pg_walfile_name(lsn - 1), clock_timestamp(), "
                "(SELECT system_identifier::text FROM pg_control_system()), "
                "pg_snapshot_xmax(pg_current_snapshot())::text "
                "FROM (SELECT pg_create_restore_point(%s) AS lsn) AS p",
                (name,),
            ).fetchone()
            conn.execute("SELECT pg_switch_wal()")  # the restore point's segment goes out
    except psycopg.Error as exc:
        raise DatabaseError(f"creating restore point {name!r}: {first_line(exc)}") from None
    assert row is not None
    lsn, segment, created, system_identifier, next_xid = row
    point = RestorePoint(
        name=name,
        environment=policy.name,
        created_at=created,
        lsn=str(lsn),
        timeline=int(str(segment)[:8], 16),
        system_identifier=str(system_identifier),
        segment=str(segment),
        next_xid=int(next_xid),
    )
    limit = (
        wait if wait is not None else float(os.environ.get(ARCHIVE_WAIT_ENV, DEFAULT_ARCHIVE_WAIT))
    )
    wait_for_wal(repo, [point.segment], limit, dsn, needed_by=f"restore point {name!r}")
    try:
        repo.put_json(_record_key(name), point.to_dict(), exclusive=True)
    except ObjectExists:
        raise SafetyRefused(
            f"restore point {name!r} was recorded in {repo.location} by another run meanwhile "
            "(names are never reused: choose another name)"
        ) from None
    return point
