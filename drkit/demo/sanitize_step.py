"""The demo's sanitize step: ``drkit sanitize prod staging`` with the shipped rules.

The rules are ``sanitize_rules/prod-to-staging.yaml``, carried inside this package
(``drkit/demo/prod-to-staging.yaml`` links to it, and a build copies it in), so the
demo runs them from a wheel as from a checkout, whatever the current directory holds.
The run reads a copy in the sandbox: whatever sanitize writes back to its rules file
(pins) never touches the installed one.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from drkit.demo.sandbox import Sandbox, Say, Step, write_policy
from drkit.errors import OperationError
from drkit.sanitize import Options, sanitize

SALT_ENV = "DRKIT_SANITIZE_SALT"
STAGING_DB = "sentrikat_staging"


def demo_rules() -> Path:
    """The shipped prod → staging rules, as installed with drkit; missing is an error."""
    path = Path(__file__).resolve().with_name("prod-to-staging.yaml")
    if not path.is_file():
        raise OperationError(
            f"demo: the shipped sanitize rules {path} are missing from this install; "
            f"reinstall drkit"
        )
    return path


def sanitize_prod_to_staging(box: Sandbox, say: Say) -> None:
    """Sanitize PROD into a STAGING database; the run's leak scan must come out clean."""
    rules = box.root / "prod-to-staging.yaml"
    shutil.copyfile(demo_rules(), rules)
    say("step", "drkit sanitize prod staging (shipped rules: seed plan, leak scan)")
    write_policy(box.policy_dir, "staging", box.cluster.dsn(STAGING_DB), box.repo_dir)
    os.environ.setdefault(SALT_ENV, secrets.token_urlsafe(24))  # a sandbox-only salt
    report = sanitize(box.policy("prod"), box.policy("staging"), Options(rules_path=rules))
    leak = report.leak
    masked = sum(len(t.strategies) for t in report.tables)
    say(
        "ok",
        f"{report.rows} rows into {STAGING_DB}, {masked} masked columns, "
        f"leak scan clean over {leak.originals if leak else 0} original values "
        f"({report.phases.get('total', 0):.1f}s)",
    )
    box.sanitize = report.document()


STEP = Step("sanitize prod → staging with the shipped rules (leak scan)", sanitize_prod_to_staging)
