"""``backup --jobs N``: directory-format dumps, one stored object per file of the dump.

Every test runs the real CLI against real PostgreSQL and a real repository (file:// or
S3 over HTTP), and looks at the stored bytes themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard

from drkit.backup.dirdump import DumpUploader, files_held_open
from drkit.demo.sample import table_counts
from drkit.errors import CheckFailed
from drkit.pg.binaries import find_client
from drkit.restore.dirrestore import fetch_directory
from drkit.storage import Repository, RepositoryConfig, StoredObject, open_backend
from tests.builders import encryption
from tests.fix_cli import (
    DrkitRunner,
    Env,
    KeyMaker,
    PolicyWriter,
    age_decrypt,
    checks_by_name,
    drill,
)
from tests.fix_pg import PgServer, pg_versions
from tests.fix_s3 import RepoTarget
from tests.reliability.helpers import RepoView, start_drkit, wait_for
from tests.sanitize.helpers import rules_doc, sanitize, table_dump, write_rules


def view(repo: RepoTarget, request: pytest.FixtureRequest) -> RepoView:
    return RepoView(repo, request.getfixturevalue("s3_server") if repo.kind == "s3" else None)


def manifest_of(store: RepoView, backup_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(store.get(f"prod/backups/{backup_id}/manifest.json"))
    return doc


def rebuild(store: RepoView, manifest: dict[str, Any], db: str, into: Path, *keys: Any) -> Path:
    """The dump directory put back together from the stored objects, bypassing drkit."""
    into.mkdir()
    prefix = f"prod/backups/{manifest['id']}/{db}.dir/"
    for obj in manifest["objects"]:
        assert obj["key"].startswith(prefix), obj["key"]
        data = store.get(obj["key"])
        if keys:
            data = age_decrypt(data, *keys)
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
        assert len(raw) == obj["raw_size"]
        name = obj["key"][len(prefix) :].removesuffix(".age").removesuffix(".zst")
        (into / name).write_bytes(raw)
    return into


def toc_data_ids(directory: Path, server_version: str) -> set[str]:
    """The dump ids of the TABLE DATA entries in the directory's table of contents."""
    pg_restore = find_client("pg_restore", int(server_version.split(".")[0]))
    listing = subprocess.run(
        [pg_restore, "-l", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return {
        line.split(";", 1)[0]
        for line in listing.splitlines()
        if " TABLE DATA " in line.split(";")[-1]
    }


@pg_versions()
def test_jobs_backup_stores_each_table_file_and_restores_with_jobs(
    sample_db: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    dbname, url = sample_db
    policy_dir = make_policy("prod", url, repo_target)
    store = view(repo_target, request)
    source_counts = table_counts(pg_server.dsn(dbname))

    made = run_cli("backup", "prod", "--jobs", "2", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    backup_id = made.json()["id"]
    assert made.json()["rows"] == sum(source_counts.values())

    manifest = manifest_of(store, backup_id)
    assert manifest["dump_formats"] == {dbname: "directory"}
    assert manifest["row_counts"][dbname] == source_counts
    stored = store.objects()
    prefix = f"prod/backups/{backup_id}/"
    listed = {o["key"] for o in manifest["objects"]}
    assert set(stored) == listed | {prefix + "manifest.json"}  # nothing else left behind
    for obj in manifest["objects"]:
        data = store.get(obj["key"])
        assert obj["key"].endswith(".zst") and obj["database"] == dbname
        assert obj["stored_size"] == len(data) == stored[obj["key"]]
        assert obj["sha256"] == hashlib.sha256(data).hexdigest()
    # one object per file of the dump: the table of contents and every table's data
    directory = rebuild(store, manifest, dbname, tmp_path / "dump")
    names = {p.name for p in directory.iterdir()}
    assert "toc.dat" in names
    assert {f"{i}.dat" for i in toc_data_ids(directory, manifest["server_version"])} <= names
    assert len(toc_data_ids(directory, manifest["server_version"])) >= len(source_counts)

    verified = run_cli("verify", "prod", backup_id, "--json", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr

    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore",
        "prod",
        backup_id,
        "--target-db",
        pg_server.url(target),
        "--jobs",
        "2",
        "--json",
        policy_dir=policy_dir,
    )
    assert restored.code == 0, restored.stderr
    assert restored.json()["ok"] is True
    assert table_counts(pg_server.dsn(target)) == source_counts
    # without --jobs too, and into the policy's own database with --force
    again = run_cli(
        "restore", "prod", "latest", "--target-db", pg_server.url(target), "--force",
        policy_dir=policy_dir,
    )  # fmt: skip
    assert again.code == 0, again.stderr
    assert table_counts(pg_server.dsn(target)) == source_counts
    pg_server.drop_database(target)


def test_encrypted_jobs_backup_stores_age_objects_only(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    age_key: KeyMaker,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    dbname, url = sample_db
    key = age_key("prod")
    policy_dir = make_policy("prod", url, file_repo, repository=encryption([key], [key]))
    store = view(file_repo, request)
    made = run_cli("backup", "prod", "--jobs", "2", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    manifest = manifest_of(store, made.json()["id"])
    for obj in manifest["objects"]:
        data = store.get(obj["key"])
        assert obj["key"].endswith(".zst.age")
        assert obj["encryption_recipients"] == [key.recipient]
        assert data.startswith(b"age-encryption.org/v1\n")
        assert b"sentrikat" not in data.lower()
        assert obj["sha256"] == hashlib.sha256(data).hexdigest()
    directory = rebuild(store, manifest, dbname, tmp_path / "dump", key)
    assert toc_data_ids(directory, manifest["server_version"])

    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", "latest", "--target-db", pg_server.url(target), "--jobs", "2",
        policy_dir=policy_dir,
    )  # fmt: skip
    assert restored.code == 0, restored.stderr
    assert table_counts(pg_server.dsn(target)) == table_counts(pg_server.dsn(dbname))
    pg_server.drop_database(target)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_verify_and_restore_refuse_a_damaged_table_object(
    sample_db: tuple[str, str],
    repo_target: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    request: pytest.FixtureRequest,
    damage: str,
) -> None:
    _, url = sample_db
    policy_dir = make_policy("prod", url, repo_target)
    store = view(repo_target, request)
    made = run_cli("backup", "prod", "--jobs", "2", "--json", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    manifest = manifest_of(store, made.json()["id"])
    victim = max(manifest["objects"], key=lambda o: o["raw_size"] if "toc" not in o["key"] else 0)
    assert "toc.dat" not in victim["key"]
    if damage == "corrupt":
        data = bytearray(store.get(victim["key"]))
        data[len(data) // 2] ^= 0xFF
        store.put(victim["key"], bytes(data))
    else:
        store.delete(victim["key"])

    verified = run_cli("verify", "prod", "latest", "--json", policy_dir=policy_dir)
    assert verified.code == 3, verified.stdout + verified.stderr
    assert victim["key"].rsplit("/", 1)[-1] in verified.stdout

    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", "latest", "--target-db", pg_server.url(target), "--jobs", "2",
        policy_dir=policy_dir,
    )  # fmt: skip
    assert restored.code != 0
    # nothing was restored from a backup that failed its checks
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert pg_server.query(target, tables) == [(0,)]
    pg_server.drop_database(target)


def test_prune_deletes_every_object_of_a_directory_backup(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    request: pytest.FixtureRequest,
) -> None:
    _, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, retention={"daily": 1})
    store = view(file_repo, request)
    first = run_cli("backup", "prod", "--jobs", "2", "--json", policy_dir=policy_dir)
    assert first.code == 0, first.stderr
    second = run_cli("backup", "prod", "--jobs", "2", "--json", policy_dir=policy_dir)
    assert second.code == 0, second.stderr
    old = f"prod/backups/{first.json()['id']}/"
    assert sum(k.startswith(old) for k in store.objects()) > 3
    pruned = run_cli("prune", "prod", "--json", policy_dir=policy_dir)
    assert pruned.code == 0, pruned.stderr
    assert not [k for k in store.objects() if k.startswith(old)]
    new = manifest_of(store, second.json()["id"])
    assert {o["key"] for o in new["objects"]} <= set(store.objects())


def test_a_killed_jobs_backup_leaves_no_manifest_and_prune_cleans_it(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    dbname, url = database
    with psycopg.connect(pg_server.dsn(dbname), autocommit=True) as conn:
        for i in range(6):  # small tables are stored while the big one is still dumping
            conn.execute(f"CREATE TABLE small{i} AS SELECT g AS id FROM generate_series(1, 10) g")
        conn.execute(
            "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad "
            "FROM generate_series(1, 1500000) g"
        )
    policy_dir = make_policy("prod", url, file_repo, retention={"orphan_grace": "0s"})
    store = view(file_repo, request)
    spool = tmp_path / "spool"
    spool.mkdir()
    proc = start_drkit(
        "backup", "prod", "--jobs", "2", policy_dir=policy_dir, env={"DRKIT_TMPDIR": str(spool)}
    )
    try:
        wait_for(
            lambda: any(".dir/" in k for k in store.objects()) or proc.poll() is not None,
            120,
            "a first table object of the running backup",
        )
        assert proc.poll() is None, "the backup finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not [k for k in store.objects() if k.endswith("manifest.json")]
    listed = run_cli("backups", "prod", "--json", policy_dir=policy_dir)
    assert listed.json()["backups"] == []
    # pg_dump notices its parent is gone and stops; its files go with the next backup
    wait_for(lambda: not _pg_dump_writing_into(spool), 60, "the orphaned pg_dump to stop")
    pruned = run_cli("prune", "prod", "--json", policy_dir=policy_dir)
    assert pruned.code == 0, pruned.stderr
    assert not [k for k in store.objects() if "/backups/" in k]
    with psycopg.connect(pg_server.dsn(dbname), autocommit=True) as conn:
        conn.execute("DROP TABLE big")
    made = run_cli("backup", "prod", "--jobs", "2", policy_dir=policy_dir, env={
        "DRKIT_TMPDIR": str(spool)})  # fmt: skip
    assert made.code == 0, made.stderr
    assert list(spool.iterdir()) == []  # the killed run's spool was swept


def _pg_dump_writing_into(directory: Path) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pg_dump" in cmdline and str(directory).encode() in cmdline:
            return True
    return False


def test_drill_passes_on_a_directory_backup(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    scratch_root: Path,
) -> None:
    dbname, url = sample_db
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        objectives={"rpo": "1h", "rto": "30m"},
        drill={"checks": {"amcheck": False}},
    )
    made = run_cli("backup", "prod", "--jobs", "2", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    result = drill(run_cli, policy_dir, scratch_root, "--json")
    assert result.code == 0, result.stdout + result.stderr
    checks = checks_by_name(result.json())
    assert checks[f"restore {dbname}"]["status"] == "PASS"
    rows = {n: c["status"] for n, c in checks.items() if n.startswith(f"rows {dbname}:")}
    assert len(rows) >= 5 and set(rows.values()) == {"PASS"}, rows


def test_sanitize_from_a_directory_backup(run_cli: DrkitRunner, envs: Env, tmp_path: Path) -> None:
    made = run_cli("backup", "prod", "--jobs", "2", policy_dir=envs.policy_dir)
    assert made.code == 0, made.stderr
    rules = write_rules(tmp_path / "r.yaml", rules_doc())
    live = sanitize(run_cli, envs, "prod", "staging", "--rules", str(rules))
    assert live.code == 0, live.stderr
    doc = rules_doc()
    doc["to"] = "dev"
    dev_rules = write_rules(tmp_path / "d.yaml", doc)
    from_backup = sanitize(
        run_cli, envs, "prod", "dev", "--rules", str(dev_rules), "--from-backup", "latest"
    )
    assert from_backup.code == 0, from_backup.stderr
    assert table_dump(envs.dsn(envs.dsts["staging"])) == table_dump(envs.dsn(envs.dsts["dev"]))


def test_size_threshold_picks_the_directory_format(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_cli: DrkitRunner,
    request: pytest.FixtureRequest,
) -> None:
    dbname, url = sample_db
    store = view(file_repo, request)
    small = make_policy("prod", url, file_repo, backup={"parallel_threshold": "1TiB", "jobs": 2})
    made = run_cli("backup", "prod", "--json", policy_dir=small)
    assert made.code == 0, made.stderr
    assert manifest_of(store, made.json()["id"]).get("dump_formats", {}).get(dbname, "custom") == (
        "custom"
    )
    big = make_policy("prod", url, file_repo, backup={"parallel_threshold": "1MiB", "jobs": 2})
    made = run_cli("backup", "prod", "--json", policy_dir=big)
    assert made.code == 0, made.stderr
    assert manifest_of(store, made.json()["id"])["dump_formats"] == {dbname: "directory"}
    bad = make_policy("prod", url, file_repo, backup={"parallel_threshold": "lots"})
    refused = run_cli("backup", "prod", policy_dir=bad)
    assert refused.code == 2 and "parallel_threshold" in refused.stderr


def test_the_size_threshold_is_read_in_the_dumps_own_snapshot(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Choosing the format costs no connection of its own before the dump starts: the
    size that decides it is the one read with the snapshot (one connection per database
    besides the backup lock's).  Nor does a progress estimate nobody watches (it may wait
    for table locks): only a backup with a progress display asks for one."""
    from drkit.backup import logical
    from drkit.config import load_policy
    from drkit.progress import ignore_progress

    dbname, url = sample_db
    opened: list[str] = []
    real_connect = logical.connect

    def counted(dsn: str, database: str | None = None, **kwargs: Any) -> Any:
        opened.append(str(database))
        return real_connect(dsn, database, **kwargs)

    estimated: list[int | None] = []
    real_estimate = logical.dump_size_estimate

    def estimate(conn: Any) -> int | None:
        estimated.append(real_estimate(conn))
        return estimated[-1]

    monkeypatch.setattr(logical, "connect", counted)
    monkeypatch.setattr(logical, "dump_size_estimate", estimate)
    events: list[Any] = []
    record = events.append  # one object: compared by identity below
    for threshold, formats in (("1TiB", {}), ("1MiB", {dbname: "directory"})):
        policy_dir = make_policy(
            "prod", url, file_repo, backup={"parallel_threshold": threshold, "jobs": 2}
        )
        for progress in (None, ignore_progress, record):
            opened.clear()
            estimated.clear()
            manifest = logical.backup_logical(load_policy("prod", policy_dir), on_progress=progress)
            assert manifest.dump_formats == formats and manifest.row_counts[dbname]
            assert opened == [dbname]
            assert len(estimated) == (progress is record)
    assert events


# ---------------------------------------------------------------------------
# The pieces that decide what is stored, attacked directly
# ---------------------------------------------------------------------------


def _repo(root: Path) -> Repository:
    config = RepositoryConfig(url=f"file://{root}")
    return Repository(open_backend(config), "prod", config)


def test_a_file_still_held_open_is_never_stored(tmp_path: Path) -> None:
    spool = (tmp_path / "dump").resolve()
    spool.mkdir()
    (spool / "toc.dat").write_bytes(b"toc")
    (spool / "1.dat").write_bytes(b"done")
    # the "pg_dump" here is a shell whose child holds 2.dat open, like a worker
    parent = subprocess.Popen(
        ["sh", "-c", f"sh -c 'exec 3>>\"{spool}/2.dat\"; printf x >&3; exec sleep 60' & wait"],
        start_new_session=True,
    )
    try:
        wait_for(lambda: (spool / "2.dat").exists(), 30, "2.dat to be created")
        wait_for(
            lambda: files_held_open(parent.pid, spool) == {"2.dat"}, 30, "the child's open file"
        )
        with DumpUploader(_repo(tmp_path / "repo"), "backups/x/db.dir/", "db", 2, None) as up:
            up.offer(spool, finished_only=parent.pid)
            wait_for(lambda: sorted(os.listdir(spool)) == ["2.dat"], 30, "the finished uploads")
            assert (spool / "2.dat").read_bytes() == b"x"  # untouched, not stored
            os.killpg(parent.pid, signal.SIGKILL)  # "pg_dump" and its worker exit
            parent.wait()
            wait_for(lambda: not files_held_open(parent.pid, spool), 30, "the worker to exit")
            up.offer(spool, finished_only=None)
            objects = up.finish(spool)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    names = [o.key.rsplit("/", 1)[-1] for o in objects]
    assert names == ["toc.dat.zst", "1.dat.zst", "2.dat.zst"]  # toc.dat listed first
    assert [o.raw_size for o in objects] == [3, 4, 1]


def test_a_file_written_again_after_it_was_stored_fails_the_dump(tmp_path: Path) -> None:
    spool = (tmp_path / "dump").resolve()
    spool.mkdir()
    (spool / "toc.dat").write_bytes(b"toc")
    (spool / "1.dat").write_bytes(b"first")
    with DumpUploader(_repo(tmp_path / "repo"), "backups/x/db.dir/", "db", 1, None) as up:
        up.offer(spool, finished_only=None)
        wait_for(lambda: not (spool / "1.dat").exists(), 30, "1.dat to be stored")
        (spool / "1.dat").write_bytes(b"second")  # pg_dump came back to it
        up.offer(spool, finished_only=None)
        with pytest.raises(CheckFailed, match=r"1\.dat again after it was stored"):
            up.finish(spool)


def test_a_dump_without_its_toc_is_refused(tmp_path: Path) -> None:
    spool = (tmp_path / "dump").resolve()
    spool.mkdir()
    (spool / "1.dat").write_bytes(b"data")
    with DumpUploader(_repo(tmp_path / "repo"), "backups/x/db.dir/", "db", 1, None) as up:
        up.offer(spool, finished_only=None)
        with pytest.raises(CheckFailed, match=r"no toc\.dat"):
            up.finish(spool)


@pytest.mark.parametrize(
    "keys",
    [
        ["prod/backups/x/db.dir/toc.dat.zst", "prod/backups/x/db.dir/..zst"],
        ["prod/backups/x/db.dir/toc.dat.zst", "prod/backups/x/db.dir/.hidden.zst"],
        ["prod/backups/x/db.dump.zst"],
        ["prod/backups/x/db.dir/toc.dat.zst", "prod/backups/x/db.dir/toc.dat.zst"],
        ["prod/backups/x/db.dir/1.dat.zst"],
    ],
)
def test_a_crafted_manifest_cannot_write_outside_the_spool(tmp_path: Path, keys: list[str]) -> None:
    members = [StoredObject(k, 1, "0" * 64, 1, "zstd", database="db") for k in keys]
    target = tmp_path / "into"
    target.mkdir()
    with pytest.raises(CheckFailed):
        fetch_directory(_repo(tmp_path / "repo"), members, target)
    assert list(target.iterdir()) == []


def test_table_restore_from_a_directory_backup(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_cli: DrkitRunner,
) -> None:
    dbname, url = sample_db
    policy_dir = make_policy("prod", url, file_repo)
    made = run_cli("backup", "prod", "--jobs", "2", policy_dir=policy_dir)
    assert made.code == 0, made.stderr
    target = f"r_{uuid.uuid4().hex[:8]}"
    restored = run_cli(
        "restore", "prod", "latest", "--target-db", pg_server.url(target),
        "--database", dbname, "--table", "public.vulnerability", "--jobs", "2",
        policy_dir=policy_dir,
    )  # fmt: skip
    assert restored.code == 0, restored.stderr
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    assert pg_server.query(target, tables) == [("vulnerability",)]
    count = "SELECT count(*) FROM vulnerability"
    assert pg_server.query(target, count) == pg_server.query(dbname, count)
    pg_server.drop_database(target)
