"""Which timeline is production's: ``<repo>/<env>/timeline.json`` and the restore marker.

A promoted server starts a new timeline and, if it archives, pushes ``N.history`` and
timeline-N segments into the repository.  The archive alone cannot tell production's
new timeline (a failover) from a restore test's (a copy promoted by ``drkit restore``),
so drkit records production's timeline in one small JSON object, written whole by a
single put (a rename on ``file://``, an atomic PUT on S3):

- ``drkit promote-timeline ENV [TLI]`` records it explicitly;
- ``wal-push`` records the timeline of what it stores, the first time it sees a newer
  one than recorded (or when nothing is recorded yet), **unless** the pushing server is
  a restore test: drkit writes :data:`RESTORE_MARKER` into the data directory of every
  server it recovers (restore, drill, demo) unless ``--archive-mode preserve`` made it
  the new primary.  archive_command runs in the data directory and gets
  ``pg_wal/NAME``, so the marker is found next to ``pg_wal``.

The recorded timeline only moves forward through wal-push; ``promote-timeline`` may set
any timeline.  A server remembers the newest timeline it recorded or saw recorded in
``pg_wal/drkit-timeline.seen`` so that only the first push of a new timeline reads the
repository.  A failure to record fails the push (PostgreSQL retries it): a push that
succeeded without its timeline recorded would let a later ``latest`` restore follow
an older timeline.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.errors import CheckFailed, ObjectNotFound, StorageError
from drkit.wal.keys import find_wal_key
from drkit.wal.names import HISTORY_RE, SEGMENT_RE, history_name

if TYPE_CHECKING:
    from drkit.storage import Repository

log = logging.getLogger(__name__)

TIMELINE_RECORD = "timeline.json"
RESTORE_MARKER = "drkit-restored.json"
_SEEN_CACHE = "drkit-timeline.seen"


def timeline_of(name: str) -> int | None:
    """The timeline a WAL file name belongs to (segment, .partial, .backup or .history)."""
    if SEGMENT_RE.match(name[:24]) or HISTORY_RE.match(name):
        return int(name[:8], 16)
    return None


def read_recorded(repo: Repository) -> dict[str, Any] | None:
    """The recorded production timeline document, or None when nothing is recorded."""
    try:
        doc = repo.get_json(TIMELINE_RECORD)
    except ObjectNotFound:
        return None
    tli = doc.get("timeline")
    if not isinstance(tli, int) or tli < 1:
        raise CheckFailed(
            f"{repo.key(TIMELINE_RECORD)}: no valid timeline in it; record production's "
            "timeline again with drkit promote-timeline ENV TLI"
        )
    return doc


def recorded_timeline(repo: Repository) -> int | None:
    doc = read_recorded(repo)
    return int(doc["timeline"]) if doc else None


def record_timeline(repo: Repository, timeline: int, source: str) -> dict[str, Any]:
    """Write ``timeline`` as production's (one whole-object put)."""
    if timeline < 1:
        raise CheckFailed(f"timeline {timeline} is not a timeline ID (1 or more)")
    previous = read_recorded(repo)
    doc: dict[str, Any] = {
        "timeline": timeline,
        "recorded_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": source,
        "previous": previous.get("timeline") if previous else None,
    }
    repo.put_json(TIMELINE_RECORD, doc)
    log.info("recorded timeline %d as production's for %s (%s)", timeline, repo.env, source)
    return doc


# -- the marker of a restored (test) server --------------------------------------------


def write_restore_marker(pgdata: Path, info: dict[str, Any]) -> None:
    """Mark ``pgdata`` as a restore test: its pushes never record a timeline."""
    path = pgdata / RESTORE_MARKER
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def clear_restore_marker(pgdata: Path) -> None:
    """A recovered server that is production's new primary (``--archive-mode preserve``)."""
    (pgdata / RESTORE_MARKER).unlink(missing_ok=True)


def is_restore_test(pgdata: Path) -> bool:
    return (pgdata / RESTORE_MARKER).exists()


def _read_seen(pg_wal: Path) -> int:
    try:
        return int((pg_wal / _SEEN_CACHE).read_text().strip())
    except (OSError, ValueError):
        return 0


def _write_seen(pg_wal: Path, timeline: int) -> None:
    path = pg_wal / _SEEN_CACHE
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        tmp.write_text(f"{timeline}\n")
        os.replace(tmp, path)
    except OSError as exc:  # only a cache: the next push reads the repository again
        log.debug("cannot write %s: %s", path, exc)


def note_pushed(repo: Repository, pg_wal: Path, names: list[str]) -> int | None:
    """After ``names`` were stored from ``pg_wal``: record a newer timeline if production's.

    Returns the timeline recorded, or None when nothing was written."""
    newest = max((t for n in names if (t := timeline_of(n)) is not None), default=None)
    if newest is None:
        return None
    pgdata = pg_wal.parent
    if is_restore_test(pgdata) or is_restore_test(Path.cwd()):  # archive_command's cwd
        log.info(
            "%s is a drkit restore test (%s): its timeline %d is not recorded as production's",
            pgdata,
            RESTORE_MARKER,
            newest,
        )
        return None
    if newest <= _read_seen(pg_wal):
        return None
    recorded = recorded_timeline(repo)
    if recorded is not None and recorded >= newest:
        if recorded > newest:
            log.warning(
                "this server archives timeline %d but %s records timeline %d as production's; "
                "if this server is production, run drkit promote-timeline %s %d",
                newest,
                repo.key(TIMELINE_RECORD),
                recorded,
                repo.env,
                newest,
            )
        _write_seen(pg_wal, max(recorded, newest))
        return None
    try:
        record_timeline(repo, newest, f"wal-push from {pgdata}")
    except StorageError as exc:
        raise StorageError(
            f"archived, but cannot record timeline {newest} as production's in "
            f"{repo.key(TIMELINE_RECORD)} ({exc}); let this server's OS user write there, "
            f"or record it with drkit promote-timeline {repo.env} {newest}"
        ) from None
    _write_seen(pg_wal, newest)
    return newest


def server_timeline(dsn: str) -> int:
    """The timeline a primary is writing on (refused for a server still in recovery)."""
    from drkit.errors import SafetyRefused
    from drkit.pg import connect

    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL "
            "ELSE pg_walfile_name(pg_current_wal_lsn()) END"
        ).fetchone()
    if row is None or row[0]:
        raise SafetyRefused(
            "the policy's database server is in recovery (a standby or a paused restore): "
            "promote it first, or name the timeline: drkit promote-timeline ENV TLI"
        )
    return int(str(row[1])[:8], 16)


def promote_timeline(repo: Repository, timeline: int, source: str) -> dict[str, Any]:
    """``drkit promote-timeline``: record ``timeline`` as production's after checking that
    the archive knows it (its history file, for any timeline after the first)."""
    if timeline < 1:
        raise CheckFailed(f"timeline {timeline} is not a timeline ID (1 or more)")
    if timeline > 1 and find_wal_key(repo, history_name(timeline)) is None:
        raise CheckFailed(
            f"timeline {timeline} has no {history_name(timeline)} in {repo.location}: "
            "a server on it has not archived yet (check its archive_command), or the "
            "number is wrong"
        )
    return record_timeline(repo, timeline, source)
