"""Recovery that knows where it must end, and a verify that reads what it claims.

Attacks with ordinary faults on a real cluster archiving through ``drkit wal-push``:

* a ``compression: none`` repository copied with ``cp -r`` (no extended attributes)
  still verifies, and a flipped byte in the copy is found.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import DrkitRunner
from tests.test_pitr import backup_with_markers
from tests.wal_support import archived_cluster, file_repo_block, shared_dir

pytestmark = pytest.mark.slow


def test_a_plain_copy_of_an_uncompressed_repository_stays_verifiable(
    run_drkit: DrkitRunner,
) -> None:
    """compression: none keeps its sha256 in the repository itself: `cp -r` (no extended
    attributes) keeps it, and a flipped byte in the copy fails verify naming the segment.
    On 8f47402 the copy verified clean."""
    with shared_dir() as root:
        block = file_repo_block(root)
        block["compression"] = {"algorithm": "none"}
        with archived_cluster(root, block) as arch:
            segments = backup_with_markers(arch, run_drkit, "m1", "m2")
        source = Path(str(block["url"]).removeprefix("file://"))
        copy = root / "copy"
        subprocess.run(["cp", "-r", str(source), str(copy)], check=True)
        assert not os.listxattr(copy / "prod" / "wal" / segments[0])
        policy_dir = root / "policies-copy"
        policy_dir.mkdir()
        doc = yaml.safe_load((root / "policies" / "prod.yaml").read_text())
        doc["repository"]["url"] = f"file://{copy}"
        (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))

        clean = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
        assert clean.code == 0, clean.stdout + clean.stderr
        checked = clean.json()["backups"][0]["wal_checked"]
        assert set(checked["by"]) == {"sha256 file"}, checked

        segment = copy / "prod" / "wal" / segments[0]
        data = bytearray(segment.read_bytes())
        data[len(data) // 3] ^= 0x01
        segment.write_bytes(bytes(data))
        damaged = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
        assert damaged.code == 3, damaged.stdout + damaged.stderr
        problems = damaged.json()["backups"][0]["problems"]
        assert any(segments[0] in p and "sha256" in p for p in problems), problems

        # objects written before checksums were kept beside them still verify, and say how
        for sidecar in (copy / "prod" / "wal").glob("*.sha256"):
            sidecar.unlink()
        segment.write_bytes(bytes(data[: len(data) // 2]))  # and one is cut short
        legacy = run_drkit("verify", "prod", "latest", "--json", policy_dir=policy_dir)
        assert legacy.code == 3, legacy.stdout
        verdict = legacy.json()["backups"][0]
        assert any(segments[0] in p and "bytes" in p for p in verdict["problems"]), verdict
        assert "size only" in " ".join(verdict["wal_checked"]["by"]), verdict
