"""Every benchmark against its peer, in one invocation, with cost curves and a report.

    python -m benchmarks                          # sizes 0.25, 1 and 4 GB, 3 rounds
    python -m benchmarks --sizes 0.5,2 --rounds 5
    python -m benchmarks --quick                  # tiny sizes: checks the runner, no more
    python -m benchmarks --only wal,physical
    python -m benchmarks --report-only benchmarks/results/results.json

At each size, one sample database (SentriKat sample rows, sized by ``pg_database_size``)
serves both curve suites:

- logical: ``drkit backup`` (file:// and S3 on moto) vs ``pg_dump -Fc -Z0 | zstd -3 -T2``
  and ``pg_dump -Fc``; ``drkit restore --jobs 2`` vs ``pg_restore -j 2``; ``drkit verify``
  vs ``sha256sum`` + ``zstd -t`` (``benchmarks.bench_backup``);
- sanitize: ``drkit sanitize`` vs an unmasked ``pg_dump | pg_restore``, and masking
  throughput vs pynonymizer where it is installed (``benchmarks.bench_sanitize``);
- breakdown, at the middle size only: where the time of a WAL segment's push and of a
  logical backup and restore goes, stage by stage (``benchmarks.bench_breakdown``).

Once, on a tiny database: how long drkit takes to start (``drkit --version``,
``drkit --help``, a backup's start to its pg_dump) against ``python -c pass``
(``benchmarks.bench_startup``).

Once, at fixed sizes: WAL backlog drain vs pgBackRest async and barman-cloud-wal-archive
(``benchmarks.bench_wal``), physical backup and PITR vs pgBackRest
(``benchmarks.bench_physical``), the restore drill's overhead (``benchmarks.bench_drill``),
``drkit wal-search`` over 1 GB of archived WAL (``benchmarks.bench_walsearch``).

Every measure runs ``--rounds`` times (at least 3), drkit and its peer interleaved; the
figures are medians.  ``benchmarks/results/`` receives ``results.json`` (every round, kept
as it goes), ``REPORT.md`` and the PNG plots.  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import bench_wal
from benchmarks.bench_backup import measure_logical
from benchmarks.bench_breakdown import measure_breakdown
from benchmarks.bench_drill import measure_drill
from benchmarks.bench_physical import measure_physical
from benchmarks.bench_sanitize import measure_sanitize
from benchmarks.bench_startup import measure_startup
from benchmarks.bench_walsearch import measure_walsearch
from benchmarks.measure import ROOT, Sample, load_database, moto_server, scratch_dir
from benchmarks.report import write_report
from drkit.pg import LocalCluster, chown_tree, cluster_os_user
from drkit.pg.binaries import find_binary

SUITES = ("logical", "sanitize", "breakdown", "wal", "physical", "drill", "walsearch", "startup")
RESULTS = ROOT / "benchmarks" / "results"

#: bytes of pg_database_size per sample row, and of the empty schema (measured on PG 15)
BYTES_PER_ROW = 190
BASE_BYTES = 8_000_000


def rows_for(gigabytes: float) -> int:
    """Sample rows that make a database of about ``gigabytes`` (the report gives the
    size PostgreSQL actually counts)."""
    return max(2_000, round((gigabytes * 1e9 - BASE_BYTES) / BYTES_PER_ROW))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default=None, help="database sizes in GB, comma-separated (default 0.25,1,4)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the runner")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every measure (≥ 3)")
    parser.add_argument(
        "--only", default=",".join(SUITES), help=f"suites to run, of {','.join(SUITES)}"
    )
    parser.add_argument("--jobs", type=int, default=2, help="drkit sanitize --jobs")
    parser.add_argument("--segments", type=int, default=None, help="WAL backlog (default 32)")
    parser.add_argument("--scale", type=int, default=None, help="pgbench scale (default 70)")
    parser.add_argument(
        "--drill-mb", type=int, default=None, help="drill database size (default 1024)"
    )
    parser.add_argument(
        "--pynonymizer", default=shutil.which("pynonymizer"), help="pynonymizer executable"
    )
    parser.add_argument(
        "--pynonymizer-up-to",
        type=float,
        default=0.3,
        help="run pynonymizer only at sizes up to this many GB (it does ~100 rows/s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="report directory")
    parser.add_argument(
        "--report-only", type=Path, default=None, help="redraw the report from a results.json"
    )
    opts = parser.parse_args(argv)
    if opts.rounds < 3:
        parser.error("--rounds must be at least 3: the report gives medians of 3 or more")
    unknown = set(opts.only.split(",")) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites {sorted(unknown)}; choose from {','.join(SUITES)}")
    quick = opts.quick
    if opts.sizes is None:
        opts.sizes = "0.01,0.02,0.04" if quick else "0.25,1,4"
    try:
        opts.size_list = sorted(float(s) for s in opts.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes takes GB figures such as 0.25,1,4, not {opts.sizes!r}")
    opts.segments = opts.segments or (8 if quick else 32)
    opts.scale = opts.scale or (1 if quick else 70)
    opts.drill_mb = opts.drill_mb or (20 if quick else 1024)
    return opts


def version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    except OSError:
        return "not installed"
    if out.returncode != 0:
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip("* ") if lines else ""


def machine_facts() -> dict[str, str]:
    load = os.getloadavg()
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in load),
        "PostgreSQL": version([find_binary("postgres"), "--version"]),
        "pgBackRest": version(["pgbackrest", "version"]),
        "barman-cloud-wal-archive": version(["barman-cloud-wal-archive", "--version"]),
        "pynonymizer": "installed" if shutil.which("pynonymizer") else "not installed",
        "zstd": version(["zstd", "--version"]),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "drkit commit": commit + (" (with local changes)" if dirty not in ("", "?") else ""),
    }


def as_json(value: Any) -> Any:
    if isinstance(value, Sample):
        return [round(value.seconds, 4), value.rss_kib]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def save(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(as_json(results), indent=1))
    tmp.replace(out / "results.json")


def run_curves(opts: argparse.Namespace, suites: set[str], results: dict[str, Any]) -> None:
    pyn = opts.pynonymizer
    if "sanitize" in suites and not pyn:
        results["skipped"]["pynonymizer"] = "not installed: pip install pynonymizer"
    with scratch_dir("drkit-bench-all-") as work, moto_server() as moto:
        chown_tree(work, cluster_os_user())
        cluster = LocalCluster.create(work / "pg", settings={"max_wal_size": "4GB"}, fast=True)
        try:
            middle = len(opts.size_list) // 2
            for i, gigabytes in enumerate(opts.size_list):
                if not suites & {"logical", "sanitize"} and i != middle:
                    continue  # the breakdown alone needs the middle size only
                rows = rows_for(gigabytes)
                db = f"size{i}"
                print(f"size {gigabytes} GB: loading {rows:,} sample rows", flush=True)
                _, size, _ = load_database(cluster, db, rows)
                entry: dict[str, Any] = {"target_gb": gigabytes, "rows": rows}
                entry["database_bytes"] = size
                results["sizes"].append(entry)
                if "logical" in suites:
                    entry["logical"] = measure_logical(cluster, db, moto, work, opts.rounds)
                    save(results, opts.out)
                if "breakdown" in suites and i == middle:
                    results["breakdown"] = {
                        "database_bytes": size,
                        **measure_breakdown(cluster, db, work, opts.rounds),
                    }
                    save(results, opts.out)
                if "sanitize" in suites:
                    use_pyn = pyn if pyn and gigabytes <= opts.pynonymizer_up_to else None
                    entry["sanitize"] = measure_sanitize(
                        cluster, db, work, opts.rounds, use_pyn, opts.jobs
                    )
                    save(results, opts.out)
                cluster.drop_database(db)
        finally:
            cluster.destroy()


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if opts.report_only:
        print(write_report(json.loads(opts.report_only.read_text()), opts.out))
        return 0
    suites = set(opts.only.split(","))
    results: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks", *argv]),
        "quick": opts.quick,
        "rounds": opts.rounds,
        "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_facts(),
        "sizes": [],
        "skipped": {s: "not selected (--only)" for s in SUITES if s not in suites},
    }
    if "startup" in suites:
        print("startup: drkit --version, --help, backup to pg_dump", flush=True)
        results["startup"] = measure_startup(max(opts.rounds, 5), {"this": ROOT})
        save(results, opts.out)
    if suites & {"logical", "sanitize", "breakdown"}:
        run_curves(opts, suites, results)
    if "wal" in suites:
        print(f"WAL: backlog of {opts.segments} segments", flush=True)
        rates = bench_wal.measure_wal(opts.segments, opts.rounds)
        missing = {}
        if bench_wal.BARMAN not in rates:
            missing[bench_wal.BARMAN] = "not installed: apt-get install barman-cli-cloud"
        results["wal"] = {"segments": opts.segments, "rates": rates, "missing": missing}
        save(results, opts.out)
    if "physical" in suites:
        print(f"physical: pgbench scale {opts.scale}", flush=True)
        backlog = 2 if opts.quick else 20
        results["physical"] = {
            "scale": opts.scale,
            **measure_physical(opts.scale, backlog, opts.rounds),
        }
        save(results, opts.out)
    if "drill" in suites:
        print(f"drill: {opts.drill_mb} MiB database", flush=True)
        rows = rows_for(opts.drill_mb * 2**20 / 1e9 / 2)
        results["drill"] = measure_drill(rows, opts.drill_mb, opts.rounds)
        save(results, opts.out)
    if "walsearch" in suites:
        gigabytes = 0.05 if opts.quick else 1.0
        print(f"wal-search: {gigabytes} GB of archived WAL", flush=True)
        results["walsearch"] = measure_walsearch(gigabytes, opts.rounds)
        save(results, opts.out)
    results["finished_utc"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    results["machine"]["load average at the end (1, 5, 15 min)"] = load
    save(results, opts.out)
    print(write_report(json.loads((opts.out / "results.json").read_text()), opts.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
