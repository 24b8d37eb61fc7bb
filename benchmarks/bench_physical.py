"""Base backup and point-in-time restore against pgBackRest, on one database, one run.

    python -m benchmarks.bench_physical --scale 70      # pgbench scale 70 ≈ 1 GB

One cluster archives to both tools (``drkit wal-push`` with archiving ahead turned off,
so that pgBackRest's ``archive-push`` still sees every segment, then pgBackRest async).
Then, alternating on the same database:

- ``drkit backup ENV --physical`` vs ``pgbackrest backup --type=full`` (process-max=2,
  compress-type=zst level 3, posix repository): target drkit ≤ 1.2× pgBackRest's time;
- after a WAL backlog written by pgbench, PITR to a time after it: ``drkit restore
  --point-in-time`` (fetch + unpack + replay + promote) vs ``pgbackrest restore
  --type=time`` + starting the server until it is promoted: target ≤ 1.3×.

Each measure is repeated ``--rounds`` times, alternating the two tools (the PITR runs
all restore to the same target, each into a fresh directory).  ``measure_physical`` is
what ``python -m benchmarks`` calls.  Needs the Debian package pgbackrest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from benchmarks.measure import drkit, median, scratch_dir, write_policy
from drkit.pg import LocalCluster, chown_tree, cluster_os_user, free_port, run_as
from drkit.pg.binaries import find_binary
from drkit.wal import archive_command, prepare_file_repository


def wait_ready_drained(cluster: LocalCluster, timeout: float = 900) -> None:
    status = cluster.data_dir / "pg_wal" / "archive_status"
    deadline = time.monotonic() + timeout
    while any(p.name.endswith(".ready") for p in status.iterdir()):
        if time.monotonic() > deadline:
            raise SystemExit(f"archiving stalled; see {cluster.log_file}")
        time.sleep(0.1)


def wait_promoted(port: int, dsn_template: str, timeout: float = 1800) -> None:
    dsn = dsn_template.replace("PORT", str(port))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and not row[0]:
                    return
        except psycopg.Error:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("pgBackRest-restored server was not promoted in time")
        time.sleep(0.1)


def measure_physical(scale: int, backlog_seconds: int, rounds: int) -> dict[str, Any]:
    """``database_bytes``, ``seconds`` (tool → one time per round) and ``drkit_phases``
    (the PITR phases of drkit's last restore)."""
    if not shutil.which("pgbackrest"):
        raise SystemExit("pgbackrest is not installed: apt-get install pgbackrest")
    user = cluster_os_user()
    results: dict[str, list[float]] = {k: [] for k in NAMES}
    phases: object = None
    with scratch_dir("drkit-bench-phys-") as root:
        cluster: LocalCluster | None = None
        try:
            policy_dir = root / "policies"
            repo = root / "repo"
            repo.mkdir()
            for sub in ("pgbr-repo", "spool", "log", "lock", "restore"):
                (root / sub).mkdir()
            for sub in ("repo", "pgbr-repo", "spool", "log", "lock", "restore"):
                chown_tree(root / sub, user)
            drkit_push = "DRKIT_WAL_PUSH_BATCH=0 " + archive_command("prod", policy_dir, user)
            conf = root / "pgbackrest.conf"
            cluster = LocalCluster.create(
                root / "pg",
                settings={
                    "archive_mode": "on",
                    "archive_command": f"{drkit_push} && pgbackrest --config={conf} "
                    "--stanza=bench archive-push %p",
                    "max_wal_size": "2GB",
                },
                fast=True,
            )
            conf.write_text(
                "[global]\n"
                f"repo1-path={root / 'pgbr-repo'}\nspool-path={root / 'spool'}\n"
                f"log-path={root / 'log'}\nlock-path={root / 'lock'}\n"
                "archive-async=y\nprocess-max=2\ncompress-type=zst\ncompress-level=3\n"
                "log-level-console=warn\nstart-fast=y\nrepo1-retention-full=99\n"
                f"[bench]\npg1-path={cluster.data_dir}\npg1-port={cluster.port}\n"
                f"pg1-socket-path={cluster.socket_dir}\npg1-user=postgres\n"
            )
            conf.chmod(0o644)
            write_policy(
                policy_dir,
                "prod",
                cluster.dsn(),
                {"url": f"file://{repo}"},
                environment="prod",
                wal_archiving=True,
            )
            chown_tree(policy_dir, user)
            prepare_file_repository(f"file://{repo}", "prod", user)
            pgbr = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
            run_as([*pgbr, "stanza-create"], user, what="stanza-create", timeout=300)

            pgbench = find_binary("pgbench")
            run_as(
                [pgbench, "-i", "-s", str(scale), "-q", "-d", cluster.dsn()],
                None,
                what="pgbench -i",
                timeout=3600,
            )
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                row = conn.execute("SELECT pg_database_size('postgres')").fetchone()
                size = int(row[0]) if row else 0
                conn.execute("CHECKPOINT")
            wait_ready_drained(cluster)

            for _ in range(rounds):
                results[BACKUP_DRKIT].append(
                    drkit(policy_dir, "backup", "prod", "--physical")[0].seconds
                )
                started = time.perf_counter()
                run_as([*pgbr, "--type=full", "backup"], user, what="pgbackrest", timeout=3600)
                results[BACKUP_PGBR].append(time.perf_counter() - started)

            # a WAL backlog to replay, then a target after it
            run_as(
                [pgbench, "-T", str(backlog_seconds), "-c", "2", "-d", cluster.dsn()],
                None,
                what="pgbench run",
                timeout=600,
            )
            time.sleep(1.1)
            now = datetime.now(UTC)
            target = now.isoformat()
            target_pgbr = now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"
            time.sleep(1.1)
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute("CREATE TABLE after_target (x int)")
                conn.execute("SELECT pg_switch_wal()")
            wait_ready_drained(cluster)
            time.sleep(3)  # pgBackRest's async push acknowledges before its queue is empty

            pg_ctl = find_binary("pg_ctl")
            for round_no in range(rounds):
                d1 = root / "restore" / f"drkit-{round_no}"
                sample, out = drkit(
                    policy_dir,
                    "restore",
                    "prod",
                    "--point-in-time",
                    target,
                    "--pgdata",
                    str(d1),
                    "--json",
                )
                results[PITR_DRKIT].append(sample.seconds)
                phases = json.loads(out).get("phases")
                run_as([pg_ctl, "-D", str(d1), "-m", "immediate", "stop"], user, check=False)
                d2 = root / "restore" / f"pgbr-{round_no}"
                port = free_port()
                started = time.perf_counter()
                run_as(
                    [
                        *pgbr,
                        f"--pg1-path={d2}",
                        "--type=time",
                        f"--target={target_pgbr}",
                        "--target-action=promote",
                        "--target-timeline=current",
                        "--archive-mode=off",
                        "restore",
                    ],
                    user,
                    what="pgbackrest restore",
                    timeout=3600,
                )
                with open(d2 / "postgresql.auto.conf", "a") as f:
                    f.write(f"\nport = {port}\n")
                log = root / "restore" / f"pgbr-{round_no}.log"
                run_as(
                    [pg_ctl, "-D", str(d2), "-l", str(log), "-W", "start"],
                    user,
                    what="pg_ctl start",
                    timeout=120,
                )
                wait_promoted(port, cluster.dsn().replace(f":{cluster.port}/", ":PORT/"))
                results[PITR_PGBR].append(time.perf_counter() - started)
                run_as([pg_ctl, "-D", str(d2), "-m", "immediate", "stop"], user, check=False)
                print(f"  physical scale {scale}: round {round_no + 1}/{rounds}", flush=True)
        finally:
            if cluster is not None:
                cluster.destroy()
    return {"database_bytes": size, "seconds": results, "drkit_phases": phases}


BACKUP_DRKIT = "drkit backup --physical"
BACKUP_PGBR = "pgbackrest backup --type=full"
PITR_DRKIT = "drkit restore --point-in-time"
PITR_PGBR = "pgbackrest restore --type=time (+ replay)"
NAMES = (BACKUP_DRKIT, BACKUP_PGBR, PITR_DRKIT, PITR_PGBR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 ≈ 1 GB)")
    parser.add_argument("--backlog-seconds", type=int, default=20, help="pgbench run for WAL")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure_physical(args.scale, args.backlog_seconds, args.rounds)
    med = {k: median(v) for k, v in result["seconds"].items()}
    ratios = {
        "backup: drkit / pgBackRest (target <= 1.2)": med[BACKUP_DRKIT] / med[BACKUP_PGBR],
        "PITR: drkit / pgBackRest (target <= 1.3)": med[PITR_DRKIT] / med[PITR_PGBR],
    }
    if args.json:
        print(json.dumps({**result, "median_seconds": med, "ratios": ratios}))
        return
    print(f"database size: {result['database_bytes'] / 1e9:.2f} GB")
    for name, seconds in med.items():
        print(f"{name:45s} {seconds:8.1f}s")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    print(f"drkit restore phases: {result['drkit_phases']}")


if __name__ == "__main__":
    main()
