"""Shared benchmark plumbing: timing commands, peak RSS of a drkit run, medians.

``python -m benchmarks._measure RSSFILE drkit-args...`` runs the drkit CLI in this
process and writes its peak resident set size (KiB) to RSSFILE — the drkit process
alone, not pg_dump or the S3 server.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(args: Sequence[str], env: dict[str, str] | None = None, **kwargs: object) -> None:
    proc = subprocess.run(
        list(args),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )


def drkit_with_rss(args: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB) of one drkit CLI run in a fresh process."""
    with tempfile.NamedTemporaryFile(prefix="drkit-rss-", delete=False) as f:
        rss_file = f.name
    try:
        wall = timed(
            lambda: run([sys.executable, "-m", "benchmarks._measure", rss_file, *args], env=env)
        )
        return wall, int(Path(rss_file).read_text() or 0)
    finally:
        os.unlink(rss_file)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def pipeline(
    first: Sequence[str], second: Sequence[str], out_path: Path, env: dict[str, str] | None = None
) -> None:
    """``first | second > out_path`` without a shell."""
    with open(out_path, "wb") as out:
        a = subprocess.Popen(list(first), stdout=subprocess.PIPE, env=env)
        b = subprocess.Popen(list(second), stdin=a.stdout, stdout=out, env=env)
        assert a.stdout is not None
        a.stdout.close()
        rb = b.wait()
        ra = a.wait()
    if ra or rb:
        raise SystemExit(f"pipeline failed: {first[0]}={ra} {second[0]}={rb}")


if __name__ == "__main__":
    target = sys.argv[1]
    from drkit.cli import run as drkit_run

    code = drkit_run(sys.argv[2:])
    Path(target).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    raise SystemExit(code)
