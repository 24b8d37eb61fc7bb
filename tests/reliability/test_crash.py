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
import yaml

from tests.conftest import DrkitRunner, PgServer, PolicyWriter, RepoTarget, pg_versions
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
#: Kill points on the other majors of the matrix (the full count runs on the default).
MATRIX_POINTS = max(1, int(os.environ.get("DRKIT_CRASH_MATRIX_POINTS", "6")))


def points_for(pg_major: int | None) -> int:
    return POINTS if pg_major in (None, 15) else min(POINTS, MATRIX_POINTS)


@pytest.fixture(scope="module")
def crash_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A database big enough that a backup takes a few hundred milliseconds of streaming."""
    from drkit.demo.sample import load_sample

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


@pg_versions()
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
    pg_major: int | None,
) -> None:
    dbname, url = crash_db
    points = points_for(pg_major)
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
    # 20+ kills on file:// (the pipeline with age); the S3 variant adds half as many
    wanted = points if backend == "file" else max(1, points // 2)
    kills = rounds = 0
    while kills < wanted and rounds < 3 * wanted:  # at least that many real kills
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
    assert kills >= wanted, outcomes

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


def _decode_age_zstd(data: bytes, identity: Path) -> bytes:
    import zstandard

    plain = subprocess.run(
        ["age", "-d", "-i", str(identity)], input=data, capture_output=True, check=False
    )
    assert plain.returncode == 0, f"an archived object does not decrypt: {plain.stderr!r}"
    out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(plain.stdout)
    return out


def test_sigkill_anywhere_in_wal_push(
    file_repo: RepoTarget, make_policy: PolicyWriter, tmp_path: Path
) -> None:
    """archive_command killed at random moments: no truncated or wrong WAL object, never
    a ``.done`` marker for a file that is not stored whole, and the retry succeeds."""
    rng = random.Random(SEED + 2)
    identity, recipient = make_age_key(tmp_path / "keys")
    extra = {"encryption": {"recipients": [recipient], "identity_file": str(identity)}}
    policy_dir = make_policy("prod", "postgresql:///unused", file_repo, repository=extra)
    assert file_repo.root is not None
    wal_dir = file_repo.root / "prod" / "wal"
    pg_wal = tmp_path / "pg_wal"
    status = pg_wal / "archive_status"
    status.mkdir(parents=True)
    names = [f"0000000100000000000000{i:02X}" for i in range(1, 7)]
    contents = {}
    for name in names:
        # half random, half zeros: like real segments, partly compressible
        contents[name] = os.urandom(8 * 1024 * 1024) + bytes(8 * 1024 * 1024)
        (pg_wal / name).write_bytes(contents[name])

    def reset() -> None:
        if wal_dir.exists():
            for p in wal_dir.iterdir():
                p.unlink()
        for name in names:
            (status / f"{name}.done").unlink(missing_ok=True)
            (status / f"{name}.ready").touch()

    def ready() -> list[str]:
        return sorted(p.name.removesuffix(".ready") for p in status.glob("*.ready"))

    def check(context: str) -> None:
        stored = {p.name: p for p in wal_dir.iterdir()} if wal_dir.exists() else {}
        for file_name, path in stored.items():
            if TMP_MARK in file_name:
                continue
            name = file_name.removesuffix(".zst.age")
            assert name in contents, f"{context}: unexpected {file_name}"
            assert _decode_age_zstd(path.read_bytes(), identity) == contents[name], (
                f"{context}: {file_name} is not the segment, whole"
            )
        for done in status.glob("*.done"):
            name = done.name.removesuffix(".done")
            assert f"{name}.zst.age" in stored, f"{context}: {name} marked .done, not stored"

    def push(delay: float | None) -> int | None:
        target = pg_wal / ready()[0]
        proc = start_drkit("wal-push", "prod", str(target), policy_dir=policy_dir)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
            return None
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        # what PostgreSQL's archiver does after archive_command succeeded
        (status / f"{target.name}.ready").rename(status / f"{target.name}.done")
        return 0

    reset()
    started = time.monotonic()
    assert push(None) == 0
    duration = time.monotonic() - started
    assert ready() == []  # one call archived the whole backlog ahead
    check("calibration")

    kills = rounds = 0
    while kills < POINTS and rounds < 3 * POINTS:
        i, rounds = rounds, rounds + 1
        if not ready():
            reset()
        delay = kill_delay(rng, duration, i)
        begun = time.monotonic()
        if push(delay) is None:
            kills += 1
        else:
            duration = min(duration, time.monotonic() - begun)
        context = f"seed {SEED}, round {i}, kill after {delay:.3f}s of {duration:.2f}s"
        check(context)
        wait_for(lambda: not stray_processes(recipient), 15, f"age to exit ({context})")
    assert kills >= POINTS

    # PostgreSQL retries whatever is still .ready: every retry succeeds (an object a
    # killed run stored whole counts as archived; identical content is not a conflict)
    while ready():
        assert push(None) == 0
    check("after the retries")
    assert sorted(p.name for p in wal_dir.iterdir() if TMP_MARK not in p.name) == [
        f"{n}.zst.age" for n in names
    ]


def test_sigkill_anywhere_in_prune(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
) -> None:
    """prune killed at random moments, half of them while it deletes: no listed backup
    ever lacks an object, what retention keeps is never touched, and a rerun finishes."""
    import json
    import shutil
    from datetime import UTC, datetime, timedelta

    rng = random.Random(SEED + 3)
    _name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, retention={"daily": 7, "orphan_grace": "1h"})
    made = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    assert file_repo.root is not None
    backups = file_repo.root / "prod" / "backups"
    real = backups / made.json()["id"]
    real_manifest = json.loads((real / "manifest.json").read_text())
    dump = next(p for p in real.iterdir() if p.name != "manifest.json")
    # 60 daily backups (copies of the real one under earlier ids) and 8 stale leftovers
    now = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    for day in range(1, 61):
        started = now - timedelta(days=day)
        backup_id = started.strftime("%Y%m%dT%H%M%SZ") + "-logical"
        folder = backups / backup_id
        folder.mkdir()
        shutil.copy(dump, folder / dump.name)
        doc = json.loads(json.dumps(real_manifest))
        doc.update(
            id=backup_id,
            started_at=started.isoformat().replace("+00:00", "Z"),
            finished_at=(started + timedelta(seconds=5)).isoformat().replace("+00:00", "Z"),
            consistent_at=started.isoformat().replace("+00:00", "Z"),
        )
        doc["objects"][0]["key"] = f"prod/backups/{backup_id}/{dump.name}"
        (folder / "manifest.json").write_text(json.dumps(doc))
        # objects carry the time they were uploaded, so what a killed prune leaves of
        # them is past the orphan grace at once, as it would be in a real repository
        uploaded = (started + timedelta(seconds=5)).timestamp()
        os.utime(folder / dump.name, (uploaded, uploaded))
        if day <= 8:
            orphan = backups / (
                started.strftime("%Y%m%dT%H%M%SZ").replace("T02", "T01") + "-logical"
            )
            orphan.mkdir()
            (orphan / dump.name).write_bytes(b"partial")
            old = (started - timedelta(hours=1)).timestamp()
            os.utime(orphan / dump.name, (old, old))
    snapshot = file_repo.root.parent / "snapshot"
    shutil.copytree(file_repo.root / "prod", snapshot)
    view = RepoView(file_repo)
    complete_before, _ = view.check_backups()
    # daily: 7 keeps the newest of each of the 7 newest days: today's and six copies
    kept = sorted(complete_before)[-7:]

    def reset() -> None:
        shutil.rmtree(file_repo.root / "prod")  # type: ignore[operator]
        shutil.copytree(snapshot, file_repo.root / "prod")  # type: ignore[operator]

    def manifests_left() -> int:
        return sum(1 for _ in backups.glob("*/manifest.json"))

    started_at = time.monotonic()
    assert run_drkit("prune", "prod", policy_dir=policy_dir).code == 0
    duration = time.monotonic() - started_at
    assert sorted(view.check_backups()[0]) == kept

    kills = rounds = interrupted = 0
    initial = len(complete_before)
    while kills < POINTS and rounds < 3 * POINTS:
        i, rounds = rounds, rounds + 1
        reset()
        proc = start_drkit("prune", "prod", policy_dir=policy_dir)
        if i % 2:  # anywhere in the run
            delay = rng.uniform(0.0, duration * 1.05)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        else:  # while it deletes
            deadline = time.monotonic() + 30
            while manifests_left() >= initial and proc.poll() is None:
                assert time.monotonic() < deadline, "prune never started deleting"
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.03))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        killed = proc.returncode == -signal.SIGKILL
        kills += killed
        context = f"seed {SEED}, round {i}"
        try:
            complete, orphans = view.check_backups()
            interrupted += any("T010000Z" not in o for o in orphans)  # not the seeded ones
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from None
        assert set(kept) <= complete, f"{context}: prune deleted a backup retention keeps"
    assert kills >= POINTS
    if not interrupted:
        # the narrowest window (a manifest deleted, its objects not yet) is a matter of
        # timing luck: put the repository in that state by hand, as a kill there leaves it
        reset()
        doomed = sorted(set(complete_before) - set(kept))[0]
        (backups / doomed / "manifest.json").unlink()
        complete, orphans = view.check_backups()
        assert doomed not in complete and doomed in orphans

    again = run_drkit("prune", "prod", "--json", policy_dir=policy_dir)
    assert again.code == 0, again.stderr
    complete, orphans = view.check_backups()
    assert sorted(complete) == kept and not orphans
    verified = verify_all(run_drkit, policy_dir)
    assert verified.code == 0, verified.stderr


@pg_versions()
def test_sigkill_anywhere_in_a_physical_backup(
    run_drkit: DrkitRunner, pg_major: int | None
) -> None:
    """``backup --physical`` killed at random moments on a cluster archiving through
    drkit: listed base backups stay whole and their WAL chain complete, no
    pg_basebackup lingers, the next base backup is not refused, prune clears the rest."""
    from drkit.pg import chown_tree, cluster_os_user
    from tests.wal_support import file_repo_block, shared_dir, start_archived_cluster

    rng = random.Random(SEED + 4)
    with shared_dir() as root:
        block = file_repo_block(root)
        arch = start_archived_cluster(root, block, major=pg_major)
        try:
            arch.execute(
                "CREATE TABLE filler AS SELECT g, md5(g::text) AS v FROM generate_series(1, 200000) g"
            )
            doc = yaml.safe_load((arch.policy_dir / "prod.yaml").read_text())
            doc["retention"] = {"daily": 30, "orphan_grace": "1s"}
            (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            chown_tree(arch.policy_dir, cluster_os_user())
            repo = RepoTarget("file", block["url"], root=Path(block["url"].removeprefix("file://")))
            view = RepoView(repo)
            env: dict[str, str] = {}
            args = ["backup", "prod", "--physical"]
            duration = timed_run(args, arch.policy_dir, env)
            kills = rounds = 0
            outcomes: list[str] = []
            points = points_for(pg_major)
            while kills < points and rounds < 3 * points:
                i, rounds = rounds, rounds + 1
                delay = kill_delay(rng, duration, i)
                begun = time.monotonic()
                code = run_and_kill(args, arch.policy_dir, delay, env)
                if code is None:
                    kills += 1
                else:
                    duration = min(duration, time.monotonic() - begun)
                outcomes.append(f"{delay:.2f}s:{'killed' if code is None else 'finished'}")
                context = f"seed {SEED}, round {i}, kill after {delay:.3f}s of {duration:.2f}s"
                try:
                    complete, _orphans = view.check_backups()
                except AssertionError as exc:
                    raise AssertionError(f"{context}: {exc}") from None
                assert complete, context
                wait_for(
                    lambda: not stray_processes("pg_basebackup"), 20, f"pg_basebackup ({context})"
                )
            assert kills >= points, outcomes
            complete, _orphans = view.check_backups()
            assert set(listed_ids(run_drkit, arch.policy_dir)) == complete
            verified = verify_all(run_drkit, arch.policy_dir)
            assert verified.code == 0, (verified.stderr, outcomes)
            assert all(b["wal_chain"] == "complete" for b in verified.json()["backups"])
            again = run_drkit(*args, "--json", policy_dir=arch.policy_dir)
            assert again.code == 0, again.stderr
            time.sleep(1.2)
            assert run_drkit("prune", "prod", policy_dir=arch.policy_dir).code == 0
            complete_after, orphans_after = view.check_backups()
            assert not orphans_after and again.json()["id"] in complete_after
            assert not [k for k in view.objects() if TMP_MARK in k]
        finally:
            arch.stop_restored()
            arch.cluster.destroy()
