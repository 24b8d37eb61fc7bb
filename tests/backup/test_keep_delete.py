"""One backup by hand: ``drkit keep`` holds a backup through ``prune`` (shown in
``drkit backups``), ``drkit delete`` removes one, and every guard of ``delete`` refuses
with exit 4 and one line, leaving the repository byte for byte as it was.

Backups are stored through the repository layer in a real ``file://`` repository (no
database: keeping and deleting are about what lies in the repository); the commands run
as the operator runs them, ``python -m drkit``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drkit.backup.keep import keep_backup
from drkit.backup.prune import delete_by_hand, prune
from drkit.catalog import list_backups
from drkit.config import load_policy
from drkit.errors import SafetyRefused
from drkit.storage import Backend, Repository
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget
from tests.prune_support import NOW, files, nightly, store_backup, write_prune_policy
from tests.reliability.helpers import RepoView


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Repository]:
    policy_dir = write_prune_policy(tmp_path)
    return policy_dir, Repository.for_policy(load_policy("prod", policy_dir))


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_kept_backup_survives_prune_is_listed_and_goes_once_released(
    tmp_path: Path, setup: tuple[Path, Repository], run_cli: DrkitRunner
) -> None:
    policy_dir, repo = setup
    ids = nightly(repo, 4)  # newest first; no retention rule keeps anything but the newest
    kept = run_cli("keep", "prod", ids[2], "--json", policy_dir=policy_dir)
    assert kept.code == 0, kept.stderr
    assert kept.json()["kept_until"] == "forever" and kept.json()["kept"] is True
    assert (tmp_path / "repo" / "prod" / "backups" / ids[2] / "keep.json").exists()

    listed = run_cli("backups", "prod", "--json", policy_dir=policy_dir, check=True).json()
    rows = {b["id"]: b for b in listed["backups"]}
    assert rows[ids[2]]["kept_until"] == "forever"
    assert rows[ids[2]]["tiers"] == ["kept by hand"]
    assert rows[ids[1]]["kept_until"] is None
    wide = {"COLUMNS": "200"}
    text = run_cli("backups", "prod", policy_dir=policy_dir, env=wide, check=True).stdout
    assert "kept by hand" in text

    pruned = run_cli("prune", "prod", "--json", policy_dir=policy_dir, check=True).json()
    assert {b["id"]: b["action"] for b in pruned["backups"]} == {
        ids[0]: "KEEP",
        ids[1]: "DELETE",
        ids[2]: "KEEP",
        ids[3]: "DELETE",
    }
    assert [m.id for m in list_backups(repo)] == [ids[2], ids[0]]

    released = run_cli("keep", "prod", ids[2], "--release", "--json", policy_dir=policy_dir)
    assert released.code == 0, released.stderr
    assert released.json()["previous_until"] == "forever" and released.json()["kept"] is False
    run_cli("prune", "prod", policy_dir=policy_dir, check=True)
    assert [m.id for m in list_backups(repo)] == [ids[0]]


def test_a_keep_until_a_date_holds_until_then_and_not_after(
    setup: tuple[Path, Repository],
) -> None:
    policy_dir, repo = setup
    policy = load_policy("prod", policy_dir)
    ids = nightly(repo, 2)
    keep_backup(repo, ids[1], NOW + timedelta(days=10), now=NOW)
    dry = prune(repo, policy, dry_run=True, now=NOW + timedelta(days=9))
    assert dry.plan.reasons(ids[1]) == ("kept by hand until 2026-12-07T12:00:00Z",)
    assert dry.document().backups[1].kept_until == "2026-12-07T12:00:00Z"
    prune(repo, policy, now=NOW + timedelta(days=9))
    assert ids[1] in {m.id for m in list_backups(repo)}
    prune(repo, policy, now=NOW + timedelta(days=10, seconds=1))
    assert [m.id for m in list_backups(repo)] == [ids[0]]


def test_keep_refuses_what_it_cannot_honour(
    tmp_path: Path, setup: tuple[Path, Repository], run_cli: DrkitRunner
) -> None:
    policy_dir, repo = setup
    ids = nightly(repo, 2)
    before = files(tmp_path / "repo")
    for args, code in (
        (["--until", "2099-01-01T00:00:00"], 2),  # no zone: never guessed
        (["--until", "2020-01-01T00:00:00Z"], 2),  # in the past: would keep nothing
        (["--until", "2099-01-01T00:00:00Z", "--release"], 2),
    ):
        done = run_cli("keep", "prod", ids[1], *args, policy_dir=policy_dir)
        assert done.code == code, (args, done.stderr)
        one_line(done.stderr)
    missing = run_cli("keep", "prod", "20200101T000000Z-logical", policy_dir=policy_dir)
    assert missing.code == 1 and "does not exist" in one_line(missing.stderr)
    assert files(tmp_path / "repo") == before


def test_a_kept_incremental_keeps_its_chain(setup: tuple[Path, Repository]) -> None:
    policy_dir, repo = setup
    day = datetime(2026, 11, 20, 3, tzinfo=UTC)
    full = store_backup(repo, day, "physical", wal_start_segment="000000010000000000000002")
    incr = store_backup(
        repo,
        day + timedelta(days=1),
        "physical",
        wal_start_segment="000000010000000000000004",
        parent=full,
    )
    newest = store_backup(
        repo, day + timedelta(days=7), "physical", wal_start_segment="000000010000000000000010"
    )
    keep_backup(repo, incr, now=NOW)
    result = prune(repo, load_policy("prod", policy_dir), now=NOW)
    assert result.plan.reasons(full) == (f"parent of {incr}",)
    assert {m.id for m in list_backups(repo)} == {full, incr, newest}


def test_delete_removes_exactly_one_backup(
    tmp_path: Path, setup: tuple[Path, Repository], run_cli: DrkitRunner
) -> None:
    policy_dir, repo = setup
    ids = nightly(repo, 3)
    write_prune_policy(tmp_path, daily=3)  # the rules keep it: deleting by hand overrides them
    before = files(tmp_path / "repo")
    done = run_cli("delete", "prod", ids[1], "--json", policy_dir=policy_dir)
    assert done.code == 0, done.stderr
    assert done.json()["deleted_objects"] == 2 and done.json()["tiers"] == ["daily 2026-11-26"]
    after = files(tmp_path / "repo")
    assert {k for k in before if k not in after} == {
        f"prod/backups/{ids[1]}/manifest.json",
        f"prod/backups/{ids[1]}/app.dump",
    }
    assert set(after) <= set(before)
    assert [m.id for m in list_backups(repo)] == [ids[2], ids[0]]


def test_delete_refuses_the_newest_a_parent_and_a_kept_backup(
    tmp_path: Path, setup: tuple[Path, Repository], run_cli: DrkitRunner
) -> None:
    policy_dir, repo = setup
    logical = nightly(repo, 2)
    day = datetime(2026, 11, 20, 3, tzinfo=UTC)
    full = store_backup(repo, day, "physical", wal_start_segment="000000010000000000000002")
    incr = store_backup(
        repo,
        day + timedelta(days=1),
        "physical",
        wal_start_segment="000000010000000000000004",
        parent=full,
    )
    run_cli("keep", "prod", logical[1], policy_dir=policy_dir, check=True)
    before = files(tmp_path / "repo")
    for backup_id, says in (
        (logical[0], "is the newest logical backup of app"),
        (incr, "is the newest physical backup"),  # newest of its kind: a restore needs it
        (full, f"is the parent of incremental backup {incr}"),
        (logical[1], "is kept by hand"),
    ):
        done = run_cli("delete", "prod", backup_id, policy_dir=policy_dir)
        assert done.code == 4, (backup_id, done.stderr)
        line = one_line(done.stderr)
        assert says in line and "nothing deleted" in line, line
    for args, code in (
        (["20200101T000000Z-logical"], 1),  # no such backup
        (["latest"], 2),  # by id only: never the newest by accident
    ):
        done = run_cli("delete", "prod", *args, policy_dir=policy_dir)
        assert done.code == code, (args, done.stderr)
        one_line(done.stderr)
    assert files(tmp_path / "repo") == before


def test_delete_refuses_a_backup_whose_manifest_cannot_be_read(
    tmp_path: Path, setup: tuple[Path, Repository], run_cli: DrkitRunner
) -> None:
    policy_dir, repo = setup
    ids = nightly(repo, 2)
    (tmp_path / "repo" / "prod" / "backups" / ids[1] / "manifest.json").write_text("{not json")
    before = files(tmp_path / "repo")
    done = run_cli("delete", "prod", ids[1], policy_dir=policy_dir)
    assert done.code == 4 and "cannot be read" in one_line(done.stderr)
    assert files(tmp_path / "repo") == before


class LockedObjects(Backend):
    """A backend that reports one object locked by the store (object lock), as an S3
    bucket with a retention period does."""

    def __init__(self, inner: Backend, locked: str, until: datetime) -> None:
        self.inner, self.locked, self.until = inner, locked, until
        self.location = inner.location

    def put_stream(self, key: str, stream: Any, size_hint: int | None = None) -> int:
        return self.inner.put_stream(key, stream, size_hint)

    def open_read(self, key: str) -> Any:
        return self.inner.open_read(key)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def head(self, key: str) -> Any:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def locked_until(self, key: str) -> datetime | None:
        return self.until if key == self.locked else None


def test_delete_refuses_a_locked_backup_until_its_lock_ends(
    tmp_path: Path, setup: tuple[Path, Repository]
) -> None:
    policy_dir, repo = setup
    policy = load_policy("prod", policy_dir)
    ids = nightly(repo, 2)
    dump = f"prod/backups/{ids[1]}/app.dump"
    locked = Repository(
        LockedObjects(repo.backend, dump, NOW + timedelta(days=5)), "prod", policy.repository
    )
    before = files(tmp_path / "repo")
    with pytest.raises(SafetyRefused) as refused:
        delete_by_hand(locked, policy, ids[1], now=NOW)
    assert refused.value.exit_code == 4
    assert f"{dump} is locked by the store until 2026-12-02T12:00:00Z" in str(refused.value)
    assert files(tmp_path / "repo") == before
    delete_by_hand(locked, policy, ids[1], now=NOW + timedelta(days=6))
    assert [m.id for m in list_backups(repo)] == [ids[0]]


class KeepsDuringPrune(Backend):
    """A backend on which ``drkit keep`` of ``target`` lands just as prune starts deleting
    (after prune made its plan)."""

    def __init__(self, repo: Repository, target: str) -> None:
        self.inner = repo.backend
        self.location = self.inner.location
        self.repo, self.target = repo, target
        self.kept = False

    def put_stream(self, key: str, stream: Any, size_hint: int | None = None) -> int:
        return self.inner.put_stream(key, stream, size_hint)

    def open_read(self, key: str) -> Any:
        return self.inner.open_read(key)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def head(self, key: str) -> Any:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        if not self.kept:
            self.kept = True
            keep_backup(self.repo, self.target, now=NOW)
        self.inner.delete(key)


def test_a_keep_that_lands_while_prune_runs_still_holds(setup: tuple[Path, Repository]) -> None:
    policy_dir, repo = setup
    policy = load_policy("prod", policy_dir)
    ids = nightly(repo, 4)  # prune deletes ids[3], ids[2], ids[1], oldest first
    racing = Repository(KeepsDuringPrune(repo, ids[1]), "prod", policy.repository)
    result = prune(racing, policy, now=NOW)
    assert [m.id for m in list_backups(repo)] == [ids[1], ids[0]]
    assert result.errors == [f"backup {ids[1]} was kept while prune ran: left"]


def test_keep_and_delete_on_every_backend(
    request: pytest.FixtureRequest,
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    """The same promises on S3 as on file://: the keep record lands as an object beside
    the manifest, a refusal changes no object, a delete removes exactly one backup."""
    policy_dir = make_policy(
        "prod",
        "postgresql://u:sekret@localhost/app",
        repo_target,
        repository={"compression": {"algorithm": "none"}},
    )
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    view = RepoView(
        repo_target, request.getfixturevalue("s3_server") if repo_target.kind == "s3" else None
    )
    ids = nightly(repo, 3)
    run_cli("keep", "prod", ids[1], policy_dir=policy_dir, check=True)
    assert f"prod/backups/{ids[1]}/keep.json" in view.objects()
    before = view.objects()
    for backup_id in (ids[0], ids[1]):  # the newest; a kept one
        refused = run_cli("delete", "prod", backup_id, policy_dir=policy_dir)
        assert refused.code == 4, refused.stderr
        one_line(refused.stderr)
    assert view.objects() == before
    run_cli("delete", "prod", ids[2], policy_dir=policy_dir, check=True)
    gone = set(before) - set(view.objects())
    assert gone == {f"prod/backups/{ids[2]}/manifest.json", f"prod/backups/{ids[2]}/app.dump"}
    run_cli("prune", "prod", policy_dir=policy_dir, check=True)
    assert [m.id for m in list_backups(repo)] == [ids[1], ids[0]]


def test_a_damaged_keep_record_still_keeps(tmp_path: Path, setup: tuple[Path, Repository]) -> None:
    policy_dir, repo = setup
    policy = load_policy("prod", policy_dir)
    ids = nightly(repo, 3)
    keep_backup(repo, ids[2], now=NOW)
    (tmp_path / "repo" / "prod" / "backups" / ids[2] / "keep.json").write_text("{torn")
    result = prune(repo, policy, now=NOW)
    assert result.plan.reasons(ids[2]) == ("kept by hand (keep record unreadable)",)
    assert [m.id for m in list_backups(repo)] == [ids[2], ids[0]]
    with pytest.raises(SafetyRefused, match="keep record unreadable"):
        delete_by_hand(repo, policy, ids[2], now=NOW)
