"""Immutable backups: ``repository.object_lock`` against a real S3 API (moto's server
enforces object lock: a locked version cannot be deleted).

Every object drkit writes carries the policy's retention; ``check`` refuses a bucket
without object lock; ``prune`` keeps what the store has locked, with the reason, and
deletes it once the lock has ended; ``delete`` refuses a locked backup.  The lock-ended
path runs prune with a clock past the objects' retain-until date (prune's ``now``, as the
retention tests do): S3 refuses a retention date in the past, so an object is never
written already unlocked here.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drkit.backup.prune import prune
from drkit.catalog import list_backups
from drkit.config import load_policy
from drkit.storage import Repository
from tests.builders import write_policy
from tests.fix_cli import DrkitRunner
from tests.fix_s3 import S3Server
from tests.prune_support import NOW, store_backup

LOCK = {"mode": "governance", "days": 1}
UNUSED_DB = "postgresql://u:sekret@localhost/app"


def lock_policy(
    tmp_path: Path, s3: S3Server, bucket: str, db_url: str = UNUSED_DB, **extra: Any
) -> Path:
    repository = {
        "url": f"s3://{bucket}/drkit",
        "endpoint_url": s3.endpoint,
        "region": "us-east-1",
        "compression": {"algorithm": "none"},
        "object_lock": LOCK,
    }
    return write_policy(tmp_path / "policies", "prod", db_url, repository, **extra)


def retention(s3: S3Server, bucket: str, key: str) -> tuple[str | None, datetime | None]:
    head = s3.client().head_object(Bucket=bucket, Key=key)
    return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")


def versions(s3: S3Server, bucket: str) -> tuple[list[str], list[str]]:
    """(keys of stored versions, keys of delete markers): what the store really holds."""
    found = s3.client().list_object_versions(Bucket=bucket)
    return (
        sorted(v["Key"] for v in found.get("Versions", [])),
        sorted(m["Key"] for m in found.get("DeleteMarkers", [])),
    )


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_every_object_drkit_writes_carries_the_policy_retention(
    tmp_path: Path,
    s3_server: S3Server,
    database: tuple[str, str],
    run_drkit: DrkitRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real backup (single PUTs), an exclusive store (WAL's conditional PUT) and a
    multipart upload (moto drops the lock headers of CreateMultipartUpload: drkit must
    notice and lock the object, or fail) each come out locked for the policy's days."""
    bucket = s3_server.create_bucket(object_lock=True)
    policy_dir = lock_policy(tmp_path, s3_server, bucket, database[1])
    before = datetime.now(UTC).replace(microsecond=0)
    done = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 0, done.stderr
    backup_id = json.loads(done.stdout)["id"]
    monkeypatch.setattr("drkit.storage.s3.PART_SIZE", 5 * 1024 * 1024)
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    try:
        repo.backend.transfer.multipart_threshold = 5 * 1024 * 1024
        repo.backend.transfer.multipart_chunksize = 5 * 1024 * 1024
        repo.store("wal/000000010000000000000001", io.BytesIO(b"w" * 1000), exclusive=True)
        repo.store("check/big", io.BytesIO(b"b" * (11 * 1024 * 1024)))
    finally:
        repo.close()
    after = datetime.now(UTC)
    keys = sorted(s3_server.objects(bucket))
    assert f"drkit/prod/backups/{backup_id}/manifest.json" in keys
    assert "drkit/prod/wal/000000010000000000000001" in keys
    assert "drkit/prod/check/big" in keys
    for key in keys:
        mode, until = retention(s3_server, bucket, key)
        assert mode == "GOVERNANCE", key
        assert until is not None
        assert before + timedelta(days=1) <= until <= after + timedelta(days=1), key


def test_prune_keeps_what_the_store_locked_and_deletes_it_once_the_lock_ended(
    tmp_path: Path, s3_server: S3Server, run_drkit: DrkitRunner
) -> None:
    bucket = s3_server.create_bucket(object_lock=True)
    policy_dir = lock_policy(
        tmp_path,
        s3_server,
        bucket,
        schedule={"timezone": "UTC"},
        retention={"orphan_grace": "1h"},
    )
    policy = load_policy("prod", policy_dir)
    repo = Repository.for_policy(policy)
    segs = [f"0000000100000000000000{n:02X}" for n in range(1, 7)]
    for seg in segs:
        repo.backend.put_bytes(f"prod/wal/{seg}", b"w")
    old = store_backup(
        repo, datetime(2026, 11, 20, 2, tzinfo=UTC), "physical", wal_start_segment=segs[1]
    )
    newest = store_backup(
        repo, datetime(2026, 11, 22, 2, tzinfo=UTC), "physical", wal_start_segment=segs[3]
    )
    leftover = store_backup(repo, datetime(2026, 11, 21, 2, tzinfo=UTC), "physical", manifest=False)
    written = set(s3_server.objects(bucket))
    locked_until = max(retention(s3_server, bucket, k)[1] or NOW for k in written)

    # within the lock: nothing retention gives up is asked of the store
    result = prune(repo, policy, now=NOW)
    decisions = {d.backup.id: d for d in result.plan.decisions}
    assert decisions[old].keep and decisions[newest].keep
    assert any(
        r.startswith("locked by the store until ") and r.endswith("(object lock)")
        for r in decisions[old].reasons
    ), decisions[old].reasons
    assert result.wal_cutoff == segs[1]  # the locked backup keeps the WAL it needs
    assert result.wal_locked == [f"prod/wal/{segs[0]}"]
    assert result.document().wal.locked == 1
    assert set(s3_server.objects(bucket)) == written
    assert versions(s3_server, bucket)[1] == []  # not even hidden behind a delete marker

    # the operator's dry run says why, in one line per backup and one for the WAL
    done = run_drkit("prune", "prod", "--dry-run", policy_dir=policy_dir)
    assert done.code == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if ln.split()[1:2] == [old]]
    assert line.startswith("KEEP") and "locked by the store until" in line
    assert f"1 WAL files older than {segs[1]} kept: locked by the store until" in done.stdout

    # an expired leftover the store still locks is kept too, with the reason
    mid = datetime.now(UTC) + timedelta(hours=12)
    result = prune(repo, policy, now=mid, dry_run=True)
    (orphan,) = result.orphans
    assert orphan.id == leftover and orphan.action == "KEEP"
    assert orphan.reason.startswith("no manifest, locked by the store until ")

    # once the lock has ended, prune deletes what retention gives up
    result = prune(repo, policy, now=locked_until + timedelta(minutes=1))
    assert [m.id for m in list_backups(repo)] == [newest]
    assert result.wal_cutoff == segs[3] and result.wal_locked == []
    left = set(s3_server.objects(bucket))
    assert not any(
        k.startswith((f"drkit/prod/backups/{old}", "drkit/prod/backups/" + leftover)) for k in left
    )
    assert sorted(k for k in left if "/wal/" in k) == [f"drkit/prod/wal/{s}" for s in segs[3:]]
    repo.close()


def test_prune_respects_a_bucket_default_retention_the_policy_does_not_mention(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """The store locks objects by its own default rule, unknown to the policy: prune must
    still not hide them behind delete markers."""
    bucket = s3_server.create_bucket(object_lock=True)
    s3_server.client().put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    repository = {
        "url": f"s3://{bucket}/drkit",
        "endpoint_url": s3_server.endpoint,
        "region": "us-east-1",
        "compression": {"algorithm": "none"},
    }
    policy_dir = write_policy(
        tmp_path / "policies", "prod", UNUSED_DB, repository, schedule={"timezone": "UTC"}
    )
    policy = load_policy("prod", policy_dir)
    repo = Repository.for_policy(policy)
    old = store_backup(repo, datetime(2026, 11, 20, 2, tzinfo=UTC))
    newest = store_backup(repo, datetime(2026, 11, 21, 2, tzinfo=UTC))
    result = prune(repo, policy, now=NOW)
    assert [m.id for m in list_backups(repo)] == [old, newest]
    assert any(r.startswith("locked by the store") for r in result.plan.reasons(old))
    assert versions(s3_server, bucket)[1] == []
    repo.close()


def test_check_refuses_a_bucket_without_object_lock(
    tmp_path: Path,
    s3_server: S3Server,
    database: tuple[str, str],
    run_drkit: DrkitRunner,
) -> None:
    plain = s3_server.create_bucket()
    policy_dir = lock_policy(tmp_path, s3_server, plain, database[1])
    done = run_drkit("check", "prod", "--json", policy_dir=policy_dir)
    assert done.code == 3, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["object lock"]["status"] == "FAIL"
    assert "does not have object lock enabled" in checks["object lock"]["detail"]
    assert s3_server.objects(plain) == {}  # no probe written into an unlockable bucket

    locked = s3_server.create_bucket(object_lock=True)
    policy_dir = lock_policy(tmp_path, s3_server, locked, database[1])
    done = run_drkit("check", "prod", "--json", policy_dir=policy_dir)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["object lock"]["status"] == "PASS", done.stdout
    assert checks["repository"]["status"] == "PASS", done.stdout


def test_delete_refuses_a_locked_backup_on_s3(
    tmp_path: Path, s3_server: S3Server, run_drkit: DrkitRunner
) -> None:
    bucket = s3_server.create_bucket(object_lock=True)
    policy_dir = lock_policy(tmp_path, s3_server, bucket)
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    old = store_backup(repo, datetime(2026, 11, 20, 2, tzinfo=UTC))
    store_backup(repo, datetime(2026, 11, 21, 2, tzinfo=UTC))
    repo.close()
    before = versions(s3_server, bucket)
    done = run_drkit("delete", "prod", old, policy_dir=policy_dir)
    assert done.code == 4, done.stderr
    line = one_line(done.stderr)
    assert f"backup {old}: " in line and "is locked by the store until" in line
    assert versions(s3_server, bucket) == before


def test_object_lock_on_a_file_repository_is_a_policy_error(
    tmp_path: Path, run_drkit: DrkitRunner
) -> None:
    repository = {"url": f"file://{tmp_path / 'repo'}", "object_lock": LOCK}
    policy_dir = write_policy(tmp_path / "policies", "prod", UNUSED_DB, repository)
    done = run_drkit("policy", "check", "prod", policy_dir=policy_dir)
    assert done.code == 2, done.stderr
    assert "object_lock needs an s3:// repository" in one_line(done.stderr)
