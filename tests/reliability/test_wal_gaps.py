"""Corruption and gaps in the WAL archive, with age-encrypted WAL and base backups.

A real cluster archives through ``drkit wal-push`` into an encrypted ``file://``
repository (PostgreSQL's OS user runs wal-push and wal-fetch, so it reads the identity
file), a physical backup is taken and segments are archived after it.  Then:

* the whole chain verifies and a PITR to ``latest`` through encrypted WAL works;
* one segment after the backup removed → ``verify`` reports the window ending at the
  segment before the gap, a PITR target beyond the gap exits 3 with the unbroken
  window, leaving the data directory empty, and so does ``latest`` unless
  ``--allow-gap`` asks to stop at the gap.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit.config import load_policy
from drkit.pg import chown_tree, cluster_os_user
from drkit.storage import Repository
from drkit.wal import find_wal_key
from tests.fix_cli import DrkitRunner
from tests.wal_support import Archived, archived_cluster, file_repo_block, shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def archived() -> Iterator[Archived]:
    with shared_dir() as root:
        keys = root / "keys"
        keys.mkdir()
        key = keys / "wal.key"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
        ).stdout.strip()
        chown_tree(keys, cluster_os_user())  # restore_command runs as PostgreSQL's user
        block = file_repo_block(root)
        block["encryption"] = {"recipients": [recipient], "identity_file": str(key)}
        with archived_cluster(root, block) as arch:
            yield arch


def test_encrypted_wal_pitr_and_a_gap_after_the_backup(
    archived: Archived, run_drkit: DrkitRunner
) -> None:
    arch = archived
    repo = Repository.for_policy(load_policy(arch.env, arch.policy_dir))

    def has(name: str) -> bool:
        return find_wal_key(repo, name) is not None

    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")
    backup = run_drkit("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    backup_id = backup.json()["id"]
    segments = []
    for label in ("m1", "m2", "m3", "m4"):
        arch.execute(f"INSERT INTO marker (label) VALUES ('{label}')")
        segments.append(arch.switch_and_wait(has))
    stored = [i.key for i in repo.list("wal/")]
    assert stored and all(k.endswith(".zst.age") for k in stored), stored
    base = [i.key for i in repo.list(f"backups/{backup_id}/")]
    assert any(k.endswith("base.tar.zst.age") for k in base), base

    ok = run_drkit("verify", arch.env, backup_id, "--json", policy_dir=arch.policy_dir)
    assert ok.code == 0, ok.stderr + ok.stdout
    assert ok.json()["backups"][0]["wal_chain"] == "complete"

    # a PITR through encrypted WAL, fetched by PostgreSQL's own user
    pgdata = arch.new_pgdata()
    latest = run_drkit(
        "restore",
        arch.env,
        "--point-in-time",
        "latest",
        "--pgdata",
        str(pgdata),
        "--target-action",
        "shutdown",
        "--json",
        policy_dir=arch.policy_dir,
        timeout=600,
    )
    assert latest.code == 0, latest.stderr

    # -- a gap: the segment that holds m2 disappears
    gap = segments[1]
    gap_key = find_wal_key(repo, gap)
    assert gap_key is not None
    repo.delete(gap_key)
    # after the backup's stop segment a gap ends the recoverable window: verify names the
    # last segment before it (the chain from start to stop, checked above, is intact)
    verified = run_drkit("verify", arch.env, backup_id, "--json", policy_dir=arch.policy_dir)
    assert verified.code == 0, verified.stderr
    window = verified.json()["backups"][0]
    assert int(window["last_wal"][8:], 16) == int(gap[8:], 16) - 1, (window, gap)

    beyond = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    time.sleep(1.5)
    pgdata = arch.new_pgdata()
    result = run_drkit(
        "restore",
        arch.env,
        "--point-in-time",
        beyond,
        "--pgdata",
        str(pgdata),
        policy_dir=arch.policy_dir,
        timeout=600,
    )
    assert result.code == 3, result.stderr
    assert "reachable window" in result.stderr
    # the window printed is the unbroken one: it names the gap and ends before it
    assert f"WAL segment {gap} is missing" in result.stderr
    assert not pgdata.exists() or not any(pgdata.iterdir())

    # latest does not silently stop before the gap: exit 3 naming it and the last reachable
    # segment; --allow-gap recovers up to it on purpose (through encrypted WAL)
    pgdata = arch.new_pgdata()
    args = ("restore", arch.env, "--point-in-time", "latest", "--pgdata", str(pgdata))
    refused = run_drkit(*args, policy_dir=arch.policy_dir, timeout=600)
    assert refused.code == 3, refused.stderr
    assert gap in refused.stderr and segments[0] in refused.stderr
    assert not pgdata.exists() or not any(pgdata.iterdir())
    allowed = run_drkit(
        *args,
        "--allow-gap",
        "--target-action",
        "shutdown",
        "--json",
        policy_dir=arch.policy_dir,
        timeout=600,
    )
    assert allowed.code == 0, allowed.stderr
    assert allowed.json()["stopped_at_gap"]["first_missing"] == gap
    assert allowed.json()["state"] == "shut down"


def test_a_flipped_byte_in_a_required_encrypted_segment_is_named(
    archived: Archived, run_drkit: DrkitRunner
) -> None:
    """The segments from a base backup's start to its stop are decoded by verify: one
    damaged byte in the (encrypted) stop segment exits 3 naming it."""
    arch = archived
    repo = Repository.for_policy(load_policy(arch.env, arch.policy_dir))
    backup = run_drkit("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr
    backup_id = backup.json()["id"]
    assert run_drkit("verify", arch.env, backup_id, policy_dir=arch.policy_dir).code == 0

    from drkit.catalog import read_manifest

    stop = str(read_manifest(repo, backup_id).wal_stop_segment)
    key = find_wal_key(repo, stop)
    assert key is not None and key.endswith(".zst.age")
    path = Path(str(arch.repo_block["url"]).removeprefix("file://")) / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    verified = run_drkit("verify", arch.env, backup_id, policy_dir=arch.policy_dir)
    assert verified.code == 3, verified.stderr
    assert stop in verified.stderr and "Traceback" not in verified.stderr
