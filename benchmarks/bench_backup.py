"""Logical backup, restore and verify: speed and memory against plain PostgreSQL tools.

    python -m benchmarks.bench_backup --rows 2000000 --rounds 3

In one invocation, on one throwaway cluster with the sample database, alternating runs:

- ``drkit backup`` to file:// vs ``pg_dump -Fc -Z0 | zstd -3 -T2 > file`` (goal ≤ 1.10×)
  and vs plain ``pg_dump -Fc > file``;
- ``drkit backup`` to S3 (moto on 127.0.0.1) vs the file:// run (goal ≤ 1.3×);
- ``drkit restore --jobs 2`` vs ``pg_restore -j 2`` from a local dump file (goal ≤ 1.10×),
  each into an empty database created beforehand;
- ``drkit verify`` of the file:// backup vs ``sha256sum`` + ``zstd -t`` of the peer's file;
- peak RSS of the drkit process (goal ≤ 120 MB, flat with size);
- the same backup and restore inside a running Python, as the scheduler daemon runs
  them (no process start, no imports): what the command's own start costs.

``measure_logical`` is what ``python -m benchmarks`` calls at each size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.measure import (
    Moto,
    Sample,
    drkit,
    load_database,
    median,
    moto_server,
    one_after_another,
    pipeline,
    run,
    scratch_dir,
    write_policy,
)
from drkit.pg import LocalCluster
from drkit.pg.binaries import find_binary
from drkit.pg.conninfo import for_subprocess

#: measured series, in the order they run in a round
SERIES = (
    "pgdump_zstd",
    "drkit_file",
    "pgdump_fc",
    "drkit_s3",
    "verify_peer",
    "drkit_verify",
    "pg_restore_j2",
    "drkit_restore_j2",
    "drkit_backup_in_process",
    "drkit_restore_in_process",
)


def pg_restore_j2(cluster: LocalCluster, target: str, dump_file: Path) -> Sample:
    """``pg_restore -j 2`` of a local dump into a new database ``target`` (left there)."""
    cluster.create_database(target)
    conninfo, env = for_subprocess(cluster.dsn(target))
    return run([find_binary("pg_restore"), "-j", "2", "-d", conninfo, str(dump_file)], env=env)


def drkit_restore_j2(cluster: LocalCluster, policies: Path, target: str) -> Sample:
    """``drkit restore file latest --jobs 2`` into a new database ``target`` (left there),
    created beforehand as for ``pg_restore`` (drkit would otherwise create it, timed)."""
    cluster.create_database(target)
    args = ["restore", "file", "latest", "--jobs", "2", "--target-db", cluster.dsn(target)]
    return drkit(policies, *args)[0]


def drkit_backup_in_process(policies: Path) -> Sample:
    """``drkit backup file`` as the scheduler daemon runs it: a call in a running Python
    (what the command adds to it is its process start and imports).  No RSS: the
    process is the benchmark's own."""
    from drkit.backup.logical import backup_logical
    from drkit.config import load_policy

    policy = load_policy("file", policies)
    started = time.perf_counter()
    backup_logical(policy)
    return Sample(time.perf_counter() - started)


def drkit_restore_in_process(cluster: LocalCluster, policies: Path, target: str) -> Sample:
    """``drkit restore file latest --jobs 2`` as a call in a running Python (the daemon's
    drills restore so), into a new database ``target`` created beforehand (left there)."""
    from drkit.config import load_policy
    from drkit.restore import restore_logical

    cluster.create_database(target)
    policy = load_policy("file", policies)
    started = time.perf_counter()
    restore_logical(policy, "latest", target_db=cluster.dsn(target), jobs=2)
    return Sample(time.perf_counter() - started)


def measure_logical(
    cluster: LocalCluster, db: str, moto: Moto, work: Path, rounds: int
) -> dict[str, list[Sample]]:
    """Every series ``rounds`` times on the loaded database ``db`` of ``cluster``."""
    url = cluster.dsn(db)
    policies = work / f"policies-{db}"
    write_policy(policies, "file", url, {"url": f"file://{work / f'repo-{db}'}"})
    write_policy(policies, "s3", url, moto.repository("bench"))
    pg_dump = find_binary("pg_dump")
    conninfo, env = for_subprocess(url)
    dump_file, zst_file = work / "baseline.dump", work / "baseline.dump.zst"
    out: dict[str, list[Sample]] = {k: [] for k in SERIES}
    for round_no in range(rounds):
        out["pgdump_zstd"].append(
            pipeline(
                [pg_dump, "-Fc", "-Z0", "-d", conninfo],
                ["zstd", "-3", "-T2", "-q", "-c"],
                zst_file,
                env=env,
            )
        )
        out["drkit_file"].append(drkit(policies, "backup", "file")[0])
        out["pgdump_fc"].append(
            run([pg_dump, "-Fc", "-d", conninfo, "-f", str(dump_file)], env=env)
        )
        out["drkit_s3"].append(drkit(policies, "backup", "s3")[0])
        out["verify_peer"].append(
            one_after_another(
                run(["sha256sum", str(zst_file)]), run(["zstd", "-t", "-q", str(zst_file)])
            )
        )
        out["drkit_verify"].append(drkit(policies, "verify", "file", "latest")[0])

        out["pg_restore_j2"].append(pg_restore_j2(cluster, f"r{round_no}a", dump_file))
        cluster.drop_database(f"r{round_no}a")
        out["drkit_restore_j2"].append(drkit_restore_j2(cluster, policies, f"r{round_no}b"))
        cluster.drop_database(f"r{round_no}b")
        out["drkit_backup_in_process"].append(drkit_backup_in_process(policies))
        out["drkit_restore_in_process"].append(
            drkit_restore_in_process(cluster, policies, f"r{round_no}c")
        )
        cluster.drop_database(f"r{round_no}c")
        print(f"  logical {db}: round {round_no + 1}/{rounds}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    with scratch_dir("drkit-bench-") as work, moto_server() as moto:
        cluster = LocalCluster.create(work / "pg", settings={"max_wal_size": "4GB"}, fast=True)
        try:
            _, size, _ = load_database(cluster, "bench", opts.rows)
            out = measure_logical(cluster, "bench", moto, work, opts.rounds)
        finally:
            cluster.destroy()
    med = {k: median([s.seconds for s in v]) for k, v in out.items()}
    report = {
        "rows": opts.rows,
        "database_bytes": size,
        "rounds": opts.rounds,
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "ratios": {
            "drkit_file / (pg_dump -Z0 | zstd -3 -T2)": round(
                med["drkit_file"] / med["pgdump_zstd"], 3
            ),
            "drkit_file / pg_dump -Fc": round(med["drkit_file"] / med["pgdump_fc"], 3),
            "drkit_s3 / drkit_file": round(med["drkit_s3"] / med["drkit_file"], 3),
            "drkit restore --jobs 2 / pg_restore -j 2": round(
                med["drkit_restore_j2"] / med["pg_restore_j2"], 3
            ),
            "drkit verify / (sha256sum + zstd -t)": round(
                med["drkit_verify"] / med["verify_peer"], 3
            ),
            "drkit backup in process / (pg_dump -Z0 | zstd -3 -T2)": round(
                med["drkit_backup_in_process"] / med["pgdump_zstd"], 3
            ),
            "drkit restore in process / pg_restore -j 2": round(
                med["drkit_restore_in_process"] / med["pg_restore_j2"], 3
            ),
        },
        "peak_rss_mb": {
            k: round(max(s.rss_kib for s in v) / 1024, 1)
            for k, v in out.items()
            if any(s.rss_kib for s in v)  # not the calls in this process
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
