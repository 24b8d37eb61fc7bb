"""WAL archiving throughput as an operator feels it: how fast a backlog drains.

    python -m benchmarks.bench_wal --segments 32

For each archiver, on a fresh cluster: archiving paused (``archive_command = ''``), a
backlog of at least ``--segments`` WAL segments written by real inserts, then the
command switched on (ALTER SYSTEM + reload) and the time measured until
``pg_wal/archive_status`` holds no ``.ready`` file.  Same backlog size for every
archiver, all in one invocation:

- drkit → file://    vs pgBackRest (archive-async=y, process-max=2, compress-type=zst,
  posix repository): target ≥ 1.5× pgBackRest's segments/s;
- drkit → S3 (moto)  vs barman-cloud-wal-archive to the same moto server: target ≥ 10×.

drkit runs with ``wal_archiver.mode: async`` (its background worker, like pgBackRest's
archive-async) unless ``--mode sync``.  Needs the Debian packages pgbackrest and
barman-cli-cloud.  Prints segments/s and ratios.  drkit → S3 against pgBackRest's async
archiver on the same S3 server is :mod:`benchmarks.bench_wal_s3`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks import measure
from benchmarks.measure import Moto, median, moto_server, scratch_dir
from drkit.pg import LocalCluster, chown_tree, cluster_os_user, run_as
from drkit.wal import archive_command, prepare_file_repository

SEG = 16 * 1024 * 1024


def build_backlog(root: Path, segments: int) -> LocalCluster:
    """A cluster with ``segments`` WAL files waiting in archive_status as .ready."""
    cluster = LocalCluster.create(
        root / "pg",
        settings={
            "archive_mode": "on",
            "archive_command": "",
            "max_wal_size": f"{(segments + 8) * 32}MB",
            "min_wal_size": f"{(segments + 8) * 32}MB",
            "checkpoint_timeout": "1h",
        },
        fast=True,
    )
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE filler (id bigint, payload text)")
        while len(ready(cluster)) < segments:
            conn.execute(
                "INSERT INTO filler SELECT g, md5(g::text) || md5((g * 7)::text) "
                "FROM generate_series(1, 120000) g"
            )
            conn.execute("SELECT pg_switch_wal()")
    return cluster


def ready(cluster: LocalCluster) -> list[str]:
    status = cluster.data_dir / "pg_wal" / "archive_status"
    return [p.name for p in status.iterdir() if p.name.endswith(".ready")]


@dataclass(frozen=True)
class Drained:
    """One backlog drained: its size, and seconds from the switch-on to the first
    segment marked archived (``.done``) and to the last (no ``.ready`` left)."""

    segments: int
    first: float
    seconds: float

    @property
    def first_to_last(self) -> float:
        """Segments/s from the first segment archived to the last."""
        return (self.segments - 1) / max(self.seconds - self.first, 1e-9)


def drained(
    cluster: LocalCluster,
    command: str,
    timeout: float = 900,
    before: Callable[[], None] | None = None,
    tick: Callable[[], None] | None = None,
) -> Drained:
    """Switch archiving on (after ``before()``); when the first and the last segment
    were archived (``tick()`` at every look)."""
    status = cluster.data_dir / "pg_wal" / "archive_status"
    backlog = len([n for n in ready(cluster) if not n.endswith(".history.ready")])
    # the backlog's own dirty pages (and those of whatever ran before) are written out
    # first: otherwise their writeback lands on whichever archiver drains first
    os.sync()
    if before is not None:
        before()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET archive_command = {}").format(command))
        started = time.perf_counter()
        conn.execute("SELECT pg_reload_conf()")
    deadline = started + timeout
    first = None
    while True:
        if tick is not None:
            tick()
        names = [p.name for p in status.iterdir()]
        now = time.perf_counter()
        if first is None and any(n.endswith(".done") for n in names):
            first = now - started
        if not any(n.endswith(".ready") for n in names):
            return Drained(backlog, now - started if first is None else first, now - started)
        if now > deadline:
            raise SystemExit(f"archiving did not drain within {timeout}s; see {cluster.log_file}")
        time.sleep(0.01)


def drain(cluster: LocalCluster, command: str, timeout: float = 900) -> tuple[int, float]:
    """Switch archiving on; (segments archived, seconds until no .ready is left)."""
    result = drained(cluster, command, timeout)
    return result.segments, result.seconds


#: drkit's WAL level (None: its default, wal_archiver.compression_level = 1); the
#: repository itself is at zstd 3, pgBackRest's level
LEVEL: dict[str, int | None] = {"zstd": None}
MODE = {"wal_archiver": "async"}


def write_policy(policy_dir: Path, repository: dict[str, object]) -> None:
    repository = {**repository, "compression": {"algorithm": "zstd", "level": 3}}
    archiver: dict[str, object] = {"mode": MODE["wal_archiver"]}
    if LEVEL["zstd"] is not None:
        archiver["compression_level"] = LEVEL["zstd"]
    measure.write_policy(
        policy_dir,
        "prod",
        "postgresql:///unused",
        repository,
        environment="prod",
        wal_archiver=archiver,
    )
    chown_tree(policy_dir, cluster_os_user())


@contextmanager
def backlog(segments: int) -> Iterator[tuple[Path, LocalCluster]]:
    """A scratch directory and a cluster holding ``segments`` unarchived segments; both
    are gone afterwards."""
    with scratch_dir("drkit-bench-wal-") as root:
        cluster = build_backlog(root, segments)
        try:
            yield root, cluster
        finally:
            cluster.destroy()


#: stored bytes per archived segment, per archiver (file:// repositories only)
STORED: dict[str, list[float]] = {}


def stored_per_segment(name: str, repo: Path, result: tuple[int, float]) -> tuple[int, float]:
    total = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    STORED.setdefault(name, []).append(total / max(1, result[0]))
    return result


def run_drkit_file(segments: int) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        repo = root / "repo"
        repo.mkdir()
        write_policy(root / "policies", {"url": f"file://{repo}"})
        prepare_file_repository(f"file://{repo}", "prod", cluster_os_user())
        result = drain(cluster, archive_command("prod", root / "policies", cluster.os_user))
        return stored_per_segment("drkit file://", repo / "prod" / "wal", result)


def run_pgbackrest(segments: int) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        user = cluster_os_user()
        for sub in ("repo", "spool", "log", "lock"):
            (root / sub).mkdir()
        conf = root / "pgbackrest.conf"
        conf.write_text(
            "[global]\n"
            f"repo1-path={root / 'repo'}\n"
            f"spool-path={root / 'spool'}\n"
            f"log-path={root / 'log'}\n"
            f"lock-path={root / 'lock'}\n"
            "archive-async=y\nprocess-max=2\ncompress-type=zst\ncompress-level=3\n"
            "log-level-console=warn\nlog-level-file=info\nstart-fast=y\n"
            f"[bench]\npg1-path={cluster.data_dir}\npg1-port={cluster.port}\n"
            f"pg1-socket-path={cluster.socket_dir}\npg1-user=postgres\n"
        )
        chown_tree(root / "repo", user)
        for sub in ("spool", "log", "lock"):
            chown_tree(root / sub, user)
        conf.chmod(0o644)
        run_as(
            ["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"],
            user,
            what="pgbackrest stanza-create",
            timeout=120,
        )
        result = drain(cluster, f"pgbackrest --config={conf} --stanza=bench archive-push %p")
        return stored_per_segment("pgBackRest async", root / "repo" / "archive", result)


def run_drkit_s3(segments: int, moto: Moto) -> tuple[int, float]:
    with backlog(segments) as (root, cluster):
        write_policy(root / "policies", moto.repository("drkit"))
        return drain(cluster, archive_command("prod", root / "policies", cluster.os_user))


def run_barman(segments: int, moto: Moto) -> tuple[int, float]:
    with backlog(segments) as (_root, cluster):
        bucket = moto.bucket()
        return drain(
            cluster,
            f"barman-cloud-wal-archive --endpoint-url {moto.endpoint} "
            f"s3://{bucket}/barman bench %p",
        )


BARMAN = "barman-cloud-wal-archive"


def measure_wal(
    segments: int, rounds: int, *, file: bool = True, s3: bool = True
) -> dict[str, list[float]]:
    """Segments/s of each archiver, ``rounds`` backlogs each, alternating drkit and its
    peer.  barman-cloud-wal-archive is left out (absent from the result) when it is not
    installed; pgBackRest is required for the file:// pair."""
    rates: dict[str, list[float]] = {}

    def add(name: str, result: tuple[int, float]) -> None:
        rates.setdefault(name, []).append(result[0] / result[1])

    if file and not shutil.which("pgbackrest"):
        raise SystemExit("pgbackrest is not installed: apt-get install pgbackrest")
    for round_no in range(rounds):
        if file:
            add("drkit file://", run_drkit_file(segments))
            add("pgBackRest async", run_pgbackrest(segments))
        if s3:
            with moto_server() as moto:
                add("drkit s3 (moto)", run_drkit_s3(segments, moto))
                if shutil.which(BARMAN):
                    add(BARMAN, run_barman(segments, moto))
        print(f"  WAL {segments} segments: round {round_no + 1}/{rounds}", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=32, help="backlog size (≥ 16)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-file", action="store_true")
    parser.add_argument(
        "--level",
        type=int,
        default=None,
        help="drkit's WAL zstd level (default: drkit's own, wal_archiver.compression_level "
        "= 1; pgBackRest runs at 3)",
    )
    parser.add_argument(
        "--mode",
        choices=("async", "sync"),
        default="async",
        help="drkit's wal_archiver.mode (async: the background worker)",
    )
    args = parser.parse_args()
    LEVEL["zstd"] = args.level
    MODE["wal_archiver"] = args.mode
    rounds = measure_wal(args.segments, args.rounds, file=not args.skip_file, s3=not args.skip_s3)
    rates = {k: median(v) for k, v in rounds.items()}
    ratios = {}
    if "pgBackRest async" in rates:
        ratios["drkit file / pgBackRest (target >= 1.5)"] = (
            rates["drkit file://"] / rates["pgBackRest async"]
        )
    if BARMAN in rates:
        ratios["drkit s3 / barman-cloud (target >= 10)"] = rates["drkit s3 (moto)"] / rates[BARMAN]
    stored = {k: median(v) for k, v in STORED.items()}
    report = {
        "segments_per_s": rates,
        "rounds": rounds,
        "ratios": ratios,
        "stored_bytes_per_segment": stored,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, rate in rates.items():
        each = ", ".join(f"{r:.1f}" for r in rounds[name])
        print(f"{name:28s} {rate:7.1f} segments/s (median of {args.rounds}: {each})")
    for name, size in stored.items():
        print(f"{name:28s} {size / 2**20:7.2f} MiB stored per segment")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")


if __name__ == "__main__":
    main()
