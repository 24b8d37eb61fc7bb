"""Shared helpers of the reliability suite: real processes, real repositories."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.builders import build_manifest
from tests.fix_cli import DrkitRunner, Result
from tests.fix_s3 import RepoTarget, S3Server

TMP_MARK = ".drkit-tmp-"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def start_drkit(
    *args: str, policy_dir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``drkit`` as a background process (for killing, or running side by side)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=full_env,
    )


def files_under(root: Path) -> dict[str, int]:
    """Every file below ``root`` (temp files included), by relative path."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
    }


def listed_ids(run_drkit: DrkitRunner, policy_dir: Path, env: str = "prod") -> list[str]:
    result = run_drkit("backups", env, "--json", policy_dir=policy_dir)
    assert result.code == 0, result.stderr
    return sorted(row["id"] for row in result.json()["backups"])  # oldest first


def verify_all(run_drkit: DrkitRunner, policy_dir: Path, env: str = "prod") -> Result:
    return run_drkit("verify", env, "--all", "--json", policy_dir=policy_dir)


def manifests(root: Path, env: str = "prod") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in (root / env / "backups").glob("*/manifest.json"):
        found[path.parent.name] = json.loads(path.read_text())
    return found


class RepoView:
    """Raw access to a test repository (``file://`` or S3), bypassing drkit."""

    def __init__(self, repo: RepoTarget, s3: S3Server | None = None) -> None:
        self.repo = repo
        self.s3 = s3

    def objects(self) -> dict[str, int]:
        """Every stored object (``file://`` temp files included) relative to the root."""
        if self.repo.kind == "file":
            assert self.repo.root is not None
            return files_under(self.repo.root)
        assert self.s3 is not None and self.repo.bucket is not None
        return {k.removeprefix("drkit/"): v for k, v in self.s3.objects(self.repo.bucket).items()}

    def get(self, key: str) -> bytes:
        if self.repo.kind == "file":
            assert self.repo.root is not None
            return (self.repo.root / key).read_bytes()
        assert self.s3 is not None
        body = self.s3.client().get_object(Bucket=self.repo.bucket, Key=f"drkit/{key}")["Body"]
        data: bytes = body.read()
        return data

    def put(self, key: str, data: bytes) -> None:
        if self.repo.kind == "file":
            assert self.repo.root is not None
            (self.repo.root / key).write_bytes(data)
            return
        assert self.s3 is not None
        self.s3.client().put_object(Bucket=self.repo.bucket, Key=f"drkit/{key}", Body=data)

    def delete(self, key: str) -> None:
        if self.repo.kind == "file":
            assert self.repo.root is not None
            (self.repo.root / key).unlink()
            return
        assert self.s3 is not None
        self.s3.client().delete_object(Bucket=self.repo.bucket, Key=f"drkit/{key}")

    def pending_uploads(self) -> int:
        """Incomplete multipart uploads (S3) — invisible objects a crash can leave."""
        if self.repo.kind == "file":
            return 0
        assert self.s3 is not None
        found = self.s3.client().list_multipart_uploads(Bucket=self.repo.bucket)
        return len(found.get("Uploads", []))

    def check_backups(self, env: str = "prod") -> tuple[set[str], set[str]]:
        """(complete, orphaned) backup ids; asserts every manifest's objects are whole."""
        keys = self.objects()
        prefix = f"{env}/backups/"
        by_id: dict[str, set[str]] = {}
        for key in keys:
            if key.startswith(prefix) and TMP_MARK not in key:
                by_id.setdefault(key[len(prefix) :].split("/", 1)[0], set()).add(key)
        complete, orphaned = set(), set()
        for backup_id, members in by_id.items():
            manifest_key = f"{prefix}{backup_id}/manifest.json"
            if manifest_key not in members:
                orphaned.add(backup_id)
                continue
            manifest = json.loads(self.get(manifest_key))
            for obj in manifest["objects"]:
                assert obj["key"] in keys, f"listed backup {backup_id} lacks {obj['key']}"
                assert keys[obj["key"]] == obj["stored_size"], f"{obj['key']} is truncated"
                digest = hashlib.sha256(self.get(obj["key"])).hexdigest()
                assert digest == obj["sha256"], f"{obj['key']} differs from its manifest"
            complete.add(backup_id)
        return complete, orphaned


def stray_processes(marker: str) -> list[str]:
    """Command lines of live processes mentioning ``marker`` (leftover children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def make_age_key(directory: Path, name: str = "key") -> tuple[Path, str]:
    """A fresh age identity file and its recipient, made by the real age-keygen."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return path, recipient


def publish_base_backup_manifest(policy_dir: Path, dsn: str, env: str = "prod") -> str:
    """A physical backup's manifest at the server's position now (same cluster, newer
    than every backup before it), over a stored placeholder object: for tests of which
    backup ``latest`` picks (a resolver reads manifests only; restoring it would fail)."""
    from datetime import UTC, datetime

    import psycopg

    from drkit.catalog import make_backup_id, write_manifest
    from drkit.config import load_policy
    from drkit.storage import Repository

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT s.system_identifier::text, pg_current_wal_lsn()::text, "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, "
            "clock_timestamp(), current_database() FROM pg_control_system() s"
        ).fetchone()
    assert row is not None
    sysid, lsn, timeline, server_now, database = row
    started = datetime.now(UTC).replace(microsecond=0)
    backup_id = make_backup_id(started, "physical")
    repo = Repository.for_policy(load_policy(env, policy_dir))
    try:
        obj = repo.store(f"backups/{backup_id}/base.tar", io.BytesIO(b"placeholder"))
        write_manifest(
            repo,
            build_manifest(
                "physical",
                backup_id=backup_id,
                at=started,
                environment=env,
                databases=[str(database)],
                server_version="",
                consistent_at=server_now.astimezone(UTC),
                objects=[obj],
                wal_start=lsn,
                wal_stop=lsn,
                timeline=timeline,
                system_identifier=sysid,
                consistent_lsn=lsn,
                consistent_timeline=timeline,
            ),
        )
    finally:
        repo.close()
    return backup_id
