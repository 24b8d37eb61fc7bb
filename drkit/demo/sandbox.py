"""What every demo step shares: the sandbox, the progress callback and a policy writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drkit.config import Policy, load_policy
from drkit.pg import LocalCluster

#: ``say(kind, text)``: kind is ``step`` (a step starts), ``ok`` (it passed) or ``info``
Say = Callable[[str, str], None]


@dataclass
class Sandbox:
    """The demo's temporary directory: its cluster, policies, repository and report."""

    root: Path
    cluster: LocalCluster
    policy_dir: Path
    repo_dir: Path
    prod_dsn: str
    report: dict[str, Any] = field(default_factory=dict)

    def policy(self, env: str = "prod") -> Policy:
        return load_policy(env, self.policy_dir)


@dataclass(frozen=True)
class Step:
    """One step of the demo: what ``drkit demo --help`` says it does, and the code."""

    summary: str
    run: Callable[[Sandbox, Say], None]


def write_policy(policy_dir: Path, env: str, db_url: str, repo_dir: Path, **extra: Any) -> Path:
    """A policy for ``env`` backing up ``db_url`` into a ``file://`` repository."""
    doc: dict[str, Any] = {
        "environment": env,
        "database": {"url": db_url},
        "repository": {
            "url": f"file://{repo_dir}",
            "compression": {"algorithm": "zstd", "level": 3},
        },
        "retention": {"daily": 7},
        "objectives": {"rpo": "24h", "rto": "30m"},
        "schedule": {"timezone": "UTC"},
    }
    doc.update(extra)
    path = policy_dir / f"{env}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def timed(say: Say, title: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """Announce ``title``, run ``fn`` and return its result and the seconds it took."""
    say("step", title)
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started
