"""Bad inputs: hypothesis throws random YAML at the policy and rules loaders.

Every input goes through the real command (``drkit policy check``, which validates the
policy and the sanitize rules files next to it) via :func:`drkit.cli.run`; whatever the
input, the exit code is 0 (valid) or 2 (invalid, one line naming the problem) — never 1
("internal error") and never a traceback.  A few hostile inputs (an alias bomb, binary
garbage) also go through the ``drkit`` process itself with a timeout.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drkit.cli import run
from tests.fix_cli import DrkitRunner

BASE_POLICY: dict[str, Any] = {
    "environment": "prod",
    "database": {"url": "postgresql://app@localhost:5432/app", "databases": ["app"]},
    "repository": {
        "url": "file:///var/lib/drkit/repo",
        "compression": {"algorithm": "zstd", "level": 3},
        "encryption": {
            "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
            "identity_file": "/etc/drkit/key.txt",
        },
    },
    "schedule": {
        "logical_backup": "0 2 * * *",
        "physical_backup": "0 3 * * 0",
        "prune": "30 4 * * *",
        "drill": "0 5 * * 1",
        "timezone": "Europe/Rome",
    },
    "wal_archiving": True,
    "retention": {"daily": 30, "weekly": 8, "monthly": 6},
    "objectives": {"rpo": "1h", "rto": "30m"},
    "drill": {"checks": {"row_counts": True, "sql": [{"name": "n", "query": "SELECT 1"}]}},
}

BASE_RULES: dict[str, Any] = {
    "version": 1,
    "from": "prod",
    "to": "dev",
    "salt": "fuzz-salt",
    "defaults": {"unlisted_tables": "fail", "unlisted_columns": "fail"},
    "tables": {
        "user": {
            "columns": {
                "id": "keep",
                "email": {"strategy": "template", "template": "user_{id}@example.com"},
                "name": {"strategy": "fake", "provider": "name", "unique": True},
                "ip": {"strategy": "nullify"},
                "note": {"strategy": "replace_pii", "kinds": ["email", "phone", "ip"]},
                "doc": {"strategy": "json", "paths": {"$.a.b": {"strategy": "hash"}}},
                "card": {"strategy": "mask", "keep_end": 4, "char": "*"},
            }
        },
        "alert_log": {"rows": "none"},
        "sync_log": {"where": "created_at >= now() - interval '7 days'"},
        "vulnerability": {"copy": True},
    },
    "subset": {"start": {"table": "user", "where": "id % 10 = 0"}, "follow": "foreign_keys"},
}

# scalars a YAML file can hold, with the awkward ones over-represented
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x80), max_size=30),
    st.sampled_from(
        [
            "",
            "${UNSET_DRKIT_FUZZ_VAR}",
            "${X:-}",
            "${",
            "$${A}",
            "age1",
            "s3://",
            "file://",
            "* * * * * *",
            "99 99 * * *",
            "-1h",
            "1e309",
            "0x10",
            "a" * 5000,
            "Robert'); DROP TABLE students;--",
            "\u202e\u0000",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["url", "columns"]), children, max_size=4
        )
    ),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """A valid document with a few values replaced, keys added or removed."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "add", "delete"]))
        if not path:
            if action == "replace":
                return draw(values)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=10))] = draw(values)
        else:
            parent[last] = draw(values)
    return doc


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError):
        return str(doc)


def _check(policy_text: str, rules_text: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "policies").mkdir()
        (root / "policies" / "prod.yaml").write_text(policy_text, encoding="utf-8")
        if rules_text is not None:
            (root / "sanitize_rules").mkdir()
            (root / "sanitize_rules" / "prod-to-dev.yaml").write_text(rules_text, encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.chdir(root),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = run(["policy", "check", "prod", "--policy-dir", str(root / "policies")])
        stderr = err.getvalue()
        assert code in (0, 2), (code, stderr, policy_text[:500], (rules_text or "")[:500])
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        if code == 2:
            assert stderr.strip(), "an invalid input must say what is wrong"


FUZZ = settings(
    max_examples=int(os.environ.get("DRKIT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


def test_the_base_documents_are_valid() -> None:
    """The fuzzers start from valid documents, or they would test only the first error."""
    _check(_dump(BASE_POLICY), _dump(BASE_RULES))


@FUZZ
@given(doc=mutated(BASE_POLICY))
def test_mutated_policies_exit_0_or_2(doc: Any) -> None:
    _check(_dump(doc))


@FUZZ
@given(doc=mutated(BASE_RULES))
def test_mutated_rules_exit_0_or_2(doc: Any) -> None:
    _check(_dump(BASE_POLICY), _dump(doc))


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text_as_policy_and_rules_exit_0_or_2(text: str) -> None:
    _check(text)
    _check(_dump(BASE_POLICY), text)


@FUZZ
@given(doc=values)
def test_random_structures_exit_0_or_2(doc: Any) -> None:
    _check(_dump(doc), _dump(doc))


def test_nan_and_huge_numbers_are_rejected_not_crashing() -> None:
    for value in (math.nan, math.inf, 10**40, -(10**40)):
        doc = copy.deepcopy(BASE_POLICY)
        doc["retention"]["daily"] = value
        _check(_dump(doc))
        doc = copy.deepcopy(BASE_POLICY)
        doc["repository"]["compression"]["level"] = value
        _check(_dump(doc))


def test_hostile_files_through_the_real_process(tmp_path: Path, run_drkit: DrkitRunner) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    cases = {
        "alias-bomb": bomb.encode(),
        "binary": bytes(range(256)) * 4,
        "bom-and-nul": b"\xef\xbb\xbfenvironment: prod\x00\n",
        "deep": b"a: " + b"[" * 2000 + b"]" * 2000 + b"\n",
        "huge-int": b"environment: prod\nretention: {daily: " + b"9" * 5000 + b"}\n",
        "not-utf8": b"environment: \xff\xfe\n",
        "tabs": b"environment:\tprod\n\tdatabase: x\n",
    }
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for name, data in cases.items():
        (policy_dir / "prod.yaml").write_bytes(data)
        result = run_drkit("policy", "check", "prod", policy_dir=policy_dir, timeout=60)
        assert result.code == 2, (name, result.code, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, name
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, name
