"""What age encryption costs: logical backups and WAL archiving, with and without it.

    python -m benchmarks.bench_encryption --rows 1000000 --rounds 3 --segments 32

In one invocation, on throwaway clusters, file:// repositories, zstd level 3 both ways:

- ``drkit backup`` with ``repository.encryption`` vs without, alternating runs on the
  same sample database: target ≤ 1.15× (median wall time);
- WAL archiving throughput (a backlog of ``--segments`` segments drained by
  PostgreSQL's archiver calling ``drkit wal-push``, as ``benchmarks/bench_wal.py``
  measures it) with encryption vs without: target ≥ 0.8× the segments/s.

Only the age binary is needed beyond drkit's own dependencies.  Prints medians and
ratios; the numbers are what they are on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from benchmarks import measure
from benchmarks.bench_wal import backlog, drain
from benchmarks.measure import drkit, median
from drkit.demo.sample import load_sample
from drkit.pg import LocalCluster, chown_tree, cluster_os_user
from drkit.wal import archive_command, prepare_file_repository


def new_recipient(directory: Path) -> str:
    key = directory / "bench.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    return subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()


def write_policy(policy_dir: Path, env: str, db_url: str, repository: dict[str, object]) -> None:
    repository = {**repository, "compression": {"algorithm": "zstd", "level": 3}}
    measure.write_policy(policy_dir, env, db_url, repository)
    chown_tree(policy_dir, cluster_os_user())


def bench_backup(rows: int, rounds: int, root: Path, recipient: str) -> dict[str, float]:
    cluster = LocalCluster.create(root / "pg", fast=True)
    try:
        import psycopg

        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.dsn("bench")
        load_sample(url, rows)
        policy_dir = root / "policies"
        for env, extra in (("plain", {}), ("age", {"encryption": {"recipients": [recipient]}})):
            (root / f"repo-{env}").mkdir()
            write_policy(policy_dir, env, url, {"url": f"file://{root}/repo-{env}", **extra})
        times: dict[str, list[float]] = {"plain": [], "age": []}
        for i in range(rounds):
            order = ("plain", "age") if i % 2 == 0 else ("age", "plain")
            for env in order:
                times[env].append(drkit(policy_dir, "backup", env)[0].seconds)
        sizes = {
            env: sum(p.stat().st_size for p in (root / f"repo-{env}").rglob("*.dump*"))
            for env in times
        }
        return {
            "backup_plain_s": median(times["plain"]),
            "backup_age_s": median(times["age"]),
            "backup_ratio": median(times["age"]) / median(times["plain"]),
            "stored_plain_bytes": sizes["plain"] / rounds,
            "stored_age_bytes": sizes["age"] / rounds,
        }
    finally:
        cluster.destroy()


def bench_wal(segments: int, recipient: str | None) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        repo = root / "repo"
        repo.mkdir()
        extra = {"encryption": {"recipients": [recipient]}} if recipient else {}
        write_policy(
            root / "policies", "prod", "postgresql:///unused", {"url": f"file://{repo}", **extra}
        )
        prepare_file_repository(f"file://{repo}", "prod", cluster_os_user())
        count, seconds = drain(cluster, archive_command("prod", root / "policies", cluster.os_user))
        stored = list((repo / "prod" / "wal").iterdir())
        if recipient and not all(p.name.endswith(".zst.age") for p in stored):
            raise SystemExit("the encrypted run stored unencrypted WAL")
        return count, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--wal-rounds", type=int, default=1)
    parser.add_argument("--skip-wal", action="store_true")
    args = parser.parse_args()

    with measure.scratch_dir("drkit-bench-age-") as root:
        recipient = new_recipient(root)
        results = bench_backup(args.rows, args.rounds, root, recipient)
        if not args.skip_wal:
            plain_rates: list[float] = []
            age_rates: list[float] = []
            for i in range(args.wal_rounds):
                for encrypted in (False, True) if i % 2 == 0 else (True, False):
                    count, seconds = bench_wal(args.segments, recipient if encrypted else None)
                    (age_rates if encrypted else plain_rates).append(count / seconds)
            results.update(
                wal_plain_segments_per_s=median(plain_rates),
                wal_age_segments_per_s=median(age_rates),
                wal_ratio=median(age_rates) / median(plain_rates),
            )

    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))
    print(
        f"backup with age: {results['backup_ratio']:.3f}x without "
        f"(target <= 1.15x: {'met' if results['backup_ratio'] <= 1.15 else 'MISSED'})"
    )
    if "wal_ratio" in results:
        print(
            f"WAL archiving with age: {results['wal_ratio']:.3f}x the throughput without "
            f"(target >= 0.8x: {'met' if results['wal_ratio'] >= 0.8 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
