"""``drkit policy check``: the policies and the sanitize rules files beside them validated
offline, each resolved policy with its secrets masked (``drkit check``, in
:mod:`drkit.preflight`, is the online counterpart).

:func:`check_policy_files` returns the command's document (:class:`PolicyCheckDocument`):
the ``--json`` output and what the command prints are the same facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drkit.documents import Document, Shape, described
from drkit.errors import DrkitError


class PolicyResult(Shape):
    ok: bool = described("the policy is valid")
    policy: dict[str, Any] | None = described(
        "the resolved policy, secrets masked (when valid)", default=None
    )
    error: str | None = described("why the policy is invalid", default=None)


class RulesResult(Shape):
    ok: bool = described("the rules file is valid")
    error: str = described("why it is invalid (empty when valid)")


class PolicyCheckDocument(Document):
    """`drkit policy check [ENV] --json`"""

    policies: dict[str, PolicyResult] = described("each environment's policy by its name")
    rules: dict[str, RulesResult] = described("each sanitize rules file by its path")

    def problems(self) -> list[str]:
        """Why each invalid policy, then each invalid rules file, is invalid."""
        return [r.error for r in self.policies.values() if r.error] + [
            r.error for r in self.rules.values() if r.error
        ]


def check_policy_files(env: str | None, policy_dir: Path | None) -> PolicyCheckDocument:
    """Validate the policies of ``policy_dir`` (only ``env``'s, with one) and the sanitize
    rules files next to them (only those from or to ``env``)."""
    from drkit.config import Policy, check_policies

    policies: dict[str, PolicyResult] = {}
    for name, outcome in check_policies([env] if env else None, policy_dir):
        if isinstance(outcome, Policy):
            policies[name] = PolicyResult(ok=True, policy=outcome.masked())
        else:
            policies[name] = PolicyResult(ok=False, error=outcome.message)
    rules = {
        path: RulesResult(ok=not message, error=message)
        for path, message in _check_rules_files(env, policy_dir).items()
    }
    valid = all(r.ok for r in policies.values()) and all(r.ok for r in rules.values())
    return PolicyCheckDocument(ok=valid, policies=policies, rules=rules)


def _check_rules_files(env: str | None, policy_dir: Path | None) -> dict[str, str]:
    """Path -> why the sanitize rules file is invalid ("" when valid), for the files in
    ``sanitize_rules/`` here and beside the policy directory."""
    from drkit.config import resolve_policy_dir
    from drkit.sanitize import load_rules  # psycopg, numpy, sqlglot: only here

    candidates = [Path("sanitize_rules"), resolve_policy_dir(policy_dir).parent / "sanitize_rules"]
    seen: dict[str, str] = {}
    for directory in candidates:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            key = str(path.resolve())
            if key in {str(Path(p).resolve()) for p in seen}:
                continue
            if (
                env
                and not path.stem.startswith(f"{env}-to-")
                and not path.stem.endswith(f"-to-{env}")
            ):
                continue
            try:
                load_rules(path)
                seen[str(path)] = ""
            except DrkitError as exc:
                seen[str(path)] = str(exc)
    return seen
