"""Backups stored without a database, for the retention, prune, keep and delete tests:
what lies in a ``file://`` repository is what retention is about."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drkit.catalog import make_backup_id, write_manifest
from drkit.storage import Repository
from tests.builders import build_manifest

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def store_backup(
    repo: Repository,
    started: datetime,
    kind: str = "logical",
    *,
    manifest: bool = True,
    wal_start_segment: str | None = None,
    wal_stop_segment: str | None = None,
    parent: str | None = None,
) -> str:
    backup_id = make_backup_id(started, kind)
    name = "base.tar" if kind == "physical" else "app.dump"
    obj = repo.store(f"backups/{backup_id}/{name}", io.BytesIO(b"x" * 1000), database="app")
    if manifest:
        write_manifest(
            repo,
            build_manifest(
                kind,
                backup_id=backup_id,
                at=started,
                duration=timedelta(minutes=3),
                environment=repo.env,
                consistent_at=started + timedelta(minutes=1),
                objects=[obj],
                wal_start_segment=wal_start_segment,
                wal_stop_segment=wal_stop_segment,
                parent=parent,
            ),
        )
    return backup_id


def files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def nightly(repo: Repository, days: int) -> list[str]:
    """A backup at 02:00 Rome (01:00 UTC in winter) on each of the last ``days`` days."""
    return [
        store_backup(repo, datetime(2026, 11, 27, 1, 0, tzinfo=UTC) - timedelta(days=i))
        for i in range(days)
    ]


def write_prune_policy(root: Path, extra: dict[str, Any] | None = None, **retention: Any) -> Path:
    """A policy directory for ``prod`` on a ``file://`` repository under ``root``
    (``extra``: more top-level keys)."""
    policy_dir = root / "policies"
    policy_dir.mkdir(exist_ok=True)
    doc = {
        "environment": "prod",
        "database": {"url": "postgresql://u:sekret@localhost/app"},
        "repository": {"url": f"file://{root / 'repo'}", "compression": {"algorithm": "none"}},
        "schedule": {"timezone": "Europe/Rome"},
        "retention": retention,
        **(extra or {}),
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    return policy_dir
