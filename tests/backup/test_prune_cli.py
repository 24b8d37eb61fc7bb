"""``drkit prune`` and ``drkit backups`` end to end: a real pg_dump backup, older backups
stored through the repository layer, on a ``file://`` repository and on S3."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drkit.catalog import make_backup_id, write_manifest
from drkit.config import load_policy
from drkit.storage import Repository
from tests.builders import build_manifest
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import RepoView

ROME = ZoneInfo("Europe/Rome")


def repo_objects(target: RepoTarget, request: pytest.FixtureRequest) -> dict[str, int]:
    s3 = request.getfixturevalue("s3_server") if target.kind == "s3" else None
    return RepoView(target, s3).objects()


def store_old_backup(repo: Repository, started: datetime, database: str) -> str:
    """An older backup of ``database`` (a backup counts only for the databases it holds)."""
    backup_id = make_backup_id(started, "logical")
    obj = repo.store(
        f"backups/{backup_id}/{database}.dump", io.BytesIO(b"old dump"), database=database
    )
    write_manifest(
        repo,
        build_manifest(
            backup_id=backup_id,
            at=started,
            duration=timedelta(minutes=2),
            environment=repo.env,
            databases=[database],
            consistent_at=started + timedelta(minutes=1),
            objects=[obj],
        ),
    )
    return backup_id


def test_prune_dry_run_then_prune(
    request: pytest.FixtureRequest,
    repo_target: RepoTarget,
    database: tuple[str, str],
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    name, url = database
    policy_dir = make_policy(
        "prod",
        url,
        repo_target,
        schedule={"timezone": "Europe/Rome"},
        retention={"daily": 2, "weekly": 0, "monthly": 0},
    )
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    old = [
        store_old_backup(repo, datetime(2026, 11, d, 1, 0, tzinfo=UTC), name) for d in (20, 21, 24)
    ]
    run_cli("backup", "prod", policy_dir=policy_dir, check=True)
    listed = run_cli("backups", "prod", "--json", policy_dir=policy_dir, check=True).json()[
        "backups"
    ]
    assert len(listed) == 4
    real = listed[0]["id"]
    today = datetime.now(UTC).astimezone(ROME).strftime("%Y-%m-%d")
    assert listed[0]["tiers"] == [f"daily {today}", "newest"]
    assert listed[1]["tiers"] == ["daily 2026-11-24"]
    assert listed[2]["tiers"] == [] and listed[3]["tiers"] == []

    before = repo_objects(repo_target, request)
    dry = run_cli("prune", "prod", "--dry-run", "--json", policy_dir=policy_dir, check=True)
    plan = {b["id"]: (b["action"], b["reasons"]) for b in dry.json()["backups"]}
    assert plan == {
        real: ("KEEP", [f"daily {today}", "newest"]),
        old[2]: ("KEEP", ["daily 2026-11-24"]),
        old[1]: ("DELETE", []),
        old[0]: ("DELETE", []),
    }
    assert dry.json()["oldest_restorable"] == "2026-11-24T01:01:00Z"
    text = run_cli("prune", "prod", "--dry-run", policy_dir=policy_dir, check=True).stdout
    lines = {
        line.split()[1]: line for line in text.splitlines() if line.startswith(("KEEP", "DELETE"))
    }
    assert lines[old[2]].startswith("KEEP") and lines[old[2]].endswith("daily 2026-11-24")
    assert lines[old[0]].startswith("DELETE") and lines[real].endswith("newest")
    assert "2 kept, 2 would be deleted; oldest restorable point: 2026-11-24 01:01:00Z" in text
    assert repo_objects(repo_target, request) == before

    done = run_cli("prune", "prod", "--json", policy_dir=policy_dir, check=True).json()
    assert done["deleted"] == 2 and done["dry_run"] is False
    after = repo_objects(repo_target, request)
    assert {k for k in after if "/backups/" in f"/{k}"} == {
        k for k in before if old[0] not in k and old[1] not in k
    }
    assert [
        b["id"]
        for b in run_cli("backups", "prod", "--json", policy_dir=policy_dir).json()["backups"]
    ] == [
        real,
        old[2],
    ]
    again = run_cli("prune", "prod", "--json", policy_dir=policy_dir, check=True).json()
    assert again["deleted"] == 0 and again["deleted_objects"] == 0
    assert repo_objects(repo_target, request) == after


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"retention": {"daily": -1}}, "retention.daily"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, "Mars/Olympus"),
        ({"schedule": {"prune": "61 * * * *"}}, "schedule"),
    ],
)
def test_bad_policy_is_one_line_exit_2(
    tmp_path: Path,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    patch: dict[str, object],
    needle: str,
) -> None:
    policy_dir = make_policy(
        "prod", "postgresql://u:sekret@127.0.0.1:1/app", {"url": f"file://{tmp_path}/r"}, **patch
    )
    for args in (
        ["prune", "prod", "--dry-run"],
        ["schedule", "show", "prod"],
        ["schedule", "run", "prod", "--port", "0"],
    ):
        result = run_cli(*args, policy_dir=policy_dir)
        assert result.code == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert needle in result.stderr
        assert "sekret" not in result.stderr + result.stdout


def test_leftovers_of_a_running_backup_are_kept_past_the_grace(
    file_repo: RepoTarget,
    database: tuple[str, str],
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
) -> None:
    """A backup running longer than orphan_grace: prune sees its lock and keeps the
    manifest-less objects of the id the holder announced, whatever the host clock said
    when it picked that id (here two hours behind the server), while stale leftovers of
    earlier crashes go, even one whose id a clock ahead dated in the future.  Before the
    holder has announced an id, every leftover of its kind is kept; once the lock is
    gone, all go."""
    import os

    from drkit.backup.lock import backup_lock

    _, url = database
    policy_dir = make_policy("prod", url, file_repo, retention={"daily": 3, "orphan_grace": "1s"})
    policy = load_policy("prod", policy_dir)
    repo = Repository.for_policy(policy)
    assert file_repo.root is not None

    def leftover(started: datetime) -> tuple[str, Path]:
        backup_id = make_backup_id(started, "logical")
        repo.store(f"backups/{backup_id}/app.dump", io.BytesIO(b"half a dump"), database="app")
        dump = file_repo.root / "prod" / "backups" / backup_id / "app.dump.zst"  # type: ignore[operator]
        stamp = (datetime.now(UTC) - timedelta(hours=30)).timestamp()
        os.utime(dump, (stamp, stamp))  # last written long before the grace
        return backup_id, dump

    stale, stale_dump = leftover(datetime.now(UTC) - timedelta(days=3))
    ahead, ahead_dump = leftover(datetime.now(UTC) + timedelta(days=1))
    with backup_lock(policy, "logical") as lock:
        mine, dump = leftover(datetime.now(UTC) - timedelta(hours=2))  # a clock behind
        unannounced = run_cli("prune", "prod", "--json", policy_dir=policy_dir, check=True)
        assert {o["action"] for o in unannounced.json()["orphans"]} == {"KEEP"}
        assert dump.exists() and stale_dump.exists() and ahead_dump.exists()
        lock.announce(mine)
        held = run_cli("prune", "prod", "--json", policy_dir=policy_dir, check=True).json()
        decided = {o["id"]: (o["action"], o["reason"]) for o in held["orphans"]}
        assert decided == {
            mine: ("KEEP", "no manifest, and it is the logical backup running now"),
            stale: ("DELETE", "no manifest, older than the grace period"),
            ahead: ("DELETE", "no manifest, older than the grace period"),
        }
        assert dump.exists() and not stale_dump.exists() and not ahead_dump.exists()
    freed = run_cli("prune", "prod", "--json", policy_dir=policy_dir, check=True).json()
    assert [(o["id"], o["action"]) for o in freed["orphans"]] == [(mine, "DELETE")]
    assert not dump.exists()
