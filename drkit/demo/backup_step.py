"""The demo's first step: logical backup → verify → restore into a second database."""

from __future__ import annotations

from drkit.backup import run_logical_backup, verify_backup
from drkit.catalog import list_backups
from drkit.demo.document import DemoBackup, DemoRestore, DemoVerify
from drkit.demo.sandbox import Sandbox, Say, Step, timed
from drkit.errors import CheckFailed
from drkit.progress import human_size
from drkit.restore import restore_logical
from drkit.storage import Repository

RESTORED_DB = "sentrikat_restored"


def backup_verify_restore(box: Sandbox, say: Say) -> None:
    """Back PROD up, verify the backup, restore it into a second database."""
    policy = box.policy()
    repo = Repository.for_policy(policy)
    manifest, took = timed(
        say,
        "logical backup (pg_dump → zstd → repository)",
        lambda: run_logical_backup(policy, repo=repo),
    )
    rows = sum(sum(t.values()) for t in manifest.row_counts.values())
    say(
        "ok",
        f"{manifest.id}: {rows} rows in {sum(len(t) for t in manifest.row_counts.values())} "
        f"tables, {human_size(manifest.raw_size)} dumped, {human_size(manifest.size)} stored, "
        f"{took:.1f}s",
    )
    verdict, took = timed(
        say, "verify (size, sha256, decompression)", lambda: verify_backup(repo, manifest)
    )
    if not verdict.ok:
        raise CheckFailed(f"demo: verify of {manifest.id} failed: {verdict.problems[0]}")
    say("ok", f"{verdict.objects} object(s) verified in {took:.1f}s")
    target = box.cluster.dsn(RESTORED_DB)
    result, took = timed(
        say,
        "restore into a second database and compare row counts",
        lambda: restore_logical(policy, manifest.id, target_db=target, repo=repo),
    )
    restored = result.databases[0]
    say(
        "ok",
        f"{RESTORED_DB}: {restored.tables} tables, {restored.rows} rows, all equal to the "
        f"manifest ({took:.1f}s)",
    )
    box.backup = DemoBackup(id=manifest.id, rows=rows, stored_bytes=manifest.size)
    box.verify = DemoVerify(ok=verdict.ok, objects=verdict.objects)
    box.restore = DemoRestore(database=RESTORED_DB, rows=restored.rows, ok=True)
    box.backups_listed = [m.id for m in list_backups(repo)]


STEP = Step(
    "logical backup → verify → restore into a second database (row counts compared)",
    backup_verify_restore,
)
