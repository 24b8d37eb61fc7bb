"""Where the time goes: one WAL segment's push, and a logical backup and restore, stage by
stage (issue 13, items 1 and 2: measure first).

    python -m benchmarks.bench_breakdown --rows 2000000 --rounds 3

Each stage is measured on its own with the same primitives drkit uses (the zstandard
library at the policy's level, hashlib's sha256, psycopg's row counts in one snapshot),
beside the end-to-end drkit command; what the stages do not explain is reported as
"the rest" (process plumbing, waits between stages, anything not listed).  Stages that
overlap in drkit (the row count runs while pg_dump streams) are listed as they cost
alone; the sum is then an upper bound.

Segment (a real 16 MiB WAL segment written by inserts, file:// repository):
interpreter start; imports of the wal-push path; policy load; zstd compression at the
WAL level; sha256; write + fsync + rename; sha256 of the compressed object; read-back
(the stored size); ``drkit wal-push`` alone (``DRKIT_WAL_PUSH_BATCH=0``, one segment).

Logical (the sample database): interpreter start and the command's imports (the CLI, the
command's module and the core modules it runs; ``drkit --version`` imports nothing);
``pg_dump -Fc -Z0`` to /dev/null; zstd of that dump (1 and 2 threads); sha256 of the
result; the row count of every table in one snapshot; ``drkit backup``.  Restore: the
same imports for the restore command; decoding the stored dump to a local file;
``pg_restore -j 2`` from it; the row count of the restored database; ``drkit restore
--jobs 2``.
``measure_breakdown`` is what ``python -m benchmarks`` calls.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import zstandard

from benchmarks.bench_backup import drkit_restore_j2, pg_restore_j2
from benchmarks.bench_wal import build_backlog
from benchmarks.measure import (
    drkit,
    load_database,
    measured,
    median,
    run,
    scratch_dir,
    write_policy,
)
from drkit.pg import LocalCluster
from drkit.pg.binaries import find_binary
from drkit.pg.conninfo import for_subprocess
from drkit.pg.tables import count_rows, list_tables

T = TypeVar("T")
LEVEL = 3  # the repository's level: logical dumps
WAL_LEVEL = 1  # wal_archiver.compression_level's default
#: the modules ``drkit wal-push`` imports on its lean path (drkit/wal/entry.py)
WAL_PUSH_IMPORTS = (
    "import drkit.cli.entry, drkit.config, drkit.errors, drkit.wal.archiver, zstandard"
)
#: the modules ``drkit backup`` and ``drkit restore`` import before their work starts
BACKUP_IMPORTS = "import drkit.cli.app, drkit.cli.backup, drkit.backup.dirdump"
RESTORE_IMPORTS = "import drkit.cli.app, drkit.cli.restore, drkit.restore.logical"


def clock(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """(seconds ``fn(*args)`` took, what it returned)."""
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def seconds(fn: Callable[..., object], *args: Any) -> float:
    return clock(fn, *args)[0]


def fsynced_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def one_segment(work: Path) -> Path:
    """A real WAL segment, copied out of a throwaway cluster into ``work/pg_wal``."""
    wal = work / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    cluster = build_backlog(work / "src", 2)
    try:
        source = cluster.data_dir / "pg_wal"
        name = min(p.name for p in source.iterdir() if len(p.name) == 24)
        shutil.copyfile(source / name, wal / name)
    finally:
        cluster.destroy()
    return wal / name


def segment_stages(rounds: int) -> dict[str, list[float]]:
    """Seconds per stage, one list entry per round."""
    from drkit.wal import load_wal_policy

    stages: dict[str, list[float]] = {}

    def add(stage: str, seconds: float) -> None:
        stages.setdefault(stage, []).append(seconds)

    with scratch_dir("drkit-bench-seg-") as work:
        segment = one_segment(work)
        data = segment.read_bytes()
        py = [sys.executable, "-c"]
        for round_no in range(rounds):
            repo = work / f"repo-{round_no}"
            policies = write_policy(
                work / "policies", "prod", "postgresql:///unused", {"url": f"file://{repo}"}
            )
            start = run([*py, "pass"]).seconds
            add("interpreter start (python -c pass)", start)
            add("imports of the wal-push path", run([*py, WAL_PUSH_IMPORTS]).seconds - start)
            add("policy load (load_wal_policy)", seconds(load_wal_policy, "prod", policies))
            took, compressed = clock(zstandard.ZstdCompressor(level=WAL_LEVEL).compress, data)
            add(f"zstd level {WAL_LEVEL} (1 thread)", took)
            add("sha256 of the segment", seconds(hashlib.sha256, data))
            target = work / "out" / f"{segment.name}.zst"
            target.parent.mkdir(exist_ok=True)
            add("write + fsync + rename", seconds(fsynced_write, target, compressed))
            add("sha256 of the compressed object", seconds(hashlib.sha256, compressed))
            add("read-back: the stored size (stat)", seconds(os.stat, target))
            env = dict(os.environ, DRKIT_WAL_PUSH_BATCH="0")
            sample, _ = measured(
                [
                    sys.executable,
                    "-m",
                    "drkit",
                    "wal-push",
                    "prod",
                    str(segment),
                    "--policy-dir",
                    str(policies),
                ],
                env,
            )
            add("drkit wal-push (end to end)", sample.seconds)
    return stages


def compress_file(src: Path, dst: Path, threads: int) -> None:
    cctx = zstandard.ZstdCompressor(level=LEVEL, threads=threads if threads > 1 else 0)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        cctx.copy_stream(fin, fout, read_size=1 << 20, write_size=1 << 20)


def unpack(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=1 << 20, write_size=1 << 20)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return count_rows(conn, list_tables(conn))


def logical_stages(
    cluster: LocalCluster, db: str, work: Path, rounds: int
) -> dict[str, list[float]]:
    """Seconds per stage of a logical backup and restore of the loaded database ``db``."""
    stages: dict[str, list[float]] = {}

    def add(stage: str, seconds: float) -> None:
        stages.setdefault(stage, []).append(seconds)

    url = cluster.dsn(db)
    conninfo, env = for_subprocess(url)
    pg_dump = find_binary("pg_dump")
    repo = work / f"repo-breakdown-{db}"
    policies = write_policy(
        work / f"policies-breakdown-{db}", "file", url, {"url": f"file://{repo}"}
    )
    raw, packed, unpacked = work / "raw.dump", work / "raw.dump.zst", work / "unpacked.dump"
    for round_no in range(rounds):
        add(
            "backup: pg_dump -Fc -Z0 > /dev/null",
            run(
                [pg_dump, "-Fc", "-Z0", "-d", conninfo, "--no-sync", "-f", os.devnull], env
            ).seconds,
        )
        run([pg_dump, "-Fc", "-Z0", "-d", conninfo, "-f", str(raw)], env)
        for threads in (1, 2):
            add(
                f"backup: zstd level {LEVEL} of the dump ({threads} thread{'s'[: threads - 1]})",
                seconds(compress_file, raw, packed, threads),
            )
        add("backup: sha256 of the compressed dump", seconds(sha256_file, packed))
        add("backup: row count of every table (one snapshot)", seconds(snapshot_counts, url))
        py = [sys.executable, "-c"]
        add("backup: interpreter start and imports", run([*py, BACKUP_IMPORTS]).seconds)
        add("restore: interpreter start and imports", run([*py, RESTORE_IMPORTS]).seconds)
        add("backup: drkit backup (end to end)", drkit(policies, "backup", "file")[0].seconds)
        add("restore: decode the stored dump to a local file", seconds(unpack, packed, unpacked))
        target = f"bd{round_no}a"
        add(
            "restore: pg_restore -j 2 from the local file",
            pg_restore_j2(cluster, target, unpacked).seconds,
        )
        add(
            "restore: row count of the restored database",
            seconds(snapshot_counts, cluster.dsn(target)),
        )
        cluster.drop_database(target)
        add(
            "restore: drkit restore --jobs 2 (end to end)",
            drkit_restore_j2(cluster, policies, f"bd{round_no}b").seconds,
        )
        cluster.drop_database(f"bd{round_no}b")
        print(f"  breakdown {db}: round {round_no + 1}/{rounds}", flush=True)
    for path in (raw, packed, unpacked):
        path.unlink(missing_ok=True)
    return stages


def with_rest(
    stages: dict[str, list[float]], end_to_end: str, parts: list[str]
) -> dict[str, float]:
    """Medians of ``parts`` and of ``end_to_end``, and the rest: end to end − their sum."""
    med = {k: median(stages[k]) for k in [*parts, end_to_end]}
    med["the rest (end to end − the stages above)"] = med[end_to_end] - sum(med[k] for k in parts)
    return med


def measure_breakdown(cluster: LocalCluster, db: str, work: Path, rounds: int) -> dict[str, Any]:
    """Medians per stage: ``segment``, ``backup`` and ``restore`` tables of stage → seconds."""
    seg = segment_stages(rounds)
    log = logical_stages(cluster, db, work, rounds)
    seg_end = "drkit wal-push (end to end)"
    seg_parts = [k for k in seg if k != seg_end]
    backup = [k for k in log if k.startswith("backup:")]
    restore = [k for k in log if k.startswith("restore:")]
    backup_end = "backup: drkit backup (end to end)"
    restore_end = "restore: drkit restore --jobs 2 (end to end)"
    return {
        "segment": with_rest(seg, seg_end, seg_parts),
        # one zstd figure counts (drkit compresses once): the 2-thread one, as the peer
        "backup": with_rest(
            log, backup_end, [k for k in backup if k != backup_end and "(1 thread)" not in k]
        ),
        "backup_zstd_1_thread": median(log[f"backup: zstd level {LEVEL} of the dump (1 thread)"]),
        "restore": with_rest(log, restore_end, [k for k in restore if k != restore_end]),
        "rounds": {**seg, **log},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    with scratch_dir("drkit-bench-bd-") as work:
        cluster = LocalCluster.create(work / "pg", settings={"max_wal_size": "4GB"}, fast=True)
        try:
            load_database(cluster, "bench", opts.rows)
            result = measure_breakdown(cluster, "bench", work, opts.rounds)
        finally:
            cluster.destroy()
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
