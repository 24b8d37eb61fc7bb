"""``drkit copy``: the primary's backups and WAL in the policy's copies, and every command
that reads a repository reading a copy with ``--repo NAME``.

Attacks: a rerun that sends again what is there; an interrupted copy that publishes a
backup half there; bytes that arrive damaged; a copy that holds another cluster's
archive; a copy whose retention is undone by the next copy run, or whose prune reaches
the primary; and the primary repository lost entirely, the rows restored from the copy.
Backups without a database are stored through the repository layer (what a copy is
about lies in the repository); the commands run as the operator runs them.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.config import load_policy
from drkit.demo.sample import table_counts
from drkit.errors import PolicyError
from drkit.schedule.jobs import dispatch
from drkit.storage import Repository
from tests.fix_cli import DrkitRunner, KeyMaker, PolicyWriter, valid
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget, S3Server
from tests.prune_support import files, nightly, store_backup
from tests.reliability.faultproxy import Fault, FaultProxy
from tests.reliability.helpers import RepoView


def copy_policy(root: Path, copy: dict[str, Any], **primary: Any) -> Path:
    """``prod`` on a ``file://`` primary under ``root`` with one copy, ``offsite``."""
    policy_dir = root / "policies"
    policy_dir.mkdir(exist_ok=True)
    (root / "repo").mkdir(exist_ok=True)
    doc = {
        "environment": "prod",
        "database": {"url": "postgresql://u:sekret@localhost/app"},
        "repository": {"url": f"file://{root / 'repo'}", "compression": {"algorithm": "none"}},
        "schedule": {"timezone": "Europe/Rome"},
        "retention": {"daily": 10},
        "copies": {"offsite": copy},
        **primary,
    }
    (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
    return policy_dir


def primary(policy_dir: Path) -> Repository:
    return Repository.for_policy(load_policy("prod", policy_dir))


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def copy_target(request: pytest.FixtureRequest, tmp_path: Path) -> RepoTarget:
    """The copy's repository: the other backend than the file:// primary, and file://."""
    if request.param == "file":
        root = tmp_path / "copy"
        root.mkdir()
        return RepoTarget("file", f"file://{root}", root=root)
    s3_repo: RepoTarget = request.getfixturevalue("s3_repo")
    return s3_repo


@pytest.mark.parametrize("copy_target", ["file"], indirect=True)
def test_copy_then_rerun_copies_nothing_and_the_copy_reads_as_the_primary(
    tmp_path: Path, copy_target: RepoTarget, run_cli: DrkitRunner, request: pytest.FixtureRequest
) -> None:
    policy_dir = copy_policy(tmp_path, copy_target.policy_block())
    repo = primary(policy_dir)
    ids = nightly(repo, 2)
    repo.backend.put_bytes("prod/wal/000000010000000000000001", b"w" * 4096)
    s3 = request.getfixturevalue("s3_server") if copy_target.kind == "s3" else None

    first = run_cli("copy", "prod", "--json", policy_dir=policy_dir)
    [done] = valid("copy", first)["copies"]
    assert done["name"] == "offsite" and done["published"] == sorted(ids)
    assert done["copied_objects"] == 5  # 2 dumps, 2 manifests, 1 WAL segment
    # byte for byte what the primary holds, under the same keys
    held = RepoView(copy_target, s3)
    assert held.objects() == {k: len(v) for k, v in files(tmp_path / "repo").items()}
    for key, data in files(tmp_path / "repo").items():
        assert held.get(key) == data

    again = run_cli("copy", "prod", "--repo", "offsite", "--json", policy_dir=policy_dir)
    assert again.code == 0, again.stderr
    [rerun] = again.json()["copies"]
    assert (rerun["copied_objects"], rerun["present_objects"], rerun["published"]) == (0, 5, [])

    listed = run_cli("backups", "prod", "--repo", "offsite", "--json", policy_dir=policy_dir)
    assert listed.code == 0, listed.stderr
    assert listed.json()["repository"] == f"{copy_target.url}/prod"
    assert [b["id"] for b in listed.json()["backups"]] == ids
    verified = run_cli("verify", "prod", "--all", "--repo", "offsite", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr + verified.stdout


def test_a_copy_keeps_its_own_retention_and_prune_of_the_copy_leaves_the_primary(
    tmp_path: Path, run_cli: DrkitRunner
) -> None:
    (tmp_path / "copy").mkdir()
    copy = {"url": f"file://{tmp_path / 'copy'}", "retention": {"daily": 2}}
    policy_dir = copy_policy(tmp_path, copy)
    repo = primary(policy_dir)
    ids = nightly(repo, 3)  # newest first; the primary keeps 10 days, the copy 2
    copied = run_cli("copy", "prod", "--json", policy_dir=policy_dir, check=True).json()
    [done] = copied["copies"]
    assert done["published"] == sorted(ids[:2]) and done["skipped"] == [ids[2]]

    newer = store_backup(repo, datetime(2026, 11, 28, 1, 0, tzinfo=UTC))
    run_cli("copy", "prod", policy_dir=policy_dir, check=True)
    in_copy = {p.name for p in (tmp_path / "copy" / "prod" / "backups").iterdir()}
    assert in_copy == {newer, *ids[:2]}

    pruned = run_cli("prune", "prod", "--repo", "offsite", "--json", policy_dir=policy_dir)
    assert pruned.code == 0, pruned.stderr
    assert {p.name for p in (tmp_path / "copy" / "prod" / "backups").iterdir()} == {
        newer,
        ids[0],
    }
    # the primary is untouched, and the next copy does not bring the pruned one back
    assert {p.name for p in (tmp_path / "repo" / "prod" / "backups").iterdir()} == {newer, *ids}
    rerun = run_cli("copy", "prod", "--json", policy_dir=policy_dir, check=True).json()
    assert rerun["copies"][0]["copied_objects"] == 0
    assert {p.name for p in (tmp_path / "copy" / "prod" / "backups").iterdir()} == {
        newer,
        ids[0],
    }


def test_the_scheduler_copies_and_prunes_each_copy_with_its_own_retention(
    tmp_path: Path,
) -> None:
    (tmp_path / "copy").mkdir()
    copy = {"url": f"file://{tmp_path / 'copy'}", "retention": {"daily": 1}}
    policy_dir = copy_policy(tmp_path, copy, retention={"daily": 3})
    policy = load_policy("prod", policy_dir)
    ids = nightly(primary(policy_dir), 2)
    dispatch("copies", policy)
    copied = tmp_path / "copy" / "prod" / "backups"
    assert {p.name for p in copied.iterdir()} == {ids[0]}
    newer = store_backup(primary(policy_dir), datetime(2026, 11, 28, 1, 0, tzinfo=UTC))
    dispatch("copies", policy)
    assert {p.name for p in copied.iterdir()} == {newer, ids[0]}
    dispatch("prune", policy)  # the primary keeps 3 days, the copy 1
    assert {p.name for p in copied.iterdir()} == {newer}
    assert {p.name for p in (tmp_path / "repo" / "prod" / "backups").iterdir()} == {newer, *ids}


@pytest.fixture
def proxied_copy(tmp_path: Path, s3_server: S3Server, s3_repo: RepoTarget) -> Any:
    """A file:// primary with two backups, its copy in S3 behind a fault proxy."""
    proxy = FaultProxy(s3_server.endpoint).start()
    try:
        block = {**s3_repo.policy_block(), "endpoint_url": proxy.endpoint}
        policy_dir = copy_policy(tmp_path, block)
        ids = nightly(primary(policy_dir), 2)
        yield policy_dir, proxy, RepoView(s3_repo, s3_server), ids
    finally:
        proxy.stop()


def test_an_interrupted_copy_publishes_nothing_half_there_and_a_rerun_completes_it(
    proxied_copy: Any, run_cli: DrkitRunner
) -> None:
    policy_dir, proxy, held, ids = proxied_copy
    older, newer = ids[1], ids[0]
    # the store fails every upload of the newer backup's dump: the copy stops there
    proxy.set_faults(Fault("500", "PUT", f"{newer}/app.dump", times=None))
    cut = run_cli("copy", "prod", policy_dir=policy_dir, env={"DRKIT_S3_MAX_ATTEMPTS": "1"})
    assert cut.code == 1, cut.stderr
    assert "Traceback" not in cut.stderr
    keys = set(held.objects())
    assert f"prod/backups/{older}/manifest.json" in keys
    assert f"prod/backups/{newer}/manifest.json" not in keys  # never published half there

    proxy.set_faults()
    proxy.log.clear()
    resumed = run_cli("copy", "prod", "--json", policy_dir=policy_dir)
    assert resumed.code == 0, resumed.stderr
    [done] = resumed.json()["copies"]
    assert done["published"] == [newer] and done["copied_objects"] == 2
    puts = [path for method, path, _ in proxy.log if method == "PUT"]
    assert puts and all(newer in path for path in puts), puts  # nothing sent twice
    verified = run_cli("verify", "prod", "--all", "--repo", "offsite", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr + verified.stdout


def test_an_object_damaged_on_arrival_is_removed_and_the_copy_fails(
    proxied_copy: Any, run_cli: DrkitRunner
) -> None:
    policy_dir, proxy, held, ids = proxied_copy
    newer = ids[0]
    # what the copy reads back of the dump it just stored is not what was sent
    proxy.set_faults(Fault("corrupt", "GET", f"{newer}/app.dump"))
    damaged = run_cli("copy", "prod", "--json", policy_dir=policy_dir)
    [failed] = valid("copy", damaged, 3)["copies"]
    assert failed["ok"] is False and failed["published"] == [ids[1]]
    line = one_line(damaged.stderr)
    assert f"prod/backups/{newer}/app.dump" in line and "arrived damaged" in line
    keys = set(held.objects())
    assert f"prod/backups/{newer}/app.dump" not in keys
    assert f"prod/backups/{newer}/manifest.json" not in keys

    proxy.set_faults()
    again = run_cli("copy", "prod", "--json", policy_dir=policy_dir)
    assert again.code == 0, again.stderr
    assert again.json()["copies"][0]["published"] == [newer]


def test_a_copy_holding_another_clusters_archive_is_refused_before_anything_is_written(
    tmp_path: Path, run_cli: DrkitRunner
) -> None:
    (tmp_path / "copy").mkdir()
    policy_dir = copy_policy(tmp_path, {"url": f"file://{tmp_path / 'copy'}"})
    repo = primary(policy_dir)
    nightly(repo, 1)
    repo.backend.put_bytes("prod/identity.json", b'{"system_identifier": "7301"}\n')
    other = tmp_path / "copy" / "prod" / "identity.json"
    other.parent.mkdir(parents=True)
    other.write_bytes(b'{"system_identifier": "9999"}\n')
    refused = run_cli("copy", "prod", policy_dir=policy_dir)
    assert refused.code == 4, refused.stderr
    assert "another cluster" in one_line(refused.stderr)
    assert files(tmp_path / "copy") == {"prod/identity.json": other.read_bytes()}


def test_a_copy_that_is_the_primary_under_another_name_is_refused_and_never_pruned(
    tmp_path: Path, run_cli: DrkitRunner
) -> None:
    (tmp_path / "alias").symlink_to(tmp_path / "repo", target_is_directory=True)
    copy = {"url": f"file://{tmp_path / 'alias'}", "retention": {"daily": 1}}
    policy_dir = copy_policy(tmp_path, copy)
    ids = nightly(primary(policy_dir), 3)
    before = files(tmp_path / "repo")
    copied = run_cli("copy", "prod", policy_dir=policy_dir)
    assert copied.code == 4, copied.stderr + copied.stdout
    assert "is the primary repository itself" in one_line(copied.stderr)
    pruned = run_cli("prune", "prod", "--repo", "offsite", policy_dir=policy_dir)
    assert pruned.code == 4, pruned.stderr + pruned.stdout
    assert files(tmp_path / "repo") == before  # the copy's retention never reached it
    assert len(ids) == 3


def test_copies_in_the_policy_refuse_what_they_cannot_honour(
    tmp_path: Path, age_key: KeyMaker, run_cli: DrkitRunner
) -> None:
    mine, theirs = age_key("mine"), age_key("theirs")
    encrypted = {"recipients": [mine.recipient]}
    cases = {
        "retnetion: unknown key (did you mean retention?)": {
            "url": "file:///srv/copy",
            "retnetion": {"daily": 1},
        },
        "compression: a copy holds the primary's objects as they are stored": {
            "url": "file:///srv/copy",
            "compression": {"algorithm": "gzip"},
        },
        "recipients differ from repository.encryption's": {
            "url": "file:///srv/copy",
            "encryption": {"recipients": [theirs.recipient]},
        },
        "file:// url must name an absolute path": {"url": "file://srv/copy"},
    }
    for expected, copy in cases.items():
        repository = {"url": f"file://{tmp_path / 'repo'}", "encryption": encrypted}
        policy_dir = copy_policy(tmp_path, copy, repository=repository)
        with pytest.raises(PolicyError, match=r"copies\.offsite") as caught:
            load_policy("prod", policy_dir)
        assert expected in str(caught.value)
    # the same recipients with identity files of their own are a copy it can read
    same = {"recipients": [mine.recipient], "identity_file": str(mine.identity)}
    policy_dir = copy_policy(
        tmp_path,
        {"url": "file:///srv/copy", "encryption": same},
        repository={"url": f"file://{tmp_path / 'repo'}", "encryption": encrypted},
    )
    assert load_policy("prod", policy_dir).for_copy("offsite").repository.encryption == (
        load_policy("prod", policy_dir).copies["offsite"].encryption
    )
    unknown = run_cli("backups", "prod", "--repo", "ofsite", policy_dir=policy_dir)
    assert unknown.code == 2
    assert "(did you mean offsite?)" in one_line(unknown.stderr)


def test_with_the_primary_repository_lost_a_restore_from_the_copy_brings_back_the_rows(
    sample_db: tuple[str, str],
    pg_server: PgServer,
    s3_repo: RepoTarget,
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    age_key: KeyMaker,
    run_cli: DrkitRunner,
) -> None:
    name, url = sample_db
    key = age_key("prod")
    # an encrypted primary: the copy holds the same age objects, read with the same key
    encryption = {"recipients": [key.recipient], "identity_file": str(key.identity)}
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        repository={"encryption": encryption},
        copies={"offsite": s3_repo.policy_block()},
    )
    counts = table_counts(pg_server.dsn(name))
    # the scheduler's backup job: the backup, then the copy
    made = dispatch("logical_backup", load_policy("prod", policy_dir))

    assert file_repo.root is not None
    shutil.rmtree(file_repo.root)  # the primary repository, gone entirely
    lost = run_cli("backups", "prod", policy_dir=policy_dir)
    assert lost.code == 1  # reported missing, never as "no backups"
    file_repo.root.mkdir()  # and an empty one in its place: lost too, not "nothing to copy"
    emptied = run_cli("copy", "prod", policy_dir=policy_dir)
    assert emptied.code == 1
    assert "the primary repository looks lost" in one_line(emptied.stderr)
    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore",
        "prod",
        "latest",
        "--repo",
        "offsite",
        "--target-db",
        pg_server.url(target),
        policy_dir=policy_dir,
    )
    assert restored.code == 0, restored.stderr
    try:
        assert table_counts(pg_server.dsn(target)) == counts
    finally:
        pg_server.drop_database(target)
    status = run_cli("status", "prod", "--repo", "offsite", "--json", policy_dir=policy_dir)
    assert status.code in (0, 3), status.stderr
    assert status.json()["backups"]["logical"]["id"] == made.id
