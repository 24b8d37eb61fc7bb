"""Crash anywhere: SIGKILL ``drkit backup`` at randomised moments, then check the repository.

Each round starts the real CLI and kills it with SIGKILL after a random delay drawn
from the whole length of an undisturbed run (start-up, lock, snapshot, pg_dump through
zstd and age into the repository, manifest).  After every kill:

* every backup with a manifest has every object, whole (size and sha256 as recorded);
* no child (pg_dump, age) outlives the killed drkit for long;
* the next run is not refused: the lock died with its holder.

At the end ``drkit backups`` lists exactly the complete backups, ``drkit verify --all``
passes, a rerun succeeds, and ``drkit prune`` clears every leftover.

``DRKIT_CRASH_SEED`` replays a run (the seed is printed on failure);
``DRKIT_CRASH_POINTS`` changes the number of kills (at least 20 by default).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DrkitRunner, PgServer, PolicyWriter, RepoTarget
from tests.reliability.helpers import (
    TMP_MARK,
    RepoView,
    listed_ids,
    make_age_key,
    start_drkit,
    stray_processes,
    verify_all,
    wait_for,
)

SEED = int(os.environ.get("DRKIT_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))
POINTS = max(1, int(os.environ.get("DRKIT_CRASH_POINTS", "20")))


@pytest.fixture(scope="module")
def crash_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A database big enough that a backup takes a few hundred milliseconds of streaming."""
    from drkit.sample import load_sample

    name = f"crash_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    load_sample(url, 100_000)
    yield name, url
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def small_db(pg_server: PgServer) -> Iterator[str]:
    """A second database: a backup of two leaves a visible orphan when killed between them."""
    name = f"small_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    pg_server.query(name, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    pg_server.query(
        name, "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g"
    )
    yield name
    pg_server.drop_database(name)


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


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_sigkill_anywhere_in_a_logical_backup(
    backend: str,
    crash_db: tuple[str, str],
    small_db: str,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    dbname, url = crash_db
    rng = random.Random(SEED + (0 if backend == "file" else 1))
    if backend == "file":
        repo = request.getfixturevalue("file_repo")
        view = RepoView(repo)
        # the hardest pipeline: pg_dump | zstd | age | temp file + fsync + rename
        identity, recipient = make_age_key(tmp_path / "keys")
        extra = {"encryption": {"recipients": [recipient], "identity_file": str(identity)}}
        marker = recipient
        env: dict[str, str] = {}
    else:
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.create_bucket()
        repo = RepoTarget("s3", f"s3://{bucket}/drkit", endpoint_url=s3.endpoint, bucket=bucket)
        view = RepoView(repo, s3)
        # uncompressed, in 5 MiB parts: the dump goes up as a multipart upload
        extra = {"compression": {"algorithm": "none"}}
        env = {"DRKIT_S3_PART_SIZE": str(5 * 1024 * 1024)}
        marker = "--snapshot="  # pg_dump of a killed drkit
    policy_dir = make_policy(
        "prod",
        url,
        repo,
        database={"url": url, "databases": [dbname, small_db]},
        repository=extra,
        retention={"daily": 30, "orphan_grace": "1s"},
    )
    duration = timed_run(["backup", "prod"], policy_dir, env)
    outcomes: list[str] = []
    seen_orphans: set[str] = set()
    seen_pending = 0
    kills = rounds = 0
    while kills < POINTS and rounds < 3 * POINTS:  # at least POINTS real kills
        i, rounds = rounds, rounds + 1
        delay = kill_delay(rng, duration, i)
        started = time.monotonic()
        code = run_and_kill(["backup", "prod"], policy_dir, delay, env)
        if code is None:
            kills += 1
        else:  # it finished first: runs are faster than calibrated
            duration = min(duration, time.monotonic() - started)
        outcomes.append(f"{delay:.2f}s:{'killed' if code is None else 'finished'}")
        context = f"seed {SEED}, round {i}, kill after {delay:.3f}s of {duration:.2f}s"
        try:
            complete, orphans = view.check_backups()
            seen_orphans |= orphans
            seen_pending = max(seen_pending, view.pending_uploads())
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from None
        assert complete, context  # the calibration run at least
        wait_for(lambda: not stray_processes(marker), 15, f"children to exit ({context})")
    assert kills >= POINTS, outcomes

    complete, orphans = view.check_backups()
    assert set(listed_ids(run_drkit, policy_dir)) == complete, outcomes
    verified = verify_all(run_drkit, policy_dir)
    assert verified.code == 0, (verified.stderr, outcomes)
    report = verified.json()
    assert report["ok"] is True and {b["id"] for b in report["backups"]} == complete

    again = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
    assert again.code == 0, again.stderr
    time.sleep(1.2)  # past the orphan grace
    pruned = run_drkit("prune", "prod", "--json", policy_dir=policy_dir)
    assert pruned.code == 0, pruned.stderr
    complete_after, orphans_after = view.check_backups()
    assert not orphans_after, f"prune left {sorted(orphans_after)} (seed {SEED})"
    assert not [k for k in view.objects() if TMP_MARK in k], f"temporary files left (seed {SEED})"
    assert view.pending_uploads() == 0, f"open multipart uploads left (seed {SEED})"
    assert again.json()["id"] in complete_after
    assert set(listed_ids(run_drkit, policy_dir)) == complete_after
    print(
        f"crash seed {SEED} ({backend}): {len(outcomes)} rounds, {sorted(outcomes)}; "
        f"{len(seen_orphans)} visible orphans, {len(orphans)} left for prune, "
        f"up to {seen_pending} open multipart uploads"
    )
