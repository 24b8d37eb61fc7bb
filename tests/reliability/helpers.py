"""Shared helpers of the reliability suite: real processes, real repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import DrkitRunner, Result

TMP_MARK = ".drkit-tmp-"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def start_drkit(
    *args: str, policy_dir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``drkit`` as a background process (for killing, or running side by side)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=full_env,
    )


def files_under(root: Path) -> dict[str, int]:
    """Every file below ``root`` (temp files included), by relative path."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
    }


def listed_ids(run_drkit: DrkitRunner, policy_dir: Path, env: str = "prod") -> list[str]:
    result = run_drkit("backups", env, "--json", policy_dir=policy_dir)
    assert result.code == 0, result.stderr
    return sorted(row["id"] for row in result.json())  # oldest first


def verify_all(run_drkit: DrkitRunner, policy_dir: Path, env: str = "prod") -> Result:
    return run_drkit("verify", env, "--all", "--json", policy_dir=policy_dir)


def manifests(root: Path, env: str = "prod") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in (root / env / "backups").glob("*/manifest.json"):
        found[path.parent.name] = json.loads(path.read_text())
    return found
