"""What a point-in-time recovery stops at: one target of one kind.

``--point-in-time TS|latest``, ``--target-xid XID``, ``--target-lsn LSN``,
``--target-name NAME`` or ``--immediate``: exactly one, checked here before anything is
planned.  ``--exclusive`` (stop just before the target) goes with a time, a transaction
or an LSN, as PostgreSQL's ``recovery_target_inclusive`` does.

A named target resolves to the restore point drkit recorded (:mod:`drkit.backup.
restorepoint`): its LSN and timeline choose the base backup and are what the paused
server must have replayed.  A name drkit did not record is refused: PostgreSQL would
replay to the end of the archive looking for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from drkit.backup import check_restore_point_name
from drkit.catalog import iso
from drkit.errors import UsageError

KINDS = ("time", "latest", "xid", "lsn", "name", "immediate")
_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
#: the largest full transaction ID (epoch and xid, 64 bits)
_MAX_XID = 2**64 - 1


@dataclass(frozen=True)
class RecoveryTarget:
    """One recovery target.  ``time`` for time, ``xid``, ``lsn`` (as PostgreSQL prints
    it), ``name``; ``latest`` and ``immediate`` carry nothing.  ``inclusive``: False
    stops just before the target (``--exclusive``)."""

    kind: str
    time: datetime | None = None
    xid: int | None = None
    lsn: str | None = None
    name: str | None = None
    inclusive: bool = True

    @classmethod
    def at_time(cls, when: datetime | None) -> RecoveryTarget:
        """A time target, or ``latest`` for None (the API before target kinds)."""
        return cls("latest") if when is None else cls("time", time=when)

    def describe(self) -> str:
        """The target as the command line gives it."""
        text = {
            "time": f"--point-in-time {iso(self.time)}",
            "latest": "--point-in-time latest",
            "xid": f"--target-xid {self.xid}",
            "lsn": f"--target-lsn {self.lsn}",
            "name": f"--target-name {self.name}",
            "immediate": "--immediate",
        }[self.kind]
        return text + ("" if self.inclusive else " --exclusive")

    def label(self) -> str:
        """What a report shows as the target: an ISO time, ``latest``, or ``kind:value``."""
        if self.kind == "time":
            return str(iso(self.time))
        if self.kind in ("latest", "immediate"):
            return self.kind
        value = {"xid": self.xid, "lsn": self.lsn, "name": self.name}[self.kind]
        return f"{self.kind}:{value}" + ("" if self.inclusive else " (exclusive)")


def parse_target(
    *,
    point_in_time: str | None,
    xid: str | None,
    lsn: str | None,
    name: str | None,
    immediate: bool,
    exclusive: bool,
) -> RecoveryTarget | None:
    """The one target the options give (None: none given, a logical restore), or a
    usage error naming what is wrong."""
    from drkit.config import parse_timestamp  # lazy: pydantic

    given = [
        flag
        for flag, value in (
            ("--point-in-time", point_in_time),
            ("--target-xid", xid),
            ("--target-lsn", lsn),
            ("--target-name", name),
            ("--immediate", True if immediate else None),
        )
        if value is not None
    ]
    if not given:
        if exclusive:
            raise UsageError(
                "--exclusive needs a target: --point-in-time TS, --target-xid or --target-lsn"
            )
        return None
    if len(given) > 1:
        raise UsageError(f"give exactly one recovery target, not {' and '.join(given)}")
    inclusive = not exclusive
    if exclusive and (immediate or name is not None or point_in_time == "latest"):
        raise UsageError(
            f"--exclusive goes with --point-in-time TS, --target-xid or --target-lsn, not {given[0]}"
            + (" latest" if point_in_time == "latest" else "")
        )
    if point_in_time is not None:
        if point_in_time == "latest":
            return RecoveryTarget("latest")
        when = parse_timestamp(point_in_time, option="--point-in-time")
        return RecoveryTarget("time", time=when.astimezone(UTC), inclusive=inclusive)
    if xid is not None:
        if not xid.isdigit() or not 3 <= int(xid) <= _MAX_XID:
            raise UsageError(
                f"--target-xid must be a transaction ID (a number, 3 or more), not {xid!r}"
            )
        return RecoveryTarget("xid", xid=int(xid), inclusive=inclusive)
    if lsn is not None:
        if not _LSN_RE.match(lsn):
            raise UsageError(f"--target-lsn must be an LSN such as 0/4000060, not {lsn!r}")
        high, low = lsn.split("/")
        return RecoveryTarget("lsn", lsn=f"{int(high, 16):X}/{int(low, 16):X}", inclusive=inclusive)
    if name is not None:
        check_restore_point_name(name, option="--target-name")
        return RecoveryTarget("name", name=name)
    return RecoveryTarget("immediate")


def stop_settings(point: RecoveryTarget) -> dict[str, str] | None:
    """The ``recovery_target_*`` settings (unquoted) of a target that is neither a time nor
    ``latest``."""
    inclusive = "on" if point.inclusive else "off"
    if point.kind == "xid":
        return {"recovery_target_xid": str(point.xid), "recovery_target_inclusive": inclusive}
    if point.kind == "lsn":
        return {"recovery_target_lsn": str(point.lsn), "recovery_target_inclusive": inclusive}
    if point.kind == "name":
        return {"recovery_target_name": str(point.name)}
    if point.kind == "immediate":
        return {"recovery_target": "immediate"}
    return None
