"""Shared benchmark plumbing: scratch directories, policies, a moto S3 server, timed
commands with the peak resident set size of what they ran, medians.

Peak RSS is GNU time's ``%M`` of the process the benchmark started, or, when larger, the
peak of its process tree's proportional set sizes summed (sampled every 0.2 s: a page
shared by a process and the workers it forked counts once): for ``drkit`` the drkit
process and its workers (not the pg_dump, pg_restore or S3 server it talks to); for a
peer its main process and the processes it starts (a pipeline reports the sum of its
two).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from drkit.demo.sample import SampleSize
    from drkit.pg import LocalCluster

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sample:
    """One measured run: wall seconds and peak RSS in KiB (0 when not measured)."""

    seconds: float
    rss_kib: int = 0


def one_after_another(*samples: Sample) -> Sample:
    """Runs made in sequence: their times add up, the peak is the largest."""
    return Sample(sum(s.seconds for s in samples), max(s.rss_kib for s in samples))


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fail(args: Sequence[str], code: int, stderr: str) -> SystemExit:
    return SystemExit(f"{' '.join(map(str, args))} failed ({code}): {stderr[-2000:]}")


GNU_TIME = "/usr/bin/time"


@contextmanager
def peak_rss(args: Sequence[str]) -> Iterator[tuple[list[str], Callable[[], int]]]:
    """``args`` wrapped in GNU time, and a reader of the peak RSS (KiB) it recorded.

    ``wait4`` on a process we fork is useless for this: Linux carries the resident
    high-water mark across ``exec``, so every child of this (large) Python process would
    report at least our own size.  GNU time is small; what it forks starts small.
    """
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} is missing: apt-get install time")
    fd, name = tempfile.mkstemp(prefix="drkit-bench-rss-")
    os.close(fd)

    def read() -> int:
        lines = Path(name).read_text().split()
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0

    try:
        yield [GNU_TIME, "-f", "%M", "-o", name, *map(str, args)], read
    finally:
        os.unlink(name)


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@contextmanager
def tree_peak(proc: subprocess.Popen[bytes]) -> Iterator[Callable[[], int]]:
    """The peak, while ``proc`` runs, of its process tree's summed PSS (KiB)."""
    import threading

    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, sum(_pss_kib(pid) for pid in _tree(proc.pid)))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak
    finally:
        done.set()
        thread.join()


def measured(
    args: Sequence[str], env: dict[str, str] | None = None, ok: Sequence[int] = (0,)
) -> tuple[Sample, str]:
    """Run ``args``; (wall time and peak RSS of that process, or of its tree, its
    stdout)."""
    with (
        peak_rss(args) as (argv, rss),
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as errs,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=errs, cwd=ROOT)
        with tree_peak(proc) as tree:
            returncode = proc.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        errs.seek(0)
        if returncode not in ok:
            raise fail(args, returncode, errs.read().decode(errors="replace"))
        return Sample(wall, max(rss(), tree())), out.read().decode()


def run(args: Sequence[str], env: dict[str, str] | None = None) -> Sample:
    """Run ``args`` to completion (failure ends the benchmark); its Sample."""
    return measured(args, env)[0]


def drkit(
    policy_dir: Path, *args: str, env: dict[str, str] | None = None, ok: Sequence[int] = (0,)
) -> tuple[Sample, str]:
    """One ``drkit --policy-dir DIR ARGS`` run in a fresh interpreter: (Sample, stdout)."""
    return measured(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args], env, ok
    )


def pipeline(
    first: Sequence[str], second: Sequence[str], out_path: Path, env: dict[str, str] | None = None
) -> Sample:
    """``first | second > out_path`` without a shell; RSS is the sum of both peaks."""
    with peak_rss(first) as (argv_a, rss_a), peak_rss(second) as (argv_b, rss_b):
        started = time.perf_counter()
        with open(out_path, "wb") as out:
            a = subprocess.Popen(argv_a, stdout=subprocess.PIPE, env=env)
            b = subprocess.Popen(argv_b, stdin=a.stdout, stdout=out, env=env)
            assert a.stdout is not None
            a.stdout.close()
            rb = b.wait()
            ra = a.wait()
        wall = time.perf_counter() - started
        if ra or rb:
            raise SystemExit(f"pipeline failed: {first[0]}={ra} {second[0]}={rb}")
        return Sample(wall, rss_a() + rss_b())


def scratch(prefix: str) -> Path:
    """A fresh directory the cluster's OS user (postgres, when we are root) can enter."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    root = scratch(prefix)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_policy(
    policy_dir: Path,
    env: str,
    db_url: str,
    repository: Mapping[str, object],
    *,
    environment: str = "dev",
    **extra: object,
) -> Path:
    """Write ``policy_dir/ENV.yaml``; extra keys (``objectives=...``) go in as they are."""
    policy_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {
        "environment": environment,
        "database": {"url": db_url},
        "repository": dict(repository),
    }
    doc.update(extra)
    (policy_dir / f"{env}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return policy_dir


def load_database(cluster: LocalCluster, name: str, rows: int) -> tuple[str, int, SampleSize]:
    """A new database ``name`` with ``rows`` of SentriKat sample data: (url, its size in
    bytes as PostgreSQL counts it, the sample's row split)."""
    import psycopg

    from drkit.demo.sample import load_sample

    url = cluster.create_database(name)
    size = load_sample(url, rows)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return url, int(row[0]) if row else 0, size


class Moto:
    """moto's standalone S3 server on 127.0.0.1, with throwaway credentials."""

    def __init__(self) -> None:
        from drkit.pg import free_port

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_DEFAULT_REGION="us-east-1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)  # noqa: S310 - loopback
                break
            except OSError as exc:
                if getattr(exc, "code", None):
                    break
                time.sleep(0.1)

    def bucket(self) -> str:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return name

    def repository(self, prefix: str) -> dict[str, object]:
        """A fresh bucket as a drkit ``repository`` section."""
        return {
            "url": f"s3://{self.bucket()}/{prefix}",
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@contextmanager
def moto_server() -> Iterator[Moto]:
    moto = Moto()
    try:
        yield moto
    finally:
        moto.stop()


def process_stat(pid: int | str) -> tuple[int, float]:
    """(start time in clock ticks, CPU seconds used so far: user + system, all threads)
    of a running process; the pair tells a process from a later one with its pid."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used so far."""
    return process_stat(pid)[1]


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuGroup:
    """A cgroup (v1 ``cpuacct``) of its own: every process moved into it, and all they
    fork later, detached or not, add up in :meth:`seconds`."""

    def __init__(self, name: str) -> None:
        if not (CPUACCT / "cpuacct.usage").exists():
            raise SystemExit(f"{CPUACCT} (cgroup v1 cpuacct) is needed to count CPU time")
        self.path = CPUACCT / f"{name}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        #: (pid, start) → (command line, CPU seconds when last sampled): a process's CPU
        #: after its last :meth:`sample` is missing here (not from :meth:`seconds`)
        self.seen: dict[tuple[int, int], tuple[str, float]] = {}

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def sample(self) -> None:
        """Note the CPU of each process in the group now (see :attr:`seen`)."""
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                start, cpu = process_stat(pid)
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            key = (int(pid), start)
            # a zombie has no command line left: keep the one seen while it ran
            known, before = self.seen.get(key, ("", 0.0))
            self.seen[key] = (known or cmdline.decode(errors="replace"), max(cpu, before))

    def remove(self) -> None:
        """Move what is left to the root group, then drop this one."""
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (CPUACCT / "cgroup.procs").write_text(f"{pid}\n")
        with contextlib.suppress(OSError):
            self.path.rmdir()


@contextmanager
def cpu_group(name: str) -> Iterator[CpuGroup]:
    group = CpuGroup(name)
    try:
        yield group
    finally:
        group.remove()
