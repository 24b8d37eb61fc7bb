"""The backup catalog: manifests, and which backups exist in an environment's repository.

A backup exists if and only if its ``manifest.json`` does: the manifest is written last,
after every object landed, and deleted first when a backup is pruned.
Directories under ``backups/`` without a manifest are orphans (an interrupted backup)
that ``prune`` removes after a grace period.  A ``keep.json`` beside a manifest records
that a person keeps the backup (``drkit keep``): :class:`Hold`, read with the listing.

Listings are in the server's order (:mod:`drkit.catalog.order`), never by id or host
time: :func:`list_backups` is oldest first, and :func:`resolve_backup` turns ``latest``
into the newest backup of the kinds the calling command can use.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from drkit import __version__
from drkit.catalog.order import (
    ServerPoint,
    chronological,
    describe_skew,
    host_clock_skew,
    newest,
    skewed,
)
from drkit.errors import CheckFailed, NotFoundError, ObjectExists, ObjectNotFound, UsageError
from drkit.lsn import parse_lsn
from drkit.storage import ObjectInfo, Repository, StoredObject

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: beside a manifest: a person keeps this backup (``drkit keep``), see :class:`Hold`
KEEP = "keep.json"
MANIFEST_FORMAT = 1
ID_FORMAT = "%Y%m%dT%H%M%SZ"
KINDS = ("logical", "physical")
#: pg_dump archive formats of a logical backup's databases (manifest ``dump_formats``)
CUSTOM = "custom"  # one object <db>.dump[.zst][.age] (the default, and older manifests)
DIRECTORY = "directory"  # one object per file of the dump: <db>.dir/<file>[.zst][.age]


def make_backup_id(started_at: datetime, kind: str) -> str:
    return f"{started_at.astimezone(UTC).strftime(ID_FORMAT)}-{kind}"


def parse_backup_id(backup_id: str) -> tuple[datetime, str] | None:
    stamp, _, kind = backup_id.partition("-")
    if kind not in KINDS:
        return None
    try:
        return datetime.strptime(stamp, ID_FORMAT).replace(tzinfo=UTC), kind
    except ValueError:
        return None


def backup_prefix(backup_id: str) -> str:
    return f"backups/{backup_id}/"


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def parse_ts(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass
class Manifest:
    id: str
    kind: str
    environment: str
    databases: list[str]
    server_version: str
    started_at: datetime
    finished_at: datetime
    consistent_at: datetime | None
    objects: list[StoredObject]
    drkit_version: str = __version__
    row_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # physical backups
    wal_start: str | None = None
    wal_stop: str | None = None
    wal_start_segment: str | None = None
    wal_stop_segment: str | None = None
    timeline: int | None = None
    backup_label: str | None = None
    #: incremental base backups (PostgreSQL 17+): the backup this one is relative to
    parent: str | None = None
    #: the cluster's pg_control system identifier (physical backups; logical ones too
    #: since drkit orders backups by the server)
    system_identifier: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    dump_formats: dict[str, str] = field(default_factory=dict)  # database -> CUSTOM | DIRECTORY
    #: the WAL position and timeline the data is consistent at, as the server said
    #: (logical: the dump's snapshot; physical: the stop point): with the system
    #: identifier, what orders backups (:mod:`drkit.catalog.order`)
    consistent_lsn: str | None = None
    consistent_timeline: int | None = None
    #: the server's clock minus the host's, in seconds, when the backup read the server
    clock_skew: float | None = None

    def dump_format(self, database: str) -> str:
        return self.dump_formats.get(database, CUSTOM)

    def dump_objects(self, database: str) -> list[StoredObject]:
        """Every stored object of one database's dump (one for the custom format)."""
        return [o for o in self.objects if o.database == database]

    def directory_members(self, database: str) -> list[StoredObject] | None:
        """The objects of a directory-format dump of ``database``; None for a custom one."""
        if self.dump_format(database) != DIRECTORY:
            return None
        return self.dump_objects(database)

    @property
    def incremental(self) -> bool:
        return self.parent is not None

    @property
    def major(self) -> int | None:
        """The PostgreSQL major the backup was taken from (None: not recorded): a
        physical backup runs only on it, a dump restores into it or a newer one."""
        return int(self.server_version.split(".")[0]) if self.server_version else None

    @property
    def size(self) -> int:
        return sum(o.stored_size for o in self.objects)

    @property
    def raw_size(self) -> int:
        return sum(o.raw_size for o in self.objects)

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def server_point(self) -> ServerPoint | None:
        """The consistent point in the server's terms; None when the manifest lacks the
        system identifier or the position (then the server's time orders it)."""
        lsn, timeline = self.consistent_lsn, self.consistent_timeline
        if lsn is None and self.kind == "physical":  # written before consistent_lsn
            lsn = self.wal_stop
            timeline = self.extra.get("stop_timeline") or self.timeline
        if not (self.system_identifier and lsn and timeline):
            return None
        try:
            return ServerPoint(self.system_identifier, int(timeline), parse_lsn(str(lsn)))
        except (TypeError, ValueError):
            return None

    @property
    def restorable_at(self) -> datetime:
        """The point a restore of this backup reaches: its consistent point (its finish
        for a manifest that records none)."""
        return self.consistent_at or self.finished_at

    @property
    def server_time(self) -> datetime:
        """The server's time of the consistent point (``consistent_at``)."""
        return self.consistent_at or self.started_at

    @property
    def host_skew(self) -> float | None:
        """The server's clock minus drkit's host clock while this backup ran (seconds;
        negative: the host was ahead), None when nothing says."""
        return host_clock_skew(
            self.started_at, self.finished_at, self.consistent_at, self.clock_skew
        )

    @property
    def finished_by_server(self) -> datetime:
        """``finished_at``, moved onto the server's clock when the host's was off by more
        than the bound (within it, the host's time is kept as written)."""
        skew = self.host_skew
        if skew is None or not skewed(skew):
            return self.finished_at
        return self.finished_at + timedelta(seconds=skew)

    @property
    def clock_skewed(self) -> bool:
        """The host clock was off by more than the bound: the id and the started and
        finished times are wrong (the order is not: it never reads them)."""
        return skewed(self.host_skew)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "id": self.id,
            "kind": self.kind,
            "environment": self.environment,
            "databases": self.databases,
            "server_version": self.server_version,
            "drkit_version": self.drkit_version,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "consistent_at": iso(self.consistent_at),
            "size": self.size,
            "raw_size": self.raw_size,
            "objects": [o.to_dict() for o in self.objects],
        }
        if self.system_identifier is not None:
            doc["system_identifier"] = self.system_identifier
        if self.consistent_lsn is not None:
            doc["consistent_lsn"] = self.consistent_lsn
            doc["consistent_timeline"] = self.consistent_timeline
        if self.clock_skew is not None:
            doc["clock_skew_seconds"] = self.clock_skew
        if self.kind == "logical":
            doc["row_counts"] = self.row_counts
            if self.dump_formats:
                doc["dump_formats"] = self.dump_formats
        else:
            doc.update(
                wal_start=self.wal_start,
                wal_stop=self.wal_stop,
                wal_start_segment=self.wal_start_segment,
                wal_stop_segment=self.wal_stop_segment,
                timeline=self.timeline,
                backup_label=self.backup_label,
                incremental=self.incremental,
            )
            if self.parent is not None:
                doc["parent"] = self.parent
            if self.row_counts:
                doc["row_counts"] = self.row_counts
        if self.extra:
            doc["extra"] = self.extra
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "manifest") -> Manifest:
        try:
            started = parse_ts(doc["started_at"])
            finished = parse_ts(doc["finished_at"])
            if started is None or finished is None:
                raise ValueError("started_at/finished_at missing")
            if doc.get("incremental") and not doc.get("parent"):
                raise ValueError("an incremental backup without its parent")
            return cls(
                id=str(doc["id"]),
                kind=str(doc["kind"]),
                environment=str(doc["environment"]),
                databases=[str(d) for d in doc.get("databases", [])],
                server_version=str(doc.get("server_version", "")),
                drkit_version=str(doc.get("drkit_version", "")),
                started_at=started,
                finished_at=finished,
                consistent_at=parse_ts(doc.get("consistent_at")),
                objects=[StoredObject.from_dict(o) for o in doc.get("objects", [])],
                row_counts={
                    str(db): {str(t): int(n) for t, n in tables.items()}
                    for db, tables in (doc.get("row_counts") or {}).items()
                },
                wal_start=doc.get("wal_start"),
                wal_stop=doc.get("wal_stop"),
                wal_start_segment=doc.get("wal_start_segment"),
                wal_stop_segment=doc.get("wal_stop_segment"),
                timeline=doc.get("timeline"),
                backup_label=doc.get("backup_label"),
                parent=str(doc["parent"]) if doc.get("parent") else None,
                system_identifier=(
                    str(doc["system_identifier"]) if doc.get("system_identifier") else None
                ),
                extra=dict(doc.get("extra") or {}),
                dump_formats=_dump_formats(doc.get("dump_formats")),
                consistent_lsn=_lsn(doc.get("consistent_lsn")),
                consistent_timeline=(
                    int(doc["consistent_timeline"]) if doc.get("consistent_timeline") else None
                ),
                clock_skew=(
                    float(doc["clock_skew_seconds"])
                    if doc.get("clock_skew_seconds") is not None
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckFailed(f"{source}: unreadable manifest ({exc})") from None


def _lsn(value: Any) -> str | None:
    if value in (None, ""):
        return None
    parse_lsn(str(value))  # ValueError: the manifest is unreadable
    return str(value)


def _dump_formats(value: Any) -> dict[str, str]:
    formats = {str(db): str(f) for db, f in (value or {}).items()}
    for db, fmt in formats.items():
        if fmt not in (CUSTOM, DIRECTORY):
            raise ValueError(f"dump_formats.{db}: unknown format {fmt!r}")
    return formats


def dump_entries(manifest: Manifest) -> list[StoredObject]:
    """One object per database: its custom-format dump, or the first object of its
    directory-format dump (``toc.dat``, stored first); the database's
    :meth:`Manifest.directory_members` then holds the whole directory."""
    seen: set[str] = set()
    out = []
    for obj in manifest.objects:
        if obj.database is not None and obj.database not in seen:
            seen.add(obj.database)
            out.append(obj)
    return out


def write_manifest(repo: Repository, manifest: Manifest) -> None:
    """Publish a backup: the manifest goes last, after every object is stored, and never
    replaces another backup's (an id taken twice fails the second backup, ObjectExists).
    The same manifest found in place is this write's own (a retried request) and stands."""
    relative = backup_prefix(manifest.id) + MANIFEST
    document = manifest.to_dict()
    try:
        repo.put_json(relative, document, exclusive=True)
    except ObjectExists:
        if repo.get_json(relative) != json.loads(json.dumps(document, default=str)):
            raise ObjectExists(
                f"backup id {manifest.id} is already taken in {repo.location}: another "
                "backup published it; this one is discarded (run the backup again)"
            ) from None
    skew = manifest.host_skew
    if skew is not None and manifest.clock_skewed:
        log.warning(
            "backup %s: this host's clock is %s the database server's: the id and started "
            "time are off by as much (backups are ordered by the server); fix the host "
            "clock (NTP)",
            manifest.id,
            describe_skew(skew),
        )


def read_manifest(repo: Repository, backup_id: str) -> Manifest:
    relative = backup_prefix(backup_id) + MANIFEST
    try:
        doc = repo.get_json(relative)
    except ObjectNotFound:
        raise NotFoundError(
            f"backup {backup_id} does not exist in {repo.location} (see: drkit backups {repo.env})"
        ) from None
    return Manifest.from_dict(doc, source=repo.key(relative))


@dataclass(frozen=True)
class Hold:
    """A person keeps a backup through ``prune`` (``drkit keep``), until ``until`` or,
    with None, until released.  A record that cannot be read holds for ever (``problem``
    says why): a keep is never lost to a damaged object."""

    backup_id: str
    until: datetime | None
    kept_at: datetime | None = None
    problem: str | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    @property
    def reason(self) -> str:
        """How retention and ``drkit backups`` name it."""
        if self.problem:
            return "kept by hand (keep record unreadable)"
        return f"kept by hand until {iso(self.until)}" if self.until else "kept by hand"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "id": self.backup_id,
            "until": iso(self.until),
            "kept_at": iso(self.kept_at),
        }


def hold_key(backup_id: str) -> str:
    return backup_prefix(backup_id) + KEEP


def read_hold(repo: Repository, backup_id: str) -> Hold | None:
    """The keep record of a backup; None when nobody keeps it."""
    try:
        doc = repo.get_json(hold_key(backup_id))
    except ObjectNotFound:
        return None
    except CheckFailed as exc:
        return Hold(backup_id, None, problem=str(exc))
    try:
        if doc.get("id") != backup_id:
            raise ValueError(f"it names backup {doc.get('id')!r}")
        return Hold(backup_id, parse_ts(doc.get("until")), parse_ts(doc.get("kept_at")))
    except (TypeError, ValueError) as exc:
        return Hold(backup_id, None, problem=f"{repo.key(hold_key(backup_id))}: {exc}")


@dataclass
class Listing:
    """Everything under ``backups/``: complete backups and manifest-less leftovers."""

    manifests: list[Manifest]
    orphans: dict[str, list[ObjectInfo]]  # backup id -> its objects (no manifest)
    unreadable: dict[str, str]  # backup id -> why its manifest cannot be read
    #: backup id -> its keep record, for the backups (with a manifest) a person keeps
    holds: dict[str, Hold] = field(default_factory=dict)


def scan(repo: Repository) -> Listing:
    objects = repo.list("backups/")
    by_id: dict[str, list[ObjectInfo]] = {}
    start = len(repo.key("backups/"))
    for info in objects:
        backup_id = info.key[start:].split("/", 1)[0]
        by_id.setdefault(backup_id, []).append(info)
    manifests: list[Manifest] = []
    orphans: dict[str, list[ObjectInfo]] = {}
    unreadable: dict[str, str] = {}
    holds: dict[str, Hold] = {}
    for backup_id, infos in by_id.items():
        if any(i.key.endswith("/" + MANIFEST) for i in infos):
            try:
                manifests.append(read_manifest(repo, backup_id))
            except (CheckFailed, NotFoundError) as exc:
                unreadable[backup_id] = str(exc)
                continue
            if any(i.key.endswith("/" + KEEP) for i in infos):
                hold = read_hold(repo, backup_id)
                if hold is not None:
                    holds[backup_id] = hold
        else:
            orphans[backup_id] = infos
    return Listing(chronological(manifests), orphans, unreadable, holds)


def list_backups(repo: Repository, kind: str | None = None) -> list[Manifest]:
    """Complete backups, oldest first in the server's order (:mod:`drkit.catalog.order`)."""
    return [m for m in scan(repo).manifests if kind is None or m.kind == kind]


def newest_holding(
    manifests: list[Manifest], database: str, kind: str | None = None
) -> Manifest | None:
    """The newest backup (of ``kind``) that holds ``database``, or None.

    A partial backup (``drkit backup ENV --database shop``) counts only for the databases
    it holds: it is never the answer for another one."""
    return newest(
        m for m in manifests if database in m.databases and (kind is None or m.kind == kind)
    )


def restorable_span(manifests: Iterable[Manifest]) -> tuple[datetime | None, datetime | None]:
    """(oldest, newest): the points a restore of one of these backups reaches, without
    WAL (the recoverable window's backup part; None, None for no backup)."""
    points = [m.restorable_at for m in manifests]
    return (min(points), max(points)) if points else (None, None)


def skewed_backups(manifests: list[Manifest]) -> list[Manifest]:
    """The backups taken while drkit's host clock disagreed with the server's by more
    than :data:`~drkit.catalog.order.SKEW_BOUND` (their ids and host times are wrong)."""
    return [m for m in manifests if m.clock_skewed]


def resolve_backup(
    repo: Repository,
    ref: str | None,
    *,
    kinds: Collection[str] = KINDS,
    database: str | None = None,
    rng: random.Random | None = None,
    other_kind_hint: str = "",
) -> Manifest:
    """``ID``, ``latest`` (default) or ``random`` to a manifest of one of ``kinds``.

    ``kinds`` are the kinds of backup the calling command can use: ``latest`` is the
    newest of *those* (a logical restore's ``latest`` is the newest logical backup, even
    when a base backup is newer), ``random`` picks among them, and an explicit ``ID`` of
    another kind is refused (with ``other_kind_hint`` saying what to do instead).
    With ``database``, only backups holding that database count: ``latest`` is the
    newest backup holding it (not a newer partial backup of another database), and an
    explicit ``ID`` that does not hold it is refused."""
    ref = ref or "latest"
    wanted = [k for k in KINDS if k in kinds]
    if ref in ("latest", "random"):
        holding = [m for m in list_backups(repo) if database is None or database in m.databases]
        backups = [m for m in holding if m.kind in wanted]
        if not backups:
            others = sorted({m.kind for m in holding} - set(wanted))
            what = f"{' or '.join(wanted)} backups" if others else "backups"
            if database is not None:
                what += f" holding database {database}"
            held = f" (it holds {' and '.join(others)} backups only)" if others else ""
            hint = f"; {other_kind_hint}" if others and other_kind_hint else ""
            raise NotFoundError(
                f"no {what} in {repo.location}{held}: run drkit backup {repo.env} first{hint}"
            )
        if ref == "latest":
            return backups[-1]
        return (rng or random.Random()).choice(backups)  # noqa: S311 - not for secrets
    if parse_backup_id(ref) is None:
        raise UsageError(
            f"{ref!r} is not a backup id (like 20261127T020000Z-logical), 'latest' or 'random'"
        )
    manifest = read_manifest(repo, ref)
    if manifest.kind not in wanted:
        raise UsageError(
            f"backup {ref} is a {manifest.kind} backup, and this takes {' or '.join(wanted)} "
            f"backups{f': {other_kind_hint}' if other_kind_hint else ''}"
        )
    if database is not None and database not in manifest.databases:
        raise UsageError(
            f"backup {ref} does not hold database {database} (it holds "
            f"{', '.join(manifest.databases) or 'none'}): pick another backup"
        )
    return manifest
