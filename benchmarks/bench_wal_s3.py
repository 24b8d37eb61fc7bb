"""WAL to S3 against the strongest peer: drkit's async archiver vs pgBackRest's.

    python -m benchmarks.bench_wal_s3 --segments 32 --rounds 5

Each run: a fresh moto server (``moto.server`` on 127.0.0.1) with a fresh bucket, a
TLS proxy in front of it (:mod:`benchmarks.tls`: pgBackRest speaks HTTPS only), and a
fresh cluster holding a backlog of ``--segments`` WAL segments written by real inserts
(:func:`benchmarks.bench_wal.build_backlog`).  Then the archiver's archive_command is
switched on and the backlog drained:

- drkit: ``drkit wal-push`` with ``wal_archiver.mode: async``, repository
  ``s3://BUCKET/drkit`` with ``endpoint_url: https://127.0.0.1:PROXY``; it trusts the
  proxy's run-time certificate through ``AWS_CA_BUNDLE`` (drkit has no switch to turn
  TLS verification off, and gets none for a benchmark), so it *does* verify;
- pgBackRest: ``archive-push`` with ``archive-async=y``, ``process-max=2``,
  ``repo1-type=s3`` to the same proxy, ``repo1-storage-verify-tls=n``.

Both go through the same path: TLS proxy → moto.  Compression: pgBackRest
``compress-type=zst`` at level 3; drkit's repository zstd level 3 with its WAL level
(``wal_archiver.compression_level``) left at its default, 1.

Measured per run, runs interleaved (drkit, pgBackRest, pgBackRest, drkit, ...: each
round alternates which goes first, so a shared machine's load falls on both alike):

- segments/s from the first segment archived (the first ``.done`` in archive_status) to
  the last (no ``.ready`` left), and from the switch-on to the last;
- the archiver's CPU: PostgreSQL's archiver process is moved into a ``cpuacct`` cgroup
  of its own before the switch-on, so every archive_command it runs and everything they
  fork (drkit's detached worker, pgBackRest's async process and its local processes)
  is counted, then divided by the segments;
- moto's CPU and the TLS proxy's (``/proc/PID/stat``), per segment, reported apart:
  they share the two cores with the archivers.

After each run the bucket must hold one object per segment archived, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import bench_wal
from benchmarks.measure import (
    CpuGroup,
    Moto,
    cpu_group,
    median,
    moto_server,
    process_cpu,
    scratch_dir,
)
from benchmarks.report import Goal
from benchmarks.tls import TlsProxy, tls_proxy
from drkit.pg import LocalCluster, chown_tree, cluster_os_user, run_as
from drkit.wal import archive_command
from drkit.wal.ack import LOCK

DRKIT = "drkit async"
PGBACKREST = "pgBackRest async"
GOAL = Goal(1.5, at_most=False)
#: pgBackRest's zstd level (3: its default for zst; drkit's WAL level is 1)
PGBACKREST_LEVEL = [3]
#: a WAL segment's object, whatever the archiver appends to the name (pgBackRest: -sha1.zst)
SEGMENT = re.compile(r"[0-9A-F]{24}(?:$|[-.])")


@dataclass(frozen=True)
class Run:
    """One backlog drained by one archiver."""

    segments: int
    first_to_last: float  # segments/s, first archived to last
    from_switch_on: float  # segments/s, switch-on to last archived
    archiver_cpu: float  # CPU seconds per segment: archive_command and what it forks
    moto_cpu: float  # CPU seconds per segment of moto
    proxy_cpu: float  # CPU seconds per segment of the TLS proxy
    stored: int  # WAL objects in the bucket afterwards
    load: float  # 1-minute load average when the run ended
    mib_stored: float = 0.0  # MiB stored per segment
    async_cpu: float = 0.0  # CPU seconds per segment of the async archiver's own processes


def archiver_pid(cluster: LocalCluster) -> int:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'"
        ).fetchone()
    if row is None:
        raise SystemExit(f"no archiver process in {cluster.data_dir} (archive_mode = on?)")
    return int(row[0])


def wal_objects(moto: Moto, bucket: str) -> tuple[int, int]:
    """How many WAL segments (by name) the bucket holds, whatever the archiver's keys,
    and their bytes."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto.endpoint)
    count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            base = item["Key"].rsplit("/", 1)[-1]
            if SEGMENT.match(base):
                count += 1
                size += int(item["Size"])
    return count, size


def async_cpu(name: str, cluster: LocalCluster, group: CpuGroup) -> float:
    """CPU seconds of the async archiver itself, as sampled: drkit's worker (the pid in
    its spool's lock file), pgBackRest's ``archive-push:async`` process and the local
    processes it starts; the rest of the group is archive_command's own processes (and
    PostgreSQL's archiver)."""
    if name == DRKIT:
        locks = (cluster.data_dir / "pg_wal" / ".drkit-archive").glob(f"*/{LOCK}")
        pids = {int(text.split()[0]) for p in locks if (text := p.read_text()).strip()}
        if not pids:
            raise SystemExit("drkit's async worker left no lock file: did it run?")
        return sum(cpu for (pid, _), (_, cpu) in group.seen.items() if pid in pids)
    return sum(
        cpu
        for cmdline, cpu in group.seen.values()
        if "archive-push:async" in cmdline or "archive-push:local" in cmdline
    )


def drkit_command(root: Path, cluster: LocalCluster, proxy: TlsProxy, bucket: str) -> str:
    policies = root / "policies"
    bench_wal.write_policy(
        policies,
        {"url": f"s3://{bucket}/drkit", "endpoint_url": proxy.endpoint, "region": "us-east-1"},
    )
    return archive_command("prod", policies, cluster.os_user)


def pgbackrest_command(root: Path, cluster: LocalCluster, proxy: TlsProxy, bucket: str) -> str:
    user = cluster_os_user()
    for sub in ("spool", "log", "lock"):
        (root / sub).mkdir()
        chown_tree(root / sub, user)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        "[global]\n"
        "repo1-type=s3\n"
        "repo1-path=/pgbackrest\n"
        f"repo1-s3-bucket={bucket}\n"
        "repo1-s3-endpoint=127.0.0.1\n"
        f"repo1-storage-port={proxy.port}\n"
        "repo1-s3-region=us-east-1\n"
        "repo1-s3-uri-style=path\n"
        f"repo1-s3-key={os.environ['AWS_ACCESS_KEY_ID']}\n"
        f"repo1-s3-key-secret={os.environ['AWS_SECRET_ACCESS_KEY']}\n"
        "repo1-storage-verify-tls=n\n"
        f"spool-path={root / 'spool'}\n"
        f"log-path={root / 'log'}\n"
        f"lock-path={root / 'lock'}\n"
        "archive-async=y\nprocess-max=2\ncompress-type=zst\n"
        f"compress-level={PGBACKREST_LEVEL[0]}\n"
        "log-level-console=warn\nlog-level-file=info\nstart-fast=y\n"
        f"[bench]\npg1-path={cluster.data_dir}\npg1-port={cluster.port}\n"
        f"pg1-socket-path={cluster.socket_dir}\npg1-user=postgres\n"
    )
    conf.chmod(0o644)
    run_as(
        ["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"],
        user,
        what="pgbackrest stanza-create",
        timeout=120,
    )
    return f"pgbackrest --config={conf} --stanza=bench archive-push %p"


COMMANDS = {DRKIT: drkit_command, PGBACKREST: pgbackrest_command}


def one_run(name: str, segments: int) -> Run:
    """A fresh moto, proxy, bucket and backlog; ``name``'s archiver drains it."""
    with (
        moto_server() as moto,
        scratch_dir("drkit-bench-tls-") as certs,
        tls_proxy(certs, moto.port) as proxy,
    ):
        # archive_command runs in PostgreSQL's environment: boto3 finds the proxy's
        # certificate there, so it is set before the cluster starts
        os.environ["AWS_CA_BUNDLE"] = str(proxy.cert)
        try:
            with bench_wal.backlog(segments) as (root, cluster):
                bucket = moto.bucket()
                command = COMMANDS[name](root, cluster, proxy, bucket)
                with cpu_group("drkit-bench-wal") as group:
                    moto_before = process_cpu(moto.proc.pid)
                    proxy_before = process_cpu(proxy.pid)
                    result = bench_wal.drained(
                        cluster,
                        command,
                        before=lambda: group.add(archiver_pid(cluster)),
                        tick=group.sample,
                    )
                    # what the async workers still burn after the last .done (their
                    # last acks, their exit) belongs to this run too
                    time.sleep(1.0)
                    group.sample()
                    cpu = group.seconds()
                    own = async_cpu(name, cluster, group)
                    moto_cpu = process_cpu(moto.proc.pid) - moto_before
                    proxy_cpu = process_cpu(proxy.pid) - proxy_before
                stored, stored_bytes = wal_objects(moto, bucket)
        finally:
            del os.environ["AWS_CA_BUNDLE"]
    if stored < result.segments:
        raise SystemExit(f"{name}: {stored} WAL objects stored for {result.segments} segments")
    n = result.segments
    return Run(
        n,
        result.first_to_last,
        n / result.seconds,
        cpu / n,
        moto_cpu / n,
        proxy_cpu / n,
        stored,
        os.getloadavg()[0],
        stored_bytes / max(stored, 1) / 2**20,
        own / n,
    )


def measure(segments: int, rounds: int) -> dict[str, list[Run]]:
    if not shutil.which("pgbackrest"):
        raise SystemExit("pgbackrest is not installed: apt-get install pgbackrest")
    runs: dict[str, list[Run]] = {DRKIT: [], PGBACKREST: []}
    for round_no in range(rounds):
        order = (DRKIT, PGBACKREST) if round_no % 2 == 0 else (PGBACKREST, DRKIT)
        for name in order:
            runs[name].append(one_run(name, segments))
        d, p = runs[DRKIT][-1], runs[PGBACKREST][-1]
        print(
            f"  round {round_no + 1}/{rounds}: drkit {d.first_to_last:.1f} seg/s, "
            f"pgBackRest {p.first_to_last:.1f} seg/s, "
            f"ratio {d.first_to_last / p.first_to_last:.2f}x, load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return runs


def summary(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Medians per archiver, and drkit / pgBackRest in each round, both ways of counting:
    the goal holds only if it holds in every round (a median could hide a miss)."""
    pairs = list(zip(runs[DRKIT], runs[PGBACKREST], strict=True))
    ratios = [d.first_to_last / p.first_to_last for d, p in pairs]
    ratios_switch_on = [d.from_switch_on / p.from_switch_on for d, p in pairs]
    medians = {
        name: {field: median([getattr(r, field) for r in rs]) for field in asdict(rs[0])}
        for name, rs in runs.items()
    }
    return {
        "medians": medians,
        "ratio_per_round": ratios,
        "ratio_from_switch_on_per_round": ratios_switch_on,
        "goal": GOAL.limit,
        "goal_met_every_round": all(GOAL.met(r) for r in ratios),
        "goal_met_every_round_from_switch_on": all(GOAL.met(r) for r in ratios_switch_on),
    }


def markdown(report: dict[str, Any], command: str) -> str:
    """The report of one invocation: command, machine, every round, the medians."""
    drkit, peer = report["rounds"][DRKIT], report["rounds"][PGBACKREST]
    yes = {True: "yes", False: "**no**"}
    lines = [
        "# WAL to S3: drkit async vs pgBackRest async",
        "",
        "    " + command,
        "",
        f"Machine: {report['machine']['nproc']} cores shared with other engineers' test runs; "
        f"load average (1, 5, 15 min) {fmt(report['load_before'])} at start, "
        f"{fmt(report['load_after'])} at the end; {report['pgbackrest']}; "
        f"{report['segments']} segments of 16 MiB per run; zstd level: drkit 1 (its WAL "
        f"default), pgBackRest {report.get('pgbackrest_level', 3)}; rounds interleaved "
        "(odd rounds drkit first, even rounds pgBackRest first).",
        "",
        "segments/s are counted from the first segment archived to the last (and, beside "
        "them, from the switch-on of archive_command to the last); CPU is per segment, in "
        "milliseconds: all the archiver's processes (archive_command, what it forks), and "
        "in brackets the async archiver's own (drkit's worker; pgBackRest's "
        "archive-push:async and its local processes).",
        "",
        "| round | drkit seg/s | pgBackRest seg/s | ratio | ≥ 1.5? | from switch-on: "
        "drkit / pgBackRest (ratio) | drkit CPU | pgBackRest CPU | moto CPU (drkit / "
        "pgBackRest) | TLS proxy CPU (drkit / pgBackRest) | load after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (d, p) in enumerate(zip(drkit, peer, strict=True)):
        ratio = report["ratio_per_round"][i]
        lines.append(
            f"| {i + 1} | {d['first_to_last']:.2f} | {p['first_to_last']:.2f} | {ratio:.2f}x "
            f"| {yes[GOAL.met(ratio)]} | {d['from_switch_on']:.2f} / {p['from_switch_on']:.2f} "
            f"({report['ratio_from_switch_on_per_round'][i]:.2f}x) "
            f"| {cpu(d)} | {cpu(p)} "
            f"| {ms(d['moto_cpu'])} / {ms(p['moto_cpu'])} "
            f"| {ms(d['proxy_cpu'])} / {ms(p['proxy_cpu'])} "
            f"| {max(d['load'], p['load']):.1f} |"
        )
    md, mp = report["medians"][DRKIT], report["medians"][PGBACKREST]
    lines += [
        f"| median | {md['first_to_last']:.2f} | {mp['first_to_last']:.2f} "
        f"| {md['first_to_last'] / mp['first_to_last']:.2f}x | | "
        f"{md['from_switch_on']:.2f} / {mp['from_switch_on']:.2f} "
        f"| {cpu(md)} | {cpu(mp)} "
        f"| {ms(md['moto_cpu'])} / {ms(mp['moto_cpu'])} "
        f"| {ms(md['proxy_cpu'])} / {ms(mp['proxy_cpu'])} | |",
        "",
        f"Stored per segment (median): drkit {md['mib_stored']:.2f} MiB, pgBackRest "
        f"{mp['mib_stored']:.2f} MiB.",
        "",
        f"Goal drkit ≥ {GOAL.limit:g}× pgBackRest's segments/s in every round (first to last "
        f"archived): {yes[report['goal_met_every_round']]}; counted from the switch-on: "
        f"{yes[report['goal_met_every_round_from_switch_on']]}.",
    ]
    return "\n".join(lines) + "\n"


def fmt(load: list[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


def cpu(run: dict[str, float]) -> str:
    own = run.get("async_cpu")
    return f"{ms(run['archiver_cpu'])} ({'n/m' if own is None else ms(own)})"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=32, help="backlog size (≥ 16)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report here (.md)")
    parser.add_argument(
        "--pgbackrest-level",
        type=int,
        default=3,
        help="pgBackRest's compress-level (zst; default 3, its own; drkit's WAL level is 1)",
    )
    args = parser.parse_args()
    # stopped by a signal, still stop the servers, clusters and cgroups it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    PGBACKREST_LEVEL[0] = args.pgbackrest_level
    load = os.getloadavg()
    runs = measure(args.segments, args.rounds)
    report = {
        "segments": args.segments,
        "pgbackrest_level": args.pgbackrest_level,
        "rounds": {name: [asdict(r) for r in rs] for name, rs in runs.items()},
        "load_before": list(load),
        "load_after": list(os.getloadavg()),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        "pgbackrest": subprocess.run(
            ["pgbackrest", "version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        **summary(runs),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(
            markdown(report, "python -m benchmarks.bench_wal_s3 " + " ".join(sys.argv[1:]))
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
