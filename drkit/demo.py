"""``drkit demo``: the whole workflow in a throwaway sandbox, no configuration needed.

Starts a PostgreSQL cluster from the local binaries, loads the SentriKat sample data,
writes a policy for a local ``file://`` repository, then runs backup → verify → restore
into a second database and compares.  Everything lives in one temporary directory that
is removed at the end (unless ``keep``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drkit.config import Policy, load_policy
from drkit.pg.cluster import LocalCluster, chown_tree, cluster_os_user
from drkit.progress import human_size

Say = Callable[[str, str], None]  # (kind: step | ok | info, text)


@dataclass
class Sandbox:
    root: Path
    cluster: LocalCluster
    policy_dir: Path
    repo_dir: Path
    prod_dsn: str
    report: dict[str, Any] = field(default_factory=dict)

    def policy(self, env: str = "prod") -> Policy:
        return load_policy(env, self.policy_dir)


def write_policy(policy_dir: Path, env: str, db_url: str, repo_dir: Path, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "environment": env,
        "database": {"url": db_url},
        "repository": {
            "url": f"file://{repo_dir}",
            "compression": {"algorithm": "zstd", "level": 3},
        },
        "retention": {"daily": 7},
        "objectives": {"rpo": "24h", "rto": "30m"},
        "schedule": {"timezone": "UTC"},
    }
    doc.update(extra)
    path = policy_dir / f"{env}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def _timed(say: Say, title: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    say("step", title)
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def step_backup_verify_restore(box: Sandbox, say: Say) -> None:
    from drkit.backup.catalog import list_backups
    from drkit.backup.logical import run_logical_backup
    from drkit.backup.verify import verify_backup
    from drkit.restore.logical import restore_logical
    from drkit.storage.repository import Repository

    policy = box.policy()
    repo = Repository.for_policy(policy)
    manifest, took = _timed(
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
    verdict, took = _timed(
        say, "verify (size, sha256, decompression)", lambda: verify_backup(repo, manifest)
    )
    if not verdict.ok:
        raise RuntimeError(f"demo: verify failed: {verdict.problems[0]}")
    say("ok", f"{verdict.objects} object(s) verified in {took:.1f}s")
    target = box.cluster.dsn("sentrikat_restored")
    result, took = _timed(
        say,
        "restore into a second database and compare row counts",
        lambda: restore_logical(policy, manifest.id, target_db=target, repo=repo),
    )
    restored = result.databases[0]
    say(
        "ok",
        f"sentrikat_restored: {restored.tables} tables, {restored.rows} rows, all equal to the manifest ({took:.1f}s)",
    )
    box.report.update(
        backup={"id": manifest.id, "rows": rows, "stored_bytes": manifest.size},
        verify={"ok": verdict.ok, "objects": verdict.objects},
        restore={"database": "sentrikat_restored", "rows": restored.rows, "ok": True},
        backups_listed=[m.id for m in list_backups(repo)],
    )


def step_drill(box: Sandbox, say: Say) -> None:
    from drkit.drill.runner import run_drill

    result, took = _timed(
        say,
        "restore drill (scratch cluster, RTO/RPO against the objectives, validation ladder)",
        lambda: run_drill(box.policy()),
    )
    report = result.report
    phases = ", ".join(f"{p} {s:.1f}s" for p, s in report.phases.items())
    if report.verdict != "PASS":
        failed = ", ".join(c.name for c in report.failures()) or report.error
        raise RuntimeError(f"demo: drill {report.id} verdict {report.verdict}: {failed}")
    say(
        "ok",
        f"{report.id}: PASS, {len(report.checks)} checks, RTO {report.rto_total:.1f}s "
        f"({phases}), RPO {report.rpo_achieved or 0:.0f}s ({took:.1f}s)",
    )
    box.report["drill"] = {
        "id": report.id,
        "verdict": report.verdict,
        "rto_seconds": report.rto_total,
        "rpo_seconds": report.rpo_achieved,
        "checks": len(report.checks),
    }


#: The demo's steps, in order; later capabilities append theirs.
STEPS: list[Callable[[Sandbox, Say], None]] = [step_backup_verify_restore]
STEPS.append(step_drill)


def step_sanitize(box: Sandbox, say: Say) -> None:
    """A sanitized copy of PROD into STAGING with the shipped rules."""
    from drkit.sanitize.demo_step import step_sanitize as run_step

    run_step(box, say)


STEPS.append(step_sanitize)


def step_pitr(box: Sandbox, say: Say) -> None:
    """WAL archiving, a base backup, an accident and a point-in-time recovery."""
    from drkit.restore.pitr_demo import step_pitr as run_step

    run_step(box, say)


STEPS.append(step_pitr)


def run_demo(rows: int = 20_000, keep: bool = False, say: Say | None = None) -> dict[str, Any]:
    from drkit.sample import load_sample

    def _quiet(kind: str, text: str) -> None:
        pass

    say = say or _quiet
    root = Path(tempfile.mkdtemp(prefix="drkit-demo-"))
    root.chmod(0o755)
    cluster: LocalCluster | None = None
    started = time.monotonic()
    try:
        say("step", f"starting a throwaway PostgreSQL in {root}")
        # the system's PostgreSQL where there is one, else the drkit[embedded] wheel's
        # (drkit/pg/binaries.py; DRKIT_PG_NO_SYSTEM=1 ignores the system's)
        cluster = LocalCluster.create(root / "pg", fast=True)
        say("ok", f"PostgreSQL {cluster.major} ({cluster.bin_dir}) on 127.0.0.1:{cluster.port}")
        prod_dsn = cluster.create_database("sentrikat_prod")
        size, took = _timed(
            say,
            f"loading ~{rows} rows of SentriKat sample data",
            lambda: load_sample(prod_dsn, rows),
        )
        say(
            "ok",
            f"{size.total} rows ({size.users} users, {size.vulnerabilities} vulnerabilities) in {took:.1f}s",
        )
        policy_dir = root / "policies"
        repo_dir = root / "repo"
        policy_dir.mkdir()
        repo_dir.mkdir()
        write_policy(policy_dir, "prod", prod_dsn, repo_dir)
        # archive_command and restore_command run as the cluster's OS user
        chown_tree(policy_dir, cluster_os_user())
        chown_tree(repo_dir, cluster_os_user())
        box = Sandbox(root, cluster, policy_dir, repo_dir, prod_dsn)
        box.report["postgresql"] = {"major": cluster.major, "bin_dir": str(cluster.bin_dir)}
        box.report["sample_rows"] = size.total
        for step in STEPS:
            step(box, say)
        box.report["duration"] = round(time.monotonic() - started, 1)
        box.report["duration_seconds"] = box.report["duration"]
        box.report["ok"] = True
        say("step", f"demo finished in {box.report['duration']}s: every step passed")
        if keep:
            say("info", f"sandbox kept in {root} (PostgreSQL on port {cluster.port})")
        return box.report
    finally:
        if not keep:
            if cluster is not None:
                cluster.destroy()
            shutil.rmtree(root, ignore_errors=True)
