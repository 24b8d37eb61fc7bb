"""Benchmark of ``drkit sanitize`` (issue 5): run by hand, figures go in the issue notes.

    python benchmarks/bench_sanitize.py --rows 1500000 --small-rows 300000 \
        --pynonymizer /path/to/venv/bin/pynonymizer

On a throwaway local cluster, for each size it loads the SentriKat sample and measures:

* ``pg_dump -Fc | pg_restore`` of the database into an empty one (the unmasked baseline);
* ``drkit sanitize prod staging`` end to end with the shipped prod-to-staging rules
  (schema, data, constraints, leak scan), wall time and peak RSS of the drkit process;
* masking throughput on the users table alone (name, phone, e-mail, username masked);
* at one size (``--pynonymizer-at``), pynonymizer's ``ANONYMIZE_DB`` step alone on a pre-loaded copy of
  the users table with a one-table strategy (``unique_email``/``unique_login``).

Nothing here asserts a time: it prints what it measured (and a JSON summary).
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
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drkit.pg.cluster import LocalCluster, chown_tree, cluster_os_user  # noqa: E402
from drkit.pg.conninfo import for_subprocess  # noqa: E402
from drkit.sample import load_sample  # noqa: E402

SALT = "benchmark-salt-not-a-secret"


def run_with_rusage(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errs:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=errs, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        errs.seek(0)
        if proc.returncode != 0:
            raise SystemExit(
                f"{args[0]} failed ({proc.returncode}): {errs.read().decode()[-2000:]}"
            )
        return wall, int(usage.ru_maxrss), out.read().decode()


def dump_restore(cluster: LocalCluster, src: str, dst: str, table: str | None = None) -> float:
    cluster.create_database(dst)
    src_info, env = for_subprocess(cluster.dsn(src))
    dst_info, _ = for_subprocess(cluster.dsn(dst))
    dump_args = [cluster.bin("pg_dump"), "-Fc", "-d", src_info]
    if table:
        dump_args += ["-t", table]
    started = time.monotonic()
    dump = subprocess.Popen(dump_args, stdout=subprocess.PIPE, env=env)
    restore = subprocess.run(
        [cluster.bin("pg_restore"), "--no-owner", "-d", dst_info],
        stdin=dump.stdout,
        env=env,
        check=False,
        capture_output=True,
    )
    assert dump.stdout is not None
    dump.stdout.close()
    # one table alone: its foreign keys cannot be created, the rows are what matters
    if dump.wait() != 0 or (restore.returncode != 0 and table is None):
        raise SystemExit(f"pg_dump | pg_restore failed: {restore.stderr.decode()[-1000:]}")
    return time.monotonic() - started


def write_policies(directory: Path, cluster: LocalCluster, prod: str, staging: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for env, db in (("prod", prod), ("staging", staging)):
        doc = {
            "environment": env,
            "database": {"url": cluster.dsn(db)},
            "repository": {"url": f"file://{directory}/repo-{env}"},
        }
        (directory / f"{env}.yaml").write_text(yaml.safe_dump(doc))
    return directory


def users_only_rules(path: Path) -> Path:
    doc = {
        "version": 1,
        "from": "prod",
        "to": "staging",
        "salt": "${DRKIT_SANITIZE_SALT}",
        "defaults": {"unlisted_tables": "skip", "unlisted_columns": "keep"},
        "tables": {
            "organization": {"copy": True},  # users reference it: skipping it empties users
            "user": {
                "columns": {
                    "full_name": {"strategy": "fake", "provider": "name"},
                    "phone": {"strategy": "fake", "provider": "phone_number"},
                    "email": {"strategy": "email"},
                    "username": {"strategy": "fake", "provider": "user_name", "unique": True},
                }
            },
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def drkit(policy_dir: Path, rules: Path, *extra: str) -> tuple[float, int, dict[str, Any]]:
    env = dict(os.environ, DRKIT_SANITIZE_SALT=SALT)
    wall, rss, out = run_with_rusage(
        [
            sys.executable,
            "-m",
            "drkit",
            "--policy-dir",
            str(policy_dir),
            "sanitize",
            "prod",
            "staging",
            "--rules",
            str(rules),
            "--json",
            "--force",
            *extra,
        ],
        env,
    )
    return wall, rss, json.loads(out)


def pynonymizer(cluster: LocalCluster, binary: str, db: str, work: Path) -> float:
    strategy = work / "pynonymizer-users.yml"
    strategy.write_text(
        yaml.safe_dump(
            {
                "tables": {
                    "user": {
                        "columns": {
                            "full_name": "name",
                            "phone": "phone_number",
                            "email": "unique_email",
                            "username": "unique_login",
                        }
                    }
                }
            }
        )
    )
    args = [
        binary,
        "--db-type",
        "postgres",
        "--db-host",
        "127.0.0.1",
        "--db-port",
        str(cluster.port),
        "--db-user",
        cluster.superuser,
        "--db-password",
        cluster.password,
        "--db-name",
        db,
        "--strategy",
        str(strategy),
        "--only-step",
        "ANONYMIZE_DB",
    ]
    wall, _, _ = run_with_rusage(args, dict(os.environ))
    return wall


def bench_size(
    cluster: LocalCluster, rows: int, work: Path, pyn: str | None, jobs: int
) -> dict[str, Any]:
    prod, staging, copy = f"prod_{rows}", f"staging_{rows}", f"copy_{rows}"
    cluster.create_database(prod)
    started = time.monotonic()
    size = load_sample(cluster.dsn(prod), rows)
    load_s = time.monotonic() - started
    result: dict[str, Any] = {"rows": size.total, "users": size.users, "load_seconds": load_s}
    print(
        f"[{rows}] loaded {size.total:,} rows ({size.users:,} users) in {load_s:.1f}s", flush=True
    )

    result["pg_dump_restore_seconds"] = dump_restore(cluster, prod, copy)
    print(
        f"[{rows}] pg_dump -Fc | pg_restore: {result['pg_dump_restore_seconds']:.1f}s", flush=True
    )
    cluster.drop_database(copy)

    policy_dir = write_policies(work / f"policies-{rows}", cluster, prod, staging)
    chown_tree(policy_dir, cluster_os_user())
    wall, rss, report = drkit(
        policy_dir, ROOT / "sanitize_rules" / "prod-to-staging.yaml", "--jobs", str(jobs)
    )
    result["drkit_seconds"] = wall
    result["drkit_peak_rss_mib"] = rss / 1024
    result["drkit_phases"] = report["phases"]
    result["drkit_rows_copied"] = report["rows"]
    result["leak_scan"] = {
        k: report["leak_scan"][k] for k in ("originals", "rows_scanned", "seconds", "clean")
    }
    result["ratio_vs_pg_dump_restore"] = wall / result["pg_dump_restore_seconds"]
    print(
        f"[{rows}] drkit sanitize prod staging: {wall:.1f}s "
        f"({result['ratio_vs_pg_dump_restore']:.2f}x pg_dump|pg_restore), "
        f"peak RSS {rss / 1024:.0f} MiB, phases {report['phases']}",
        flush=True,
    )

    wall_u, rss_u, report_u = drkit(policy_dir, users_only_rules(work / "users-only.yaml"))
    user_table = next(t for t in report_u["tables"] if t["table"] == "public.user")
    result["users_mask_seconds"] = user_table["seconds"]
    result["users_mask_rows_per_s"] = user_table["rows"] / max(user_table["seconds"], 1e-9)
    result["users_only_wall_seconds"] = wall_u
    print(
        f"[{rows}] users table masked (name, phone, email, username): {user_table['rows']:,} "
        f"rows in {user_table['seconds']:.2f}s = {result['users_mask_rows_per_s']:,.0f} rows/s "
        f"(whole invocation {wall_u:.1f}s incl. leak scan, peak RSS {rss_u / 1024:.0f} MiB)",
        flush=True,
    )

    if pyn:
        pyn_db = f"pyn_{rows}"
        dump_restore(cluster, prod, pyn_db, table='"user"')
        with psycopg.connect(cluster.dsn(pyn_db), autocommit=True) as conn:
            n = conn.execute('SELECT count(*) FROM "user"').fetchone()
        seconds = pynonymizer(cluster, pyn, pyn_db, work)
        users = int(n[0]) if n else 0
        result["pynonymizer_seconds"] = seconds
        result["pynonymizer_rows_per_s"] = users / seconds
        result["throughput_ratio"] = (
            result["users_mask_rows_per_s"] / result["pynonymizer_rows_per_s"]
        )
        print(
            f"[{rows}] pynonymizer ANONYMIZE_DB on {users:,} users: {seconds:.1f}s = "
            f"{result['pynonymizer_rows_per_s']:,.0f} rows/s -> drkit is "
            f"{result['throughput_ratio']:.2f}x",
            flush=True,
        )
        cluster.drop_database(pyn_db)
    for db in (prod, staging):
        cluster.drop_database(db)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--small-rows", type=int, default=300_000, help="0 to skip")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--pynonymizer", default=shutil.which("pynonymizer"), help="pynonymizer executable"
    )
    parser.add_argument(
        "--pynonymizer-at",
        choices=["small", "large"],
        default="small",
        help="which size pynonymizer runs at (it is slow: about 100 rows/s here)",
    )
    args = parser.parse_args()
    pyn_small = args.pynonymizer if args.pynonymizer_at == "small" and args.small_rows else None
    pyn_large = args.pynonymizer if pyn_small is None else None
    work = Path(tempfile.mkdtemp(prefix="drkit-bench-"))
    chown_tree(work, cluster_os_user())
    cluster = LocalCluster.create(work / "pg", fast=True)
    results = []
    try:
        if args.small_rows:
            results.append(bench_size(cluster, args.small_rows, work, pyn_small, args.jobs))
        results.append(bench_size(cluster, args.rows, work, pyn_large, args.jobs))
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
