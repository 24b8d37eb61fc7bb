"""``prune`` against a real ``file://`` repository: what is left on disk is what the
retention rules (:mod:`drkit.backup.retention`) say.

The backups here are stored through the repository layer (objects, then the manifest
last) without a database: retention is about what lies in the repository.  The CLI
tests and the scheduler tests prune backups taken by pg_dump.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drkit.backup.prune import plan_prune, prune
from drkit.backup.retention import current_tiers
from drkit.catalog import list_backups
from drkit.config import Policy, parse_policy
from drkit.errors import StorageError
from drkit.storage import Backend, Repository
from tests.prune_support import NOW, files, nightly, store_backup


def make_policy(root: Path, **retention: Any) -> Policy:
    raw = {
        "environment": "prod",
        "database": {"url": "postgresql://u:sekret@localhost/app"},
        "repository": {"url": f"file://{root}", "compression": {"algorithm": "none"}},
        "schedule": {"timezone": "Europe/Rome"},
        "retention": retention,
    }
    return parse_policy("prod", raw, "test-policy.yaml")


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.for_policy(make_policy(tmp_path / "repo"))


def test_dry_run_deletes_nothing_and_says_why(tmp_path: Path, repo: Repository) -> None:
    ids = nightly(repo, 10)  # newest first: 27th .. 18th
    root = tmp_path / "repo"
    before = files(root)
    policy = make_policy(root, daily=3, weekly=2)
    result = prune(repo, policy, dry_run=True, now=NOW)
    assert files(root) == before
    data = result.document().model_dump(mode="json")
    actions = {b["id"]: (b["action"], b["reasons"]) for b in data["backups"]}
    assert actions[ids[0]] == ("KEEP", ["daily 2026-11-27", "weekly 2026-W48", "newest"])
    assert actions[ids[1]] == ("KEEP", ["daily 2026-11-26"])
    assert actions[ids[2]] == ("KEEP", ["daily 2026-11-25"])
    assert actions[ids[5]] == ("KEEP", ["weekly 2026-W47"])  # Sunday 22nd
    assert {i for i, (a, _) in actions.items() if a == "DELETE"} == {
        ids[3],
        ids[4],
        ids[6],
        ids[7],
        ids[8],
        ids[9],
    }
    assert data["oldest_restorable"] == "2026-11-22T01:01:00Z"
    assert data["dry_run"] is True and data["deleted_objects"] == 0


def test_prune_leaves_exactly_the_kept_backups_and_twice_equals_once(
    tmp_path: Path, repo: Repository
) -> None:
    ids = nightly(repo, 10)
    root = tmp_path / "repo"
    policy = make_policy(root, daily=3, weekly=2)
    planned = {b.id for b in plan_prune(repo, policy, now=NOW).plan.kept}
    result = prune(repo, policy, now=NOW)
    assert {m.id for m in list_backups(repo)} == planned == {ids[0], ids[1], ids[2], ids[5]}
    left = {p.name for p in (root / "prod" / "backups").iterdir()}
    assert left == planned  # the deleted backups' directories are gone entirely
    assert result.deleted_objects == 6 * 2  # manifest + dump of each
    after_first = files(root)
    again = prune(repo, policy, now=NOW)
    assert files(root) == after_first
    assert again.deleted_objects == 0 and again.plan.deleted == []


def test_zero_counts_keep_only_the_newest(tmp_path: Path, repo: Repository) -> None:
    ids = nightly(repo, 4)
    prune(repo, make_policy(tmp_path / "repo"), now=NOW)
    assert [m.id for m in list_backups(repo)] == [ids[0]]


class FailingDeletes(Backend):
    """A backend whose deletes start failing after ``allowed`` calls (a crash mid-prune)."""

    def __init__(self, inner: Backend, allowed: int) -> None:
        self.inner = inner
        self.allowed = allowed
        self.location = inner.location
        self.deleted: list[str] = []

    def put_stream(self, key: str, stream: Any, size_hint: int | None = None) -> int:
        return self.inner.put_stream(key, stream, size_hint)

    def open_read(self, key: str) -> Any:
        return self.inner.open_read(key)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def head(self, key: str) -> Any:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        if len(self.deleted) >= self.allowed:
            raise StorageError(f"cannot delete {key}: injected failure")
        self.deleted.append(key)
        self.inner.delete(key)


def test_crash_mid_prune_never_leaves_a_listed_backup_with_missing_objects(
    tmp_path: Path, repo: Repository
) -> None:
    ids = nightly(repo, 2)
    policy = make_policy(tmp_path / "repo")
    failing = FailingDeletes(repo.backend, allowed=1)
    broken = Repository(failing, "prod", policy.repository)
    with pytest.raises(StorageError):
        prune(broken, policy, now=NOW)
    assert failing.deleted == [f"prod/backups/{ids[1]}/manifest.json"]
    # the old backup is no longer listed, though its dump is still there
    assert [m.id for m in list_backups(repo)] == [ids[0]]
    assert (tmp_path / "repo" / "prod" / "backups" / ids[1] / "app.dump").exists()
    # its leftovers go once they are older than the grace period
    result = prune(repo, policy, now=datetime.now(UTC) + timedelta(days=2))
    assert [o.id for o in result.orphans if o.action == "DELETE"] == [ids[1]]
    assert not (tmp_path / "repo" / "prod" / "backups" / ids[1]).exists()
    assert [m.id for m in list_backups(repo)] == [ids[0]]


def test_leftovers_younger_than_the_grace_period_are_kept(tmp_path: Path, repo: Repository) -> None:
    newest = nightly(repo, 1)[0]
    root = tmp_path / "repo"
    in_progress = store_backup(repo, NOW - timedelta(minutes=5), manifest=False)
    stale = store_backup(repo, NOW - timedelta(days=3), manifest=False)
    stale_file = root / "prod" / "backups" / stale / "app.dump"
    old = (NOW - timedelta(days=3)).timestamp()
    os.utime(stale_file, (old, old))
    policy = make_policy(root, orphan_grace="24h")
    now = datetime.fromtimestamp(stale_file.stat().st_mtime, UTC) + timedelta(days=3)
    fresh_file = root / "prod" / "backups" / in_progress / "app.dump"
    os.utime(fresh_file, (now.timestamp() - 60, now.timestamp() - 60))
    dry = prune(repo, policy, dry_run=True, now=now)
    assert {o.id: o.action for o in dry.orphans} == {in_progress: "KEEP", stale: "DELETE"}
    assert stale_file.exists()
    prune(repo, policy, now=now)
    assert not stale_file.exists()
    assert fresh_file.exists()
    assert [m.id for m in list_backups(repo)] == [newest]


def test_unreadable_manifest_is_never_deleted(tmp_path: Path, repo: Repository) -> None:
    ids = nightly(repo, 3)
    manifest = tmp_path / "repo" / "prod" / "backups" / ids[2] / "manifest.json"
    manifest.write_text("{not json")
    result = prune(repo, make_policy(tmp_path / "repo"), now=NOW)
    assert manifest.exists()
    assert set(result.unreadable) == {ids[2]}
    assert [m.id for m in list_backups(repo)] == [ids[0]]


def test_wal_older_than_oldest_kept_physical_backup_is_deleted(
    tmp_path: Path, repo: Repository
) -> None:
    root = tmp_path / "repo"
    segs = [f"0000000100000000000000{n:02X}" for n in range(1, 0x14)]
    for seg in segs:
        repo.backend.put_bytes(f"prod/wal/{seg}", b"w")
    repo.backend.put_bytes("prod/wal/00000002.history", b"h")
    old = store_backup(
        repo, datetime(2026, 11, 8, 2, tzinfo=UTC), "physical", wal_start_segment=segs[2]
    )
    kept = store_backup(
        repo, datetime(2026, 11, 15, 2, tzinfo=UTC), "physical", wal_start_segment=segs[10]
    )
    newest = store_backup(
        repo, datetime(2026, 11, 22, 2, tzinfo=UTC), "physical", wal_start_segment=segs[16]
    )
    logical = nightly(repo, 1)[0]
    result = prune(repo, make_policy(root, weekly=2), now=NOW)
    assert {m.id for m in list_backups(repo)} == {kept, newest, logical}
    assert old in {b.id for b in result.plan.deleted}
    assert result.wal_cutoff == segs[10]
    left = sorted(p.name for p in (root / "prod" / "wal").iterdir())
    assert left == sorted(["00000002.history", *segs[10:]])


def test_tiers_for_drkit_backups(tmp_path: Path, repo: Repository) -> None:
    ids = nightly(repo, 3)
    tiers = current_tiers(make_policy(tmp_path), list_backups(repo))
    assert tiers == {ids[0]: ["newest"], ids[1]: [], ids[2]: []}
    tiers = current_tiers(make_policy(tmp_path, daily=2), list_backups(repo))
    assert tiers[ids[1]] == ["daily 2026-11-26"]
