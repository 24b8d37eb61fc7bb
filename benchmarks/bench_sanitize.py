"""``drkit sanitize`` against an unmasked copy and against pynonymizer.

    python -m benchmarks.bench_sanitize --rows 1500000 --rounds 3 \
        --pynonymizer /path/to/venv/bin/pynonymizer
    python -m benchmarks.bench_sanitize --rows 100000 300000 1000000 --masking-only

    python -m benchmarks.bench_sanitize --workload pii-heavy --rows 2400000 --rounds 3

(pynonymizer: ``pip install drkit[bench]``; several ``--rows`` run one after another in
one invocation; ``--masking-only`` measures the users-table masking alone.)

``--workload pii-heavy``: the sample, with every alert line a free-text message quoting
the user's e-mail address, phone number and IP (a quarter of ``--rows``: 600 k lines at
2.4 M rows, about 0.4 GB), copied with ``replace_pii`` on the messages and the JSON sync
logs (all rows), as a user would write the rules for them; the rest as shipped.

On a throwaway local cluster it loads the SentriKat sample and measures, ``--rounds``
times each (``measure_sanitize`` is what ``python -m benchmarks`` calls at each size):

* ``pg_dump -Fc | pg_restore`` of the database into an empty one (the unmasked baseline);
* ``drkit sanitize prod staging`` end to end with the shipped prod-to-staging rules
  (schema, data, constraints, leak scan), wall time and peak RSS of the drkit process;
* masking throughput on the users table alone (name, phone, e-mail, username masked):
  users per second of the whole ``drkit sanitize`` invocation (start-up and leak scan
  included) and of the users table's own copy as drkit reports it;
* when pynonymizer is given, its ``ANONYMIZE_DB`` step alone on a pre-loaded copy of
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
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from benchmarks.measure import (
    ROOT,
    Sample,
    load_database,
    measured,
    median,
    peak_rss,
    scratch_dir,
    write_policy,
)
from drkit.pg import LocalCluster, chown_tree, cluster_os_user
from drkit.pg.conninfo import for_subprocess

SALT = "benchmark-salt-not-a-secret"


def dump_restore(cluster: LocalCluster, src: str, dst: str, table: str | None = None) -> Sample:
    """``pg_dump -Fc SRC | pg_restore -d DST`` into a new database DST; RSS is the sum of
    both processes' peaks."""
    cluster.create_database(dst)
    src_info, env = for_subprocess(cluster.dsn(src))
    dst_info, _ = for_subprocess(cluster.dsn(dst))
    dump_args = [cluster.bin("pg_dump"), "-Fc", "-d", src_info]
    if table:
        dump_args += ["-t", table]
    restore_args = [cluster.bin("pg_restore"), "--no-owner", "-d", dst_info]
    with peak_rss(dump_args) as (dump_argv, dump_rss), peak_rss(restore_args) as (argv, rss):
        started = time.perf_counter()
        dump = subprocess.Popen(dump_argv, stdout=subprocess.PIPE, env=env)
        restore = subprocess.run(argv, stdin=dump.stdout, env=env, check=False, capture_output=True)
        assert dump.stdout is not None
        dump.stdout.close()
        dumped = dump.wait()
        wall = time.perf_counter() - started
        # one table alone: its foreign keys cannot be created, the rows are what matters
        if dumped != 0 or (restore.returncode != 0 and table is None):
            raise SystemExit(f"pg_dump | pg_restore failed: {restore.stderr.decode()[-1000:]}")
        return Sample(wall, dump_rss() + rss())


def write_policies(directory: Path, cluster: LocalCluster, prod: str, staging: str) -> Path:
    for env, db in (("prod", prod), ("staging", staging)):
        repository = {"url": f"file://{directory}/repo-{env}"}
        write_policy(directory, env, cluster.dsn(db), repository, environment=env)
    return directory


#: the pii-heavy workload: alert lines that quote the user's addresses (e-mail, phone,
#: IP) in free text, as monitoring tools write them
PII_HEAVY_SQL = (
    """UPDATE alert_log a
    SET message = 'Alert sent to ' || u.email || ' (call ' || u.phone || ', last seen from '
                  || host(u.last_login_ip) || '): new ' || v.severity || ' finding on product-'
                  || a.id % 997 || ', ' || a.id % 17 || ' new findings since the last sync; '
                  || 'contact ' || u.email || ' if the issue persists.'
    FROM "user" u, (VALUES ('LOW'), ('HIGH'), ('CRITICAL')) v(severity)
    WHERE u.id = a.user_id AND v.severity = (ARRAY['LOW','HIGH','CRITICAL'])[1 + a.id % 3]""",
    "VACUUM FULL ANALYZE alert_log",
)


def pii_heavy_rules(path: Path) -> Path:
    """The shipped rules, with the alert lines and every sync log copied through
    ``replace_pii`` (what a user who wants them in staging writes)."""
    doc = yaml.safe_load((ROOT / "sanitize_rules" / "prod-to-staging.yaml").read_text())
    doc["tables"]["alert_log"] = {
        "columns": {
            "id": "keep",
            "organization_id": "keep",
            "user_id": "keep",
            "message": {"strategy": "replace_pii"},
            "created_at": "keep",
        }
    }
    doc["tables"]["sync_log"].pop("where", None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def make_pii_heavy(cluster: LocalCluster, db: str) -> int:
    """Turn a loaded sample into the pii-heavy workload; its new size in bytes."""
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        for statement in PII_HEAVY_SQL:
            conn.execute(statement.encode())
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


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
                    # as the shipped rules: kept, they would fail the run's content scan
                    "password_hash": {"strategy": "constant", "value": "$2b$12$sanitized"},
                    "last_login_ip": "nullify",
                }
            },
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def drkit(policy_dir: Path, rules: Path, *extra: str) -> tuple[Sample, dict[str, Any]]:
    env = dict(os.environ, DRKIT_SANITIZE_SALT=SALT)
    sample, out = measured(
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
    return sample, json.loads(out)


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
    return measured(args, dict(os.environ))[0].seconds


def measure_sanitize(
    cluster: LocalCluster,
    prod: str,
    work: Path,
    rounds: int,
    pyn: str | None,
    jobs: int,
    *,
    masking_only: bool = False,
    rules: Path | None = None,
    sanitize_only: bool = False,
) -> dict[str, Any]:
    """At one size, ``rounds`` times each: the unmasked copy (``pg_dump -Fc | pg_restore``),
    ``drkit sanitize`` with the shipped prod-to-staging rules, the users-only masking
    throughput and (when ``pyn`` is given) pynonymizer's on the users table, all from
    the loaded database ``prod``.  Returns lists of Samples / users per second.
    ``masking_only``: the masking throughput and pynonymizer alone (no unmasked copy, no
    whole-database sanitize)."""
    staging, copy, pyn_db = f"{prod}_staging", f"{prod}_copy", f"{prod}_pyn"
    with psycopg.connect(cluster.dsn(prod)) as conn:
        row = conn.execute('SELECT count(*) FROM "user"').fetchone()
        users = int(row[0]) if row else 0
    result: dict[str, Any] = {
        "pg_dump_restore": [],
        "drkit_sanitize": [],
        "drkit_mask_rows_per_s": [],
        "drkit_mask_invocation_rows_per_s": [],
        "pynonymizer_rows_per_s": [],
    }
    policy_dir = write_policies(work / f"policies-{prod}", cluster, prod, staging)
    chown_tree(policy_dir, cluster_os_user())
    shipped = rules or ROOT / "sanitize_rules" / "prod-to-staging.yaml"
    users_only = users_only_rules(work / "users-only.yaml")
    if pyn and not sanitize_only:
        dump_restore(cluster, prod, pyn_db, table='"user"')
    for round_no in range(rounds):
        if not masking_only:
            result["pg_dump_restore"].append(dump_restore(cluster, prod, copy))
            cluster.drop_database(copy)
            sample, _ = drkit(policy_dir, shipped, "--jobs", str(jobs))
            result["drkit_sanitize"].append(sample)
        if sanitize_only:
            print(f"  sanitize {prod}: round {round_no + 1}/{rounds}", flush=True)
            continue
        whole, report = drkit(policy_dir, users_only)
        result["drkit_mask_invocation_rows_per_s"].append(users / whole.seconds)
        user_table = next(t for t in report["tables"] if t["table"] == "public.user")
        result["drkit_mask_rows_per_s"].append(
            user_table["rows"] / max(user_table["seconds"], 1e-9)
        )
        if pyn:
            seconds = pynonymizer(cluster, pyn, pyn_db, work)
            result["pynonymizer_rows_per_s"].append(users / seconds)
        print(f"  sanitize {prod}: round {round_no + 1}/{rounds}", flush=True)
    for db in (staging, *([pyn_db] if pyn and not sanitize_only else [])):
        cluster.drop_database(db)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[1_500_000],
        help="sample rows (users are a tenth); several sizes run in one invocation",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--pynonymizer", default=shutil.which("pynonymizer"), help="pynonymizer executable"
    )
    parser.add_argument(
        "--sanitize-only",
        action="store_true",
        help="only drkit sanitize against the unmasked copy (no masking throughput)",
    )
    parser.add_argument(
        "--workload",
        choices=["sample", "pii-heavy"],
        default="sample",
        help="the SentriKat sample with the shipped rules, or alert lines full of addresses",
    )
    parser.add_argument(
        "--masking-only",
        action="store_true",
        help="only the users-table masking throughput (and pynonymizer's)",
    )
    args = parser.parse_args()
    summaries = []
    with scratch_dir("drkit-bench-") as work:
        chown_tree(work, cluster_os_user())
        cluster = LocalCluster.create(work / "pg", fast=True)
        try:
            for rows in args.rows:
                db = f"prod{rows}"
                _, size, sample = load_database(cluster, db, rows)
                rules = None
                if args.workload == "pii-heavy":
                    size = make_pii_heavy(cluster, db)
                    rules = pii_heavy_rules(work / "pii-heavy.yaml")
                r = measure_sanitize(
                    cluster,
                    db,
                    work,
                    args.rounds,
                    args.pynonymizer,
                    args.jobs,
                    masking_only=args.masking_only,
                    rules=rules,
                    sanitize_only=args.sanitize_only,
                )
                cluster.drop_database(db)
                summaries.append(summarize(size, sample.users, r))
                print(json.dumps(summaries[-1], indent=2), flush=True)
        finally:
            cluster.destroy()
    print(json.dumps(summaries, indent=2))


def summarize(size: int, users: int, r: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"database_bytes": size, "users": users}
    if r["drkit_sanitize"]:
        summary["pg_dump_restore_s"] = median([s.seconds for s in r["pg_dump_restore"]])
        summary["drkit_sanitize_s"] = median([s.seconds for s in r["drkit_sanitize"]])
        summary["drkit_peak_rss_mib"] = max(s.rss_kib for s in r["drkit_sanitize"]) / 1024
        summary["ratio"] = summary["drkit_sanitize_s"] / summary["pg_dump_restore_s"]
    if r["drkit_mask_rows_per_s"]:
        summary["drkit_mask_rows_per_s"] = median(r["drkit_mask_rows_per_s"])
        summary["drkit_mask_invocation_rows_per_s"] = median(r["drkit_mask_invocation_rows_per_s"])
    if r["pynonymizer_rows_per_s"]:
        summary["pynonymizer_rows_per_s"] = median(r["pynonymizer_rows_per_s"])
        summary["invocation_vs_pynonymizer"] = (
            summary["drkit_mask_invocation_rows_per_s"] / summary["pynonymizer_rows_per_s"]
        )
    return summary


if __name__ == "__main__":
    main()
