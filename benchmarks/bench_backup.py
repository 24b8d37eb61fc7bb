"""Logical backup and restore speed and memory against plain PostgreSQL tools.

    python -m benchmarks.bench_backup --rows 2000000 --rounds 3

In one invocation, on one throwaway cluster with the sample database, alternating runs:

- ``drkit backup`` to file:// vs ``pg_dump -Fc -Z0 | zstd -3 -T2 > file`` (target ≤ 1.15×)
  and vs plain ``pg_dump -Fc > file`` (target: faster);
- ``drkit backup`` to S3 (moto on 127.0.0.1) vs the file:// run (target ≤ 1.3×);
- ``drkit restore --jobs 2`` vs ``pg_restore -j 2`` from a local dump file (target ≤ 1.15×);
- peak RSS of the drkit process at two database sizes (target < 150 MB, flat).

Prints a table of medians and ratios; the numbers are what they are on this machine.
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
from pathlib import Path

import yaml

from benchmarks._measure import drkit_with_rss, median, pipeline, run, timed
from drkit.pg.binaries import find_binary
from drkit.pg.cluster import LocalCluster, free_port
from drkit.pg.conninfo import for_subprocess
from drkit.sample import load_sample


def write_policy(policy_dir: Path, env: str, db_url: str, repository: dict[str, object]) -> None:
    policy_dir.mkdir(parents=True, exist_ok=True)
    doc = {"environment": "dev", "database": {"url": db_url}, "repository": repository}
    (policy_dir / f"{env}.yaml").write_text(yaml.safe_dump(doc))


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError as exc:
            if getattr(exc, "code", None):
                break
            time.sleep(0.1)
    return proc, endpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--small-rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="drkit-bench-"))
    work.chmod(0o755)  # the cluster runs as postgres when we are root
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    cluster = LocalCluster.create(work / "pg", settings={"max_wal_size": "4GB"}, fast=True)
    moto, endpoint = start_moto()
    try:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        big = cluster.create_database("big")
        small = cluster.create_database("small")
        t = timed(lambda: load_sample(big, opts.rows))
        load_sample(small, opts.small_rows)
        print(
            f"loaded {opts.rows} rows in {t:.1f}s (and {opts.small_rows} for the memory check)",
            file=sys.stderr,
        )

        policies = work / "policies"
        write_policy(policies, "file", big, {"url": f"file://{work / 'repo'}"})
        write_policy(
            policies,
            "s3",
            big,
            {"url": f"s3://{bucket}/bench", "endpoint_url": endpoint, "region": "us-east-1"},
        )
        write_policy(policies, "small", small, {"url": f"file://{work / 'repo'}"})
        base = ["--policy-dir", str(policies)]
        pg_dump = find_binary("pg_dump")
        pg_restore = find_binary("pg_restore")
        conninfo, env = for_subprocess(big)
        dump_file = work / "baseline.dump"

        results: dict[str, list[float]] = {
            k: []
            for k in (
                "pgdump_zstd",
                "pgdump_fc",
                "drkit_file",
                "drkit_s3",
                "pg_restore_j2",
                "drkit_restore_j2",
            )
        }
        rss: dict[str, list[int]] = {"big": [], "small": [], "s3": [], "restore": []}
        for round_no in range(opts.rounds):
            results["pgdump_zstd"].append(
                timed(
                    lambda: pipeline(
                        [pg_dump, "-Fc", "-Z0", "-d", conninfo],
                        ["zstd", "-3", "-T2", "-q", "-c"],
                        work / "b.dump.zst",
                        env=env,
                    )
                )
            )
            wall, kib = drkit_with_rss([*base, "backup", "file"])
            results["drkit_file"].append(wall)
            rss["big"].append(kib)
            results["pgdump_fc"].append(
                timed(lambda: run([pg_dump, "-Fc", "-d", conninfo, "-f", str(dump_file)], env=env))
            )
            wall, kib = drkit_with_rss([*base, "backup", "s3"])
            results["drkit_s3"].append(wall)
            rss["s3"].append(kib)
            _, kib = drkit_with_rss([*base, "backup", "small"])
            rss["small"].append(kib)

            target = f"r{round_no}a"
            cluster.create_database(target)
            tconn, tenv = for_subprocess(cluster.dsn(target))
            results["pg_restore_j2"].append(
                timed(
                    lambda c=tconn, e=tenv: run(
                        [pg_restore, "-j", "2", "-d", c, str(dump_file)], env=e
                    )  # type: ignore[misc]
                )
            )
            cluster.drop_database(target)
            target = f"r{round_no}b"
            wall, kib = drkit_with_rss(
                [
                    *base,
                    "restore",
                    "file",
                    "latest",
                    "--jobs",
                    "2",
                    "--target-db",
                    cluster.dsn(target),
                ]
            )
            results["drkit_restore_j2"].append(wall)
            rss["restore"].append(kib)
            cluster.drop_database(target)
            print(f"round {round_no + 1}/{opts.rounds} done", file=sys.stderr)

        med = {k: median(v) for k, v in results.items()}
        report = {
            "rows": opts.rows,
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
            },
            "peak_rss_mb": {
                f"backup file:// {opts.rows} rows": round(max(rss["big"]) / 1024, 1),
                f"backup file:// {opts.small_rows} rows": round(max(rss["small"]) / 1024, 1),
                f"backup s3:// {opts.rows} rows": round(max(rss["s3"]) / 1024, 1),
                f"restore --jobs 2 {opts.rows} rows": round(max(rss["restore"]) / 1024, 1),
            },
        }
        if opts.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"rows: {opts.rows}, rounds: {opts.rounds} (medians)")
            for k, v in report["median_seconds"].items():
                print(f"  {k:<20} {v:8.2f} s")
            for k, v in report["ratios"].items():
                print(f"  {k:<45} {v:6.3f}")
            for k, v in report["peak_rss_mb"].items():
                print(f"  peak RSS {k:<40} {v:7.1f} MB")
    finally:
        moto.terminate()
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
