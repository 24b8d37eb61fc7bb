"""runbooks/rotate-encryption-key.md, run as written: its ```sh blocks (with the test's
key paths for the ``export`` lines) and its ```yaml policy edits, in order, against a
real PostgreSQL and an encrypted repository holding a backup made with the old key."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.fix_cli import REPO_ROOT, DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import make_age_key

RUNBOOK = REPO_ROOT / "runbooks" / "rotate-encryption-key.md"
_FENCE = re.compile(r"^```(.*)$")
_EXPORT = re.compile(r"^export ([A-Za-z_][A-Za-z0-9_]*)=")


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """(info string, text) of every fenced block, in order."""
    blocks: list[tuple[str, str]] = []
    current: list[str] | None = None
    info = ""
    for line in path.read_text().splitlines():
        match = _FENCE.match(line.strip())
        if match and current is None:
            info, current = match.group(1).strip(), []
        elif match:
            assert current is not None
            blocks.append((info, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, "unterminated code fence"
    return blocks


def merge(base: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def test_rotate_encryption_key_runbook(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    _dbname, url = sample_db
    old_key, old_recipient = make_age_key(tmp_path / "keys", "age-2025")
    new_key = tmp_path / "keys" / "age-2026.key"
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        repository={"encryption": {"recipients": [old_recipient], "identity_file": str(old_key)}},
        retention={"daily": 1},
    )
    policy_path = policy_dir / "prod.yaml"
    old_backup = run_drkit("backup", "prod", "--json", policy_dir=policy_dir)
    assert old_backup.code == 0, old_backup.stderr

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "drkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m drkit "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO_ROOT),
        DRKIT_POLICY_DIR=str(policy_dir),
    )
    values = {"NEW_KEY": str(new_key), "OLD_KEY": str(old_key)}
    example_paths = {
        "/etc/drkit/age-2026.key": str(new_key),
        "/etc/drkit/age-2025.key": str(old_key),
    }

    blocks = fenced_blocks(RUNBOOK)
    assert [info for info, _ in blocks].count("sh") >= 4
    exports: list[str] = []
    outputs: list[str] = []
    yaml_edits = 0
    for info, text in blocks:
        if info == "sh":
            lines = []
            for line in text.splitlines():
                match = _EXPORT.match(line)
                if match and match.group(1) in values:
                    line = f"export {match.group(1)}={values[match.group(1)]}"
                    exports.append(line)
                lines.append(line)
            script = "set -euo pipefail\n" + "\n".join(exports + lines) + "\n"
            proc = subprocess.run(
                ["bash", "-c", script],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert proc.returncode == 0, (
                f"{text}\n---\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
            outputs.append(proc.stdout)
        elif info == "yaml":
            new_recipient = subprocess.run(
                ["age-keygen", "-y", str(new_key)], capture_output=True, text=True, check=True
            ).stdout.strip()
            shown = text.replace("<new public key>", new_recipient)
            for example, real in example_paths.items():
                shown = shown.replace(example, real)
            edit = yaml.safe_load(shown)
            doc = merge(yaml.safe_load(policy_path.read_text()), edit)
            doc["repository"]["encryption"].pop("identity_file", None)
            policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
            yaml_edits += 1
    assert yaml_edits == 2

    # step 1 printed the public key; step 2 decrypted its own check
    assert any(o.strip().startswith("age1") for o in outputs)
    assert any("drkit-key-check" in o for o in outputs)
    # the new key file is private
    assert stat.S_IMODE(new_key.stat().st_mode) & 0o077 == 0

    # what is left: one backup, taken after the switch, encrypted to the new key only
    assert file_repo.root is not None
    manifests = [
        json.loads(p.read_text())
        for p in (file_repo.root / "prod" / "backups").glob("*/manifest.json")
    ]
    assert len(manifests) == 1 and manifests[0]["id"] != old_backup.json()["id"]
    new_recipient = subprocess.run(
        ["age-keygen", "-y", str(new_key)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert manifests[0]["objects"][0]["encryption_recipients"] == [new_recipient]
    final = yaml.safe_load(policy_path.read_text())["repository"]["encryption"]
    assert final["identity_files"] == [str(new_key)]

    # and it restores with the new identity alone
    target = f"rotated_{uuid.uuid4().hex[:8]}"
    restored = run_drkit(
        "restore", "prod", "--target-db", pg_server.url(target), policy_dir=policy_dir
    )
    assert restored.code == 0, restored.stderr
    pg_server.drop_database(target)
