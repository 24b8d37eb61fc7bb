"""Builders of what tests set up by hand: policies, manifests and pg_wal directories.

One place each, so that a field drkit adds to a policy or a manifest is added here once
and every test's document stays valid.  The builders write plain files and build plain
objects; they start no server and touch no repository (the fixtures in ``fix_pg``,
``fix_s3`` and ``fix_cli`` do that).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from drkit.catalog import Manifest

if TYPE_CHECKING:
    from drkit.storage.repository import StoredObject
    from tests.fix_cli import AgeKey

#: a database url no test connects to: the WAL commands and offline checks never log in
UNUSED_DB_URL = "${PROD_DATABASE_URL}"

#: the moment the manifest builders put a backup at unless told otherwise
NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)

SEGMENT_SIZE = 16 * 1024 * 1024


# ---------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------


def policy_doc(env: str, db_url: str, repository: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A policy document: ``environment``, ``database.url``, ``repository``, then ``extra``
    (an ``environment`` in ``extra`` overrides the name's)."""
    doc: dict[str, Any] = {
        "environment": extra.pop("environment", env),
        "database": {"url": db_url},
        "repository": dict(repository),
    }
    doc.update(extra)
    return doc


def write_policy(
    directory: Path,
    env: str = "prod",
    db_url: str = UNUSED_DB_URL,
    repository: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``<directory>/<env>.yaml`` (creating the directory); returns the directory."""
    if repository is None:
        raise TypeError("write_policy needs a repository block")
    directory.mkdir(parents=True, exist_ok=True)
    doc = policy_doc(env, db_url, repository, **extra)
    (directory / f"{env}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def encryption(recipients: list[AgeKey], identities: list[AgeKey] | None = None) -> dict[str, Any]:
    """A policy's ``repository`` additions for age keys: ``{"encryption": {...}}``."""
    block: dict[str, Any] = {"recipients": [k.recipient for k in recipients]}
    if identities:
        block["identity_files"] = [str(k.identity) for k in identities]
    return {"encryption": block}


# ---------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------


def build_manifest(
    kind: str = "logical",
    *,
    at: datetime = NOW,
    backup_id: str | None = None,
    databases: Iterable[str] = ("app",),
    environment: str = "prod",
    server_version: str = "16.4",
    duration: timedelta = timedelta(0),
    objects: Iterable[StoredObject] = (),
    **fields: Any,
) -> Manifest:
    """A complete backup's manifest: started ``at``, finished ``duration`` later and
    consistent then (unless ``consistent_at`` is given), id ``<at>-<kind>`` unless given;
    ``fields`` are any other :class:`~drkit.catalog.manifests.Manifest` fields."""
    fields.setdefault("consistent_at", at + duration)
    return Manifest(
        id=backup_id or f"{at:%Y%m%dT%H%M%SZ}-{kind}",
        kind=kind,
        environment=environment,
        databases=list(databases),
        server_version=server_version,
        started_at=at,
        finished_at=at + duration,
        objects=list(objects),
        **fields,
    )


def build_physical_manifest(
    start: str, stop: str, *, wal_start: str, wal_stop: str, timeline: int = 1, **fields: Any
) -> Manifest:
    """A base backup's manifest whose WAL runs from segment ``start`` to ``stop``."""
    return build_manifest(
        "physical",
        wal_start=wal_start,
        wal_stop=wal_stop,
        wal_start_segment=start,
        wal_stop_segment=stop,
        timeline=timeline,
        **fields,
    )


# ---------------------------------------------------------------------------
# pg_wal
# ---------------------------------------------------------------------------


def pg_wal_dir(data_dir: Path) -> Path:
    """``<data_dir>/pg_wal`` with its ``archive_status``, as PostgreSQL lays them out."""
    pg_wal = data_dir / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True, exist_ok=True)
    return pg_wal


def wal_file(pg_wal: Path, name: str, data: bytes, *, ready: bool = True) -> Path:
    """``pg_wal/<name>`` holding ``data``, marked ``.ready`` for the archiver unless not
    ``ready``."""
    path = pg_wal / name
    path.write_bytes(data)
    if ready:
        (pg_wal / "archive_status" / f"{name}.ready").write_text("")
    return path
