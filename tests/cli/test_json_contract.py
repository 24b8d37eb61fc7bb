"""Every command's ``--json`` output matches its published schema (docs/schemas/output).

The documents come from the real CLI entry, run in the test's process (``run_cli``; the
demo's in a subprocess, as it sets process-wide variables), against real PostgreSQL and a
``file://`` repository; each is validated against the committed schema file, never
against the models directly, so what is published is what is checked.  Successes must
match the command's own shape; failures must carry ``ok: false`` and
``error: {code, message}`` and still match (a command that failed after it had
something to report keeps its shape).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.pg import chown_tree, cluster_os_user
from tests.fix_cli import (
    OUTPUT,
    REPO,
    DrkitRunner,
    PolicyWriter,
    Result,
    errors,
    own_shape,
    schema,
    valid,
)
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget, S3Server
from tests.wal_support import archived_cluster, file_repo_block, shared_dir

try:
    import jsonschema
except ImportError:  # pragma: no cover - a missing test dependency fails, never skips
    jsonschema = None

pytestmark = pytest.mark.slow

SHIPPED_RULES = REPO / "sanitize_rules" / "prod-to-staging.yaml"
SALT = {"DRKIT_SANITIZE_SALT": "salt-for-the-json-contract-test-5c1e"}


def test_every_document_has_a_committed_schema() -> None:
    from drkit.cli.documents import DOCUMENTS

    published = {p.name.removesuffix(".schema.json") for p in OUTPUT.glob("*.schema.json")}
    assert published == {*DOCUMENTS, "failure"}
    for name in published:
        schema(name)  # each is a valid draft 2020-12 schema


#: documents the command line assembles itself (a model in drkit/cli/documents.py): none;
#: every document is the model core code returns, defined next to that code
ASSEMBLED_BY_THE_CLI: set[str] = set()


def test_core_returns_its_documents() -> None:
    """One description of each document: the model core returns, never a second one in
    the command line (a dict, a ``to_dict``) that can drift from it."""
    from drkit.cli.documents import DOCUMENTS

    in_the_cli = {
        name for name, model in DOCUMENTS.items() if model.__module__.startswith("drkit.cli")
    }
    assert in_the_cli <= ASSEMBLED_BY_THE_CLI, sorted(in_the_cli - ASSEMBLED_BY_THE_CLI)


#: commands whose --json document is published under another name, or several
PUBLISHED_AS = {
    "policy check": ["policy-check"],
    "restore": ["restore", "restore-point-in-time", "restore-tables"],
    "sanitize run": ["sanitize"],  # drkit sanitize SRC DST
    "sanitize check": ["sanitize-check"],
    "sanitize scan": ["sanitize-scan"],
    "sanitize init": ["sanitize-init"],
    "schedule show": ["schedule-show"],
    # the daemon writes no document: its failures are the failure document
    "schedule run": ["failure"],
}


def json_commands() -> list[str]:
    """Every command of the real CLI that takes --json, as 'group command'."""
    from drkit.cli import click_command

    found: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        if any("--json" in getattr(p, "opts", []) for p in command.params) and path:
            found.append(" ".join(path))

    walk(click_command(), [])
    return found


def test_every_json_command_has_a_published_schema() -> None:
    commands = json_commands()
    assert "backup" in commands and "sanitize run" in commands
    for command in commands:
        for name in PUBLISHED_AS.get(command, [command]):
            assert (OUTPUT / f"{name}.schema.json").exists(), (
                f"drkit {command} --json has no docs/schemas/output/{name}.schema.json: "
                "model its document in drkit/cli/documents.py and run python -m drkit.docgen"
            )


def test_failures_print_the_failure_document(
    tmp_path: Path, make_policy: PolicyWriter, run_cli: DrkitRunner, pg_server: PgServer
) -> None:
    policy_dir = make_policy(
        "prod", pg_server.url("postgres"), {"url": f"file://{tmp_path}/no/such/repo"}
    )
    cases = [
        (["backups", "nosuchenv"], 2, "backups"),  # an unknown environment: usage error
        (["status", "nosuchenv"], 2, "status"),
        (["backups", "prod"], 1, "backups"),  # a repository that does not exist
        (["verify", "prod", "latest"], 1, "verify"),
        (["restore", "prod", "--pgdata", "/tmp/x"], 2, "restore"),  # a flag out of place
        (["schedule", "run", "nosuchenv"], 2, "failure"),  # the daemon: no document of its own
    ]
    for args, code, name in cases:
        result = run_cli(*args, "--json", policy_dir=policy_dir)
        document = valid(name, result, code, shaped=False)
        assert errors(document, schema("failure")) == []
        assert set(document) == {"ok", "error"}, document
        assert document["error"]["message"] and "\n" not in document["error"]["message"]
    # a failure after the command had something to report keeps its shape
    make_policy("dev", "postgresql://drkit:secret@127.0.0.1:1/app", {"url": f"file://{tmp_path}"})
    checked = valid("check", run_cli("check", "dev", "--json", policy_dir=policy_dir), 3)
    assert "secret" not in json.dumps(checked)
    assert {c["status"] for c in checked["checks"]} >= {"FAIL"}
    (policy_dir / "test.yaml").write_text("environment: test\ndatabase: {url: 42}\n")
    invalid = valid("policy-check", run_cli("policy", "check", "--json", policy_dir=policy_dir), 2)
    assert invalid["policies"]["test"]["ok"] is False and invalid["policies"]["prod"]["ok"]
    # the global flag before the command works the same
    early = run_cli("--json", "prune", "nosuchenv", policy_dir=policy_dir)
    assert valid("prune", early, 2, shaped=False)["error"]["code"] == 2


def test_logical_chain_documents(
    tmp_path: Path,
    pg_server: PgServer,
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    _name, url = sample_db
    suffix = uuid.uuid4().hex[:8]
    staging_db, target_db = f"stg_{suffix}", f"rst_{suffix}"
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        objectives={"rpo": "1d", "rto": "1h"},
        schedule={"logical_backup": "0 2 * * *", "timezone": "Europe/Rome"},
    )
    make_policy("staging", pg_server.url(staging_db), file_repo)
    rules = tmp_path / "prod-to-staging.yaml"
    shutil.copy(SHIPPED_RULES, rules)

    def drkit(*args: str, **kw: Any) -> Result:
        return run_cli(*args, "--json", policy_dir=policy_dir, **kw)

    try:
        valid("policy-check", drkit("policy", "check"))
        valid("policy-check", drkit("policy", "check", "prod"))
        valid("schedule-show", drkit("schedule", "show"))
        checked = drkit("check", "prod")  # no archiving here: some checks may fail
        valid("check", checked, checked.code)
        assert checked.code in (0, 3), checked.stderr

        backup = valid("backup", drkit("backup", "prod"))
        assert backup["kind"] == "logical" and backup["started_at"].endswith("Z")
        listed = valid("backups", drkit("backups", "prod"))
        assert [b["id"] for b in listed["backups"]] == [backup["id"]]
        valid("verify", drkit("verify", "prod", "latest"))
        valid("verify", drkit("verify", "prod", "--all"))
        valid("prune", drkit("prune", "prod", "--dry-run"))
        valid("prune", drkit("prune", "prod"))
        restored = valid(
            "restore", drkit("restore", "prod", "latest", "--target-db", pg_server.url(target_db))
        )
        assert restored["databases"][0]["rows"] > 0
        valid("status", drkit("status", "prod"))

        with shared_dir("drkit-jsondrill-") as scratch:
            chown_tree(scratch, cluster_os_user())
            report = valid("drill", drkit("drill", "prod", env={"DRKIT_TMPDIR": str(scratch)}))
            assert report["verdict"] == "PASS"

        draft = valid("sanitize-init", drkit("sanitize", "init", "prod"))
        assert yaml.safe_load(draft["rules"])["from"] == "prod"
        valid(
            "sanitize-check",
            drkit("sanitize", "check", "prod", "staging", "--rules", str(rules), env=SALT),
        )
        found = valid(
            "sanitize-scan", drkit("sanitize", "scan", "prod", "--rules", str(rules), env=SALT)
        )
        assert found["columns"] == {} and found["originals"] == {}
        plan = valid(
            "sanitize",
            drkit("sanitize", "prod", "staging", "--rules", str(rules), "--dry-run", env=SALT),
        )
        assert plan["mode"] == "dry-run"
        copied = valid(
            "sanitize", drkit("sanitize", "prod", "staging", "--rules", str(rules), env=SALT)
        )
        assert copied["mode"] == "run" and copied["leak_scan"]["clean"] is True
        scanned = valid(
            "sanitize",
            drkit("sanitize", "prod", "staging", "--rules", str(rules), "--scan-only", env=SALT),
        )
        assert scanned["mode"] == "scan-only"
        # a damaged backup: verify reports it in its own shape, with the error
        assert file_repo.root is not None
        stored = max(
            (p for p in file_repo.root.rglob("*") if p.is_file() and p.name != "manifest.json"),
            key=lambda p: p.stat().st_size,
        )
        stored.write_bytes(stored.read_bytes()[:-1])
        damaged = valid("verify", drkit("verify", "prod", backup["id"]), 3)
        assert damaged["backups"][0]["ok"] is False and damaged["error"]["code"] == 3
        # a failure after the command had something to report keeps its shape
        refused = drkit("sanitize", "prod", "staging", "--rules", str(rules), env=SALT)
        assert refused.code != 0  # staging holds tables now: --force is needed
        valid("sanitize", refused, refused.code, shaped=False)
    finally:
        pg_server.drop_database(staging_db)
        pg_server.drop_database(target_db)


def test_s3_repository_documents(
    sample_db: tuple[str, str],
    s3_server: S3Server,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    _name, url = sample_db
    bucket = s3_server.create_bucket()
    repo = RepoTarget("s3", f"s3://{bucket}/drkit", endpoint_url=s3_server.endpoint)
    policy_dir = make_policy("prod", url, repo)
    make_policy("test", url, RepoTarget("s3", "s3://no-such-bucket-here/drkit", s3_server.endpoint))

    def drkit(*args: str) -> Result:
        return run_cli(*args, "--json", policy_dir=policy_dir)

    backup = valid("backup", drkit("backup", "prod"))
    listed = valid("backups", drkit("backups", "prod"))
    assert listed["repository"].startswith("s3://") and listed["backups"][0]["id"] == backup["id"]
    valid("verify", drkit("verify", "prod", "latest"))
    valid("status", drkit("status", "prod"))
    missing = valid("backups", drkit("backups", "test"), 1, shaped=False)
    assert "no-such-bucket-here" in missing["error"]["message"]


def test_physical_chain_and_wal_documents(run_cli: DrkitRunner) -> None:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:

        def drkit(*args: str) -> Result:
            return run_cli(*args, "--json", policy_dir=arch.policy_dir, timeout=600)

        valid("check", drkit("check", "prod"))
        valid("archive-command", drkit("archive-command", "prod"))
        backup = valid("backup", drkit("backup", "prod", "--physical"))
        assert backup["kind"] == "physical" and backup["timeline"] == 1
        verified = valid("verify", drkit("verify", "prod", backup["id"]))
        assert verified["backups"][0]["wal_chain"] == "complete"
        point = valid("restore-point", drkit("restore-point", "prod", "rp1"))
        assert point["name"] == "rp1" and point["environment"] == "prod"
        listed = valid("backups", drkit("backups", "prod"))
        assert [b["id"] for b in listed["backups"]] == [backup["id"]]
        assert listed["restore_points"] == [{k: v for k, v in point.items() if k != "ok"}]

        # fetch an archived segment, then push it again: the archive already has it
        fetched_dir = root / "fetched"
        fetched_dir.mkdir()
        first = backup["wal_start"]
        segment = str(arch.execute(f"SELECT pg_walfile_name('{first}')")[0][0])
        got = valid("wal-fetch", drkit("wal-fetch", "prod", segment, str(fetched_dir / segment)))
        assert got["fetched"] is True
        pushed = valid("wal-push", drkit("wal-push", "prod", str(fetched_dir / segment)))
        assert pushed["status"] == "exists"
        missing = "0000000100000000000000FF"
        absent = valid(
            "wal-fetch", drkit("wal-fetch", "prod", missing, str(fetched_dir / missing)), 1
        )
        assert absent["fetched"] is False and absent["error"]["code"] == 1

        valid("promote-timeline", drkit("promote-timeline", "prod", "1"))
        pgdata = arch.new_pgdata()
        recovered = valid(
            "restore-point-in-time",
            drkit("restore", "prod", "--point-in-time", "latest", "--pgdata", str(pgdata)),
        )
        assert recovered["started"] is True and recovered["backup_id"] == backup["id"]


def test_demo_document(run_drkit: DrkitRunner) -> None:
    demo = valid("demo", run_drkit("demo", "--rows", "500", "--json", timeout=600))
    for step in ("backup", "verify", "restore", "drill", "sanitize", "pitr"):
        assert demo[step], f"the demo document has no {step} step"
    # every key the demo wrote before its document became a model is still there
    assert set(demo) == {
        *("ok", "sample_rows", "duration", "duration_seconds", "postgresql"),
        *("backup", "verify", "restore", "backups_listed", "drill", "sanitize", "pitr"),
    }
    assert demo["postgresql"]["major"] >= 13 and demo["postgresql"]["bin_dir"]
    # its sanitize step is the run's own document, whole
    assert errors(demo["sanitize"], own_shape("sanitize")) == []
    assert demo["sanitize"]["tables"] and demo["sanitize"]["leak_scan"]["clean"] is True
    assert demo["pitr"]["wal_search"]["committed_at"].endswith("Z")
