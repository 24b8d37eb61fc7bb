"""Killing drkit at random points and timing its runs: shared by the crash tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.reliability.helpers import (
    start_drkit,
)

SEED = int(os.environ.get("DRKIT_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))


POINTS = max(1, int(os.environ.get("DRKIT_CRASH_POINTS", "20")))


#: Kill points on the other majors of the matrix (the full count runs on the default).
MATRIX_POINTS = max(1, int(os.environ.get("DRKIT_CRASH_MATRIX_POINTS", "6")))


def points_for(pg_major: int | None) -> int:
    return POINTS if pg_major in (None, 15) else min(POINTS, MATRIX_POINTS)


def run_and_kill(
    args: list[str], policy_dir: Path, delay: float, env: dict[str, str]
) -> int | None:
    """Run drkit; SIGKILL it after ``delay`` seconds. None if killed, else its exit code."""
    proc = start_drkit(*args, policy_dir=policy_dir, env=env)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        return None
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return 0


def timed_run(args: list[str], policy_dir: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = start_drkit(*args, policy_dir=policy_dir, env=env)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.monotonic() - started


def kill_delay(rng: random.Random, duration: float, i: int) -> float:
    """Every other kill anywhere in a run, the others in its second half (the streaming)."""
    if i % 2:
        return rng.uniform(0.0, duration * 1.05)
    return rng.uniform(duration * 0.5, duration)
