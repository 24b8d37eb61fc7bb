"""Prune with real base backups and real archived WAL: WAL older than the oldest
kept base backup's start goes, every segment a kept backup needs stays, and the kept
backup still restores to the latest point."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from drkit.backup.retention import wal_to_delete
from drkit.catalog import list_backups, precedes
from drkit.config import load_policy
from drkit.storage import Repository
from tests.fix_cli import DrkitRunner
from tests.wal_support import Archived, archived_cluster, file_repo_block, shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


def wal_names(repo: Repository) -> set[str]:
    return {info.key.rsplit("/", 1)[-1] for info in repo.list("wal/")}


def test_prune_keeps_exactly_the_wal_the_kept_base_backup_needs(
    archived: Archived, run_cli: DrkitRunner
) -> None:
    arch = archived
    repo = Repository.for_policy(load_policy(arch.env, arch.policy_dir))
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")

    def has(name: str) -> bool:
        return any(n.startswith(name) for n in wal_names(repo))

    first = run_cli("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
    assert first.code == 0, first.stderr
    for label in ("a", "b"):
        arch.execute(f"INSERT INTO marker (label) VALUES ('{label}')")
        arch.switch_and_wait(has)
    second = run_cli("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
    assert second.code == 0, second.stderr
    arch.execute("INSERT INTO marker (label) VALUES ('c')")
    arch.switch_and_wait(has)

    kept = next(m for m in list_backups(repo) if m.id == second.json()["id"])
    # each base backup records the server's consistent point (its stop position): the
    # order of backups (drkit.catalog.order)
    taken = {m.id: m for m in list_backups(repo)}
    for made in (first.json(), second.json()):
        m = taken[made["id"]]
        assert m.consistent_lsn == m.wal_stop == made["consistent_lsn"]
        assert m.server_point is not None and made["clock_skewed"] is False
    assert precedes(taken[first.json()["id"]], kept)
    cutoff = str(kept.wal_start_segment)
    before = wal_names(repo)
    older = {n for n in before if n[:24] < cutoff and not n.endswith(".history")}
    assert older  # the first backup's WAL is there to delete

    dry = run_cli("prune", arch.env, "--dry-run", "--json", policy_dir=arch.policy_dir)
    assert dry.code == 0, dry.stderr
    plan = dry.json()
    assert {b["id"]: b["action"] for b in plan["backups"]} == {
        first.json()["id"]: "DELETE",
        second.json()["id"]: "KEEP",
    }
    assert plan["wal"] == {
        "cutoff": cutoff,
        "delete": len(older),
        "retention": None,  # no retention.wal: WAL from the oldest kept base backup on
        "pitr_from": plan["wal"]["pitr_from"],
        "pitr_from_backup": second.json()["id"],
        "consistent_only": [],
        "locked": 0,  # a file:// repository locks nothing
        "locked_until": None,
    }
    assert before <= wal_names(repo)  # nothing deleted (new segments may still arrive)

    done = run_cli("prune", arch.env, "--json", policy_dir=arch.policy_dir)
    assert done.code == 0, done.stderr
    after = wal_names(repo)
    assert not after & older
    assert before - older <= after
    assert all(n[:24] >= cutoff or n.endswith(".history") for n in after)
    assert wal_to_delete(sorted(after), cutoff) == []
    assert [m.id for m in list_backups(repo)] == [second.json()["id"]]

    # the kept base backup's WAL chain is complete: verify reads it end to end
    verify = run_cli("verify", arch.env, "latest", "--json", policy_dir=arch.policy_dir)
    assert verify.code == 0, verify.stderr + verify.stdout
    assert verify.json()["backups"][0]["wal_chain"] == "complete"


def test_retention_wal_leaves_older_base_backups_their_consistent_point_and_verify_says_so(
    archived: Archived, run_cli: DrkitRunner
) -> None:
    """Real base backups and WAL: with ``retention.wal``, an older kept base backup keeps
    just the WAL that makes it consistent, still verifies whole, and verify says it
    restores to its consistent point only."""
    arch = archived
    policy_file = arch.policy_dir / f"{arch.env}.yaml"
    doc = yaml.safe_load(policy_file.read_text())
    doc["retention"] = {"wal": "1s"}  # every backup but the newest is older than that
    policy_file.write_text(yaml.safe_dump(doc))
    repo = Repository.for_policy(load_policy(arch.env, arch.policy_dir))
    arch.execute("CREATE TABLE marker (id serial PRIMARY KEY, label text NOT NULL)")

    def has(name: str) -> bool:
        return any(n.startswith(name) for n in wal_names(repo))

    ids = []
    for label in ("a", "b", "c"):
        made = run_cli("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
        assert made.code == 0, made.stderr
        ids.append(made.json()["id"])
        arch.execute(f"INSERT INTO marker (label) VALUES ('{label}')")
        arch.switch_and_wait(has)
    for backup_id in ids[:2]:  # the rules alone would keep only the newest
        run_cli("keep", arch.env, backup_id, policy_dir=arch.policy_dir, check=True)
    taken = {m.id: m for m in list_backups(repo)}
    oldest, anchor = taken[ids[0]], taken[ids[1]]
    between = {
        n
        for n in wal_names(repo)
        if str(oldest.wal_stop_segment) < n[:24] < str(anchor.wal_start_segment)
        and not n.endswith(".history")
    }
    assert between  # WAL only point-in-time recovery from the oldest backup needs

    done = run_cli("prune", arch.env, "--json", policy_dir=arch.policy_dir)
    assert done.code == 0, done.stderr
    wal = done.json()["wal"]
    assert wal["pitr_from_backup"] == ids[1] and wal["consistent_only"] == [ids[0]]
    after = wal_names(repo)
    assert not after & between
    assert {str(oldest.wal_start_segment), str(oldest.wal_stop_segment)} <= {n[:24] for n in after}
    assert [m.id for m in list_backups(repo)] == ids

    verify = run_cli("verify", arch.env, "--all", "--json", policy_dir=arch.policy_dir)
    assert verify.code == 0, verify.stderr + verify.stdout
    verdicts = {v["id"]: v for v in verify.json()["backups"]}
    assert verdicts[ids[0]]["wal_chain"] == "complete"
    assert verdicts[ids[0]]["wal_scope"] == "consistent point only"
    assert verdicts[ids[0]]["recoverable_to"] == verdicts[ids[0]]["recoverable_from"]
    assert verdicts[ids[1]]["wal_scope"] == verdicts[ids[2]]["wal_scope"] == "point-in-time"
