"""What every demo step shares: the sandbox, the progress callback and a policy writer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drkit.config import Policy, load_policy
from drkit.demo.document import (
    DemoBackup,
    DemoDocument,
    DemoDrill,
    DemoPitr,
    DemoPostgresql,
    DemoRestore,
    DemoVerify,
)
from drkit.errors import OperationError
from drkit.pg import LocalCluster
from drkit.sanitize import SanitizeDocument

#: ``say(kind, text)``: kind is ``step`` (a step starts), ``ok`` (it passed) or ``info``
Say = Callable[[str, str], None]


@dataclass
class Sandbox:
    """The demo's temporary directory: its cluster, policies, repository, and the parts
    of the demo's document the steps have filled in."""

    root: Path
    cluster: LocalCluster
    policy_dir: Path
    repo_dir: Path
    prod_dsn: str
    sample_rows: int = 0
    backup: DemoBackup | None = None
    verify: DemoVerify | None = None
    restore: DemoRestore | None = None
    backups_listed: list[str] = field(default_factory=list)
    drill: DemoDrill | None = None
    sanitize: SanitizeDocument | None = None
    pitr: DemoPitr | None = None

    def policy(self, env: str = "prod") -> Policy:
        return load_policy(env, self.policy_dir)

    def document(self, duration: float) -> DemoDocument:
        """The demo's document, once every step has run (``duration``: its seconds)."""
        parts = {
            "backup": self.backup,
            "verify": self.verify,
            "restore": self.restore,
            "drill": self.drill,
            "sanitize": self.sanitize,
            "pitr": self.pitr,
        }
        if missing := [name for name, part in parts.items() if part is None]:
            raise OperationError(f"demo: no result from the {', '.join(missing)} step(s)")
        return DemoDocument(
            ok=True,
            sample_rows=self.sample_rows,
            duration_seconds=duration,
            duration=duration,
            backups_listed=self.backups_listed,
            postgresql=DemoPostgresql(major=self.cluster.major, bin_dir=str(self.cluster.bin_dir)),
            **parts,
        )


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
