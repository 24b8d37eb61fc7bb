"""The demo's sanitize step: ``drkit sanitize prod staging`` with the shipped rules."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.sanitize.engine import Options, sanitize

if TYPE_CHECKING:
    from drkit.demo import Sandbox, Say

SALT_ENV = "DRKIT_SANITIZE_SALT"


def shipped_rules(name: str) -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "sanitize_rules" / name
        if candidate.is_file():
            return candidate
    return None


def step_sanitize(box: Sandbox, say: Say) -> None:
    from drkit.demo import write_policy

    rules = shipped_rules("prod-to-staging.yaml")
    if rules is None:
        say("info", "sanitize: sanitize_rules/prod-to-staging.yaml not found, step skipped")
        return
    say("step", "drkit sanitize prod staging (shipped rules: seed plan, leak scan)")
    write_policy(box.policy_dir, "staging", box.cluster.dsn("sentrikat_staging"), box.repo_dir)
    os.environ.setdefault(SALT_ENV, secrets.token_urlsafe(24))  # a sandbox-only salt
    report = sanitize(box.policy("prod"), box.policy("staging"), Options(rules_path=rules))
    leak = report.leak
    masked = sum(len(t.strategies) for t in report.tables)
    say(
        "ok",
        f"{report.rows} rows into sentrikat_staging, {masked} masked columns, "
        f"leak scan clean over {leak.originals if leak else 0} original values "
        f"({report.phases.get('total', 0):.1f}s)",
    )
    box.report["sanitize"] = report.to_dict()
