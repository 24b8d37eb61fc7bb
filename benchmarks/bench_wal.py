"""WAL archiving throughput as an operator feels it: how fast a backlog drains.

    python -m benchmarks.bench_wal --segments 32

For each archiver, on a fresh cluster: archiving paused (``archive_command = ''``), a
backlog of at least ``--segments`` WAL segments written by real inserts, then the
command switched on (ALTER SYSTEM + reload) and the time measured until
``pg_wal/archive_status`` holds no ``.ready`` file.  Same backlog size for every
archiver, all in one invocation:

- drkit → file://    vs pgBackRest (archive-async=y, process-max=2, compress-type=zst,
  posix repository): target ≥ 1.5× pgBackRest's segments/s;
- drkit → S3 (moto)  vs barman-cloud-wal-archive to the same moto server: target ≥ 10×.

Needs the Debian packages pgbackrest and barman-cli-cloud.  Prints segments/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import yaml

from drkit.pg.cluster import LocalCluster, chown_tree, cluster_os_user, free_port, run_as
from drkit.walcmd import archive_command, prepare_file_repository

SEG = 16 * 1024 * 1024


def build_backlog(root: Path, segments: int) -> LocalCluster:
    """A cluster with ``segments`` WAL files waiting in archive_status as .ready."""
    cluster = LocalCluster.create(
        root / "pg",
        settings={
            "archive_mode": "on",
            "archive_command": "",
            "max_wal_size": f"{(segments + 8) * 32}MB",
            "min_wal_size": f"{(segments + 8) * 32}MB",
            "checkpoint_timeout": "1h",
        },
        fast=True,
    )
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE filler (id bigint, payload text)")
        while len(ready(cluster)) < segments:
            conn.execute(
                "INSERT INTO filler SELECT g, md5(g::text) || md5((g * 7)::text) "
                "FROM generate_series(1, 120000) g"
            )
            conn.execute("SELECT pg_switch_wal()")
    return cluster


def ready(cluster: LocalCluster) -> list[str]:
    status = cluster.data_dir / "pg_wal" / "archive_status"
    return [p.name for p in status.iterdir() if p.name.endswith(".ready")]


def drain(cluster: LocalCluster, command: str, timeout: float = 900) -> tuple[int, float]:
    """Switch archiving on; (segments archived, seconds until no .ready is left)."""
    backlog = len([n for n in ready(cluster) if not n.endswith(".history.ready")])
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET archive_command = {}").format(command))
        started = time.perf_counter()
        conn.execute("SELECT pg_reload_conf()")
    deadline = started + timeout
    while ready(cluster):
        if time.perf_counter() > deadline:
            raise SystemExit(f"archiving did not drain within {timeout}s; see {cluster.log_file}")
        time.sleep(0.01)
    return backlog, time.perf_counter() - started


LEVEL = {"zstd": 3}


def write_policy(policy_dir: Path, repository: dict[str, object]) -> None:
    policy_dir.mkdir(parents=True, exist_ok=True)
    repository = {**repository, "compression": {"algorithm": "zstd", "level": LEVEL["zstd"]}}
    doc = {
        "environment": "prod",
        "database": {"url": "postgresql:///unused"},
        "repository": repository,
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    chown_tree(policy_dir, cluster_os_user())


def scratch() -> Path:
    root = Path(tempfile.mkdtemp(prefix="drkit-bench-wal-"))
    root.chmod(0o755)
    return root


@contextmanager
def backlog(segments: int) -> Iterator[tuple[Path, LocalCluster]]:
    """A scratch directory and a cluster holding ``segments`` unarchived segments; both
    are gone afterwards."""
    root = scratch()
    try:
        cluster = build_backlog(root, segments)
        try:
            yield root, cluster
        finally:
            cluster.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_drkit_file(segments: int) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        repo = root / "repo"
        repo.mkdir()
        write_policy(root / "policies", {"url": f"file://{repo}"})
        prepare_file_repository(f"file://{repo}", "prod", cluster_os_user())
        return drain(cluster, archive_command("prod", root / "policies", cluster.os_user))


def run_pgbackrest(segments: int) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        user = cluster_os_user()
        for sub in ("repo", "spool", "log", "lock"):
            (root / sub).mkdir()
        conf = root / "pgbackrest.conf"
        conf.write_text(
            "[global]\n"
            f"repo1-path={root / 'repo'}\n"
            f"spool-path={root / 'spool'}\n"
            f"log-path={root / 'log'}\n"
            f"lock-path={root / 'lock'}\n"
            "archive-async=y\nprocess-max=2\ncompress-type=zst\ncompress-level=3\n"
            "log-level-console=warn\nlog-level-file=info\nstart-fast=y\n"
            f"[bench]\npg1-path={cluster.data_dir}\npg1-port={cluster.port}\n"
            f"pg1-socket-path={cluster.socket_dir}\npg1-user=postgres\n"
        )
        chown_tree(root / "repo", user)
        for sub in ("spool", "log", "lock"):
            chown_tree(root / sub, user)
        conf.chmod(0o644)
        run_as(
            ["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"],
            user,
            what="pgbackrest stanza-create",
            timeout=120,
        )
        return drain(cluster, f"pgbackrest --config={conf} --stanza=bench archive-push %p")


class Moto:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_DEFAULT_REGION="us-east-1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import urllib.request

        for _ in range(300):
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)  # noqa: S310 - loopback
                break
            except OSError as exc:
                if getattr(exc, "code", None):
                    break
                time.sleep(0.1)

    def bucket(self) -> str:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_drkit_s3(segments: int, moto: Moto) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        bucket = moto.bucket()
        write_policy(
            root / "policies",
            {"url": f"s3://{bucket}/drkit", "endpoint_url": moto.endpoint, "region": "us-east-1"},
        )
        return drain(cluster, archive_command("prod", root / "policies", cluster.os_user))


def run_barman(segments: int, moto: Moto) -> tuple[int, float]:
    with backlog(segments) as (_root, cluster):
        bucket = moto.bucket()
        return drain(
            cluster,
            f"barman-cloud-wal-archive --endpoint-url {moto.endpoint} "
            f"s3://{bucket}/barman bench %p",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=32, help="backlog size (≥ 16)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-file", action="store_true")
    parser.add_argument(
        "--level", type=int, default=3, help="drkit's zstd level (pgBackRest runs at 3)"
    )
    args = parser.parse_args()
    LEVEL["zstd"] = args.level
    results: dict[str, tuple[int, float]] = {}
    if not args.skip_file:
        results["drkit file://"] = run_drkit_file(args.segments)
        results["pgBackRest async"] = run_pgbackrest(args.segments)
    if not args.skip_s3:
        moto = Moto()
        try:
            results["drkit s3 (moto)"] = run_drkit_s3(args.segments, moto)
            results["barman-cloud-wal-archive"] = run_barman(args.segments, moto)
        finally:
            moto.stop()
    rates = {k: n / s for k, (n, s) in results.items()}
    report: dict[str, object] = {
        k: {"segments": n, "seconds": round(s, 2), "segments_per_s": round(rates[k], 1)}
        for k, (n, s) in results.items()
    }
    ratios = {}
    if not args.skip_file:
        ratios["drkit file / pgBackRest (target >= 1.5)"] = (
            rates["drkit file://"] / rates["pgBackRest async"]
        )
    if not args.skip_s3:
        ratios["drkit s3 / barman-cloud (target >= 10)"] = (
            rates["drkit s3 (moto)"] / rates["barman-cloud-wal-archive"]
        )
    report["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, (n, s) in results.items():
        print(f"{name:28s} {n:4d} segments in {s:7.2f}s  = {rates[name]:7.1f} segments/s")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")


if __name__ == "__main__":
    main()
