"""Parallel (directory-format) logical backups against pg_dump's own.

    python -m benchmarks.bench_pardump --rows 2000000 --rounds 3 --jobs 2

In one invocation, on one throwaway cluster with the sample database, alternating runs:

- ``drkit backup --jobs N`` to file:// vs ``pg_dump -Fd -j N -Z0`` followed by
  ``zstd -3 -T2`` of every file (the same work, without the overlap drkit gets by storing
  each file while the dump goes on);
- ``drkit restore --jobs N`` vs ``pg_restore -Fd -j N`` of a local uncompressed directory.

Medians of the rounds, and their ratios, are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from benchmarks.measure import (
    Sample,
    drkit,
    load_database,
    median,
    one_after_another,
    run,
    scratch_dir,
    write_policy,
)
from drkit.pg import LocalCluster
from drkit.pg.binaries import find_binary
from drkit.pg.conninfo import for_subprocess

SERIES = ("pgdump_dir_zstd", "drkit_jobs", "pg_restore_dir", "drkit_restore_jobs")


def measure(
    cluster: LocalCluster, db: str, work: Path, rounds: int, jobs: int
) -> dict[str, list[Sample]]:
    url = cluster.dsn(db)
    policies = work / "policies"
    write_policy(policies, "file", url, {"url": f"file://{work / 'repo'}"})
    pg_dump, pg_restore = find_binary("pg_dump"), find_binary("pg_restore")
    conninfo, env = for_subprocess(url)
    out: dict[str, list[Sample]] = {k: [] for k in SERIES}
    plain = work / "plain"
    for round_no in range(rounds):
        peer = work / "peer"
        shutil.rmtree(peer, ignore_errors=True)
        dumped = run([pg_dump, "-Fd", f"-j{jobs}", "-Z0", "-f", str(peer), "-d", conninfo], env=env)
        files = sorted(str(p) for p in peer.iterdir())
        packed = run(["zstd", "-3", "-T2", "-q", "--rm", *files])
        out["pgdump_dir_zstd"].append(one_after_another(dumped, packed))
        out["drkit_jobs"].append(drkit(policies, "backup", "file", "--jobs", str(jobs))[0])

        if not plain.exists():
            run([pg_dump, "-Fd", f"-j{jobs}", "-Z0", "-f", str(plain), "-d", conninfo], env=env)
        target = f"r{round_no}a"
        cluster.create_database(target)
        t_conninfo, t_env = for_subprocess(cluster.dsn(target))
        out["pg_restore_dir"].append(
            run([pg_restore, f"-j{jobs}", "-d", t_conninfo, str(plain)], env=t_env)
        )
        cluster.drop_database(target)
        target = f"r{round_no}b"
        args = ["restore", "file", "latest", "--jobs", str(jobs), "--target-db"]
        out["drkit_restore_jobs"].append(drkit(policies, *args, cluster.dsn(target))[0])
        cluster.drop_database(target)
        print(f"  round {round_no + 1}/{rounds}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    opts = parser.parse_args()
    with scratch_dir("drkit-bench-pardump-") as work:
        cluster = LocalCluster.create(work / "pg", settings={"max_wal_size": "4GB"}, fast=True)
        try:
            _, size, _ = load_database(cluster, "bench", opts.rows)
            out = measure(cluster, "bench", work, opts.rounds, opts.jobs)
        finally:
            cluster.destroy()
    med = {k: median([s.seconds for s in v]) for k, v in out.items()}
    report = {
        "rows": opts.rows,
        "database_bytes": size,
        "rounds": opts.rounds,
        "jobs": opts.jobs,
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "ratios": {
            f"drkit backup --jobs {opts.jobs} / (pg_dump -Fd -j {opts.jobs} -Z0 + zstd -3)": round(
                med["drkit_jobs"] / med["pgdump_dir_zstd"], 3
            ),
            f"drkit restore --jobs {opts.jobs} / pg_restore -Fd -j {opts.jobs}": round(
                med["drkit_restore_jobs"] / med["pg_restore_dir"], 3
            ),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
