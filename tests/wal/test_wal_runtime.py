"""The runtime the cluster's OS user runs drkit from when it cannot reach drkit's own
Python (drkit/wal/commands.py): one per interpreter and checkout, never planted, never piling up.

Each install into site-packages used to leave a whole copy of it behind in /var/tmp
(about 110 MB), one per install, forever.  Now the runtime's name stays the same (so an
archive_command already configured keeps working), its ``site`` link moves to the new
copy, and superseded copies go once nothing can still be starting on them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit.pg import LocalCluster, cluster_os_user, run_as
from drkit.storage import Repository
from drkit.wal import commands as walcmd
from drkit.wal import find_wal_key, load_wal_policy, prepare_file_repository
from tests.fix_cli import DrkitRunner
from tests.wal_support import (
    Archived,
    archived_cluster,
    file_repo_block,
    restored_dsn,
    shared_dir,
)

ROOT = Path(__file__).resolve().parents[2]


def _prepare_runtime(runtime_root: Path) -> subprocess.CompletedProcess[str]:
    code = "from drkit.wal import drkit_argv; print(drkit_argv('postgres'))"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, DRKIT_RUNTIME_DIR=str(runtime_root), PYTHONPATH=str(ROOT)),
        timeout=600,
        check=False,
    )


def _runtimes(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name.startswith("drkit-runtime-")]


@contextlib.contextmanager
def root_owned_dir() -> Iterator[Path]:
    """A runtime root only root can write, along its whole path (pytest's and /tmp's
    directories are writable by others, which the runtime refuses)."""
    path = Path(tempfile.mkdtemp(prefix="drkit-test-runtime-", dir="/var/lib"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_runtime_directory_someone_else_can_change_is_refused() -> None:
    with root_owned_dir() as runtime_root:
        first = _prepare_runtime(runtime_root)
        assert first.returncode == 0, first.stderr
        (target,) = _runtimes(runtime_root)
        nobody = pwd.getpwnam("nobody")

        # group/world writable: anyone could swap the code PostgreSQL runs
        os.chmod(target / "src", 0o777)  # noqa: S103 - the planted hole under test
        refused = _prepare_runtime(runtime_root)
        assert refused.returncode != 0
        assert "refusing the drkit runtime" in refused.stderr and "writable" in refused.stderr
        os.chmod(target / "src", 0o755)  # noqa: S103 - back to what drkit makes
        assert _prepare_runtime(runtime_root).returncode == 0

        # the site link turned towards packages of someone else's choosing
        copy = os.readlink(target / "site")
        os.unlink(target / "site")
        os.symlink("/tmp", target / "site")
        refused = _prepare_runtime(runtime_root)
        assert refused.returncode != 0
        assert "refusing the drkit runtime" in refused.stderr and "links to" in refused.stderr
        os.unlink(target / "site")
        os.symlink(copy, target / "site")
        assert _prepare_runtime(runtime_root).returncode == 0

        # owned by another user (planted under the predictable name)
        os.chown(target, nobody.pw_uid, nobody.pw_gid)
        refused = _prepare_runtime(runtime_root)
        assert refused.returncode != 0
        assert "refusing the drkit runtime" in refused.stderr and "owned by" in refused.stderr


@pytest.fixture
def runtime_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty runtime root for in-process preparations, with the cache cleared."""
    with root_owned_dir() as root:
        monkeypatch.setenv(walcmd.RUNTIME_ROOT_ENV, str(root))
        walcmd.shared_runtime.cache_clear()
        yield root
        walcmd.shared_runtime.cache_clear()


def _prepare_at(monkeypatch: pytest.MonkeyPatch, state: str) -> walcmd.Runtime:
    """The runtime as it is prepared when site-packages is in ``state``."""
    monkeypatch.setattr(walcmd, "_site_state", lambda _site_packages: state)
    walcmd.shared_runtime.cache_clear()
    return walcmd.shared_runtime()


def _imports_drkit_as_the_cluster_user(runtime: walcmd.Runtime) -> bool:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(map(str, runtime.pythonpath)),
        PYTHONNOUSERSITE="1",
    )
    proc = subprocess.run(
        [runtime.python, "-c", "import boto3, zstandard, drkit.wal"],
        user=cluster_os_user(),
        env=env,
        cwd="/",
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode == 0


def test_an_install_moves_the_runtime_to_a_new_copy_and_the_old_one_goes(
    runtime_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _prepare_at(monkeypatch, "a" * 16)
    assert _imports_drkit_as_the_cluster_user(before)
    (target,) = _runtimes(runtime_root)

    # an install into site-packages: same runtime, same paths (a configured
    # archive_command stays valid), the link now on a new copy
    after = _prepare_at(monkeypatch, "b" * 16)
    assert _runtimes(runtime_root) == [target]
    assert after.pythonpath == before.pythonpath
    assert os.readlink(target / "site") == "site-" + "b" * 16
    assert _imports_drkit_as_the_cluster_user(after)

    # a process that started on the old copy a moment ago may still import from it
    assert (target / ("site-" + "a" * 16)).is_dir()

    # once the swap is older than the grace period, the old copy is removed
    swapped = time.time() - walcmd.SITE_GRACE_SECONDS - 1
    os.utime(target / "site", (swapped, swapped), follow_symlinks=False)
    _prepare_at(monkeypatch, "b" * 16)
    copies = sorted(p.name for p in target.iterdir() if p.name != "src")
    assert copies == ["site", "site-" + "b" * 16]
    assert _imports_drkit_as_the_cluster_user(after)


def test_a_copy_cut_short_is_never_linked_and_is_cleared_later(
    runtime_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepare_at(monkeypatch, "a" * 16)
    (target,) = _runtimes(runtime_root)

    def full_disk(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("shutil.copy2", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _prepare_at(monkeypatch, "c" * 16)
    monkeypatch.undo()
    monkeypatch.setenv(walcmd.RUNTIME_ROOT_ENV, str(runtime_root))
    # the link still names the complete copy, and nothing half-built is left
    assert os.readlink(target / "site") == "site-" + "a" * 16
    assert not (target / ("site-" + "c" * 16)).exists()
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------------------
# Trusted at use time: the command line PostgreSQL runs checks the runtime itself
# ---------------------------------------------------------------------------


@pytest.fixture
def trusted_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh runtime root the next archive_command/restore_command is built on."""
    with root_owned_dir() as root:
        monkeypatch.setenv(walcmd.RUNTIME_ROOT_ENV, str(root))
        walcmd.shared_runtime.cache_clear()
        walcmd._python_for.cache_clear()
        yield root
        walcmd.shared_runtime.cache_clear()
        walcmd._python_for.cache_clear()


def _archiver(arch: Archived) -> tuple[int, int, str | None]:
    rows = arch.execute(
        "SELECT archived_count, failed_count, last_failed_wal FROM pg_stat_archiver"
    )
    archived, failed, last_failed = rows[0]
    return int(archived), int(failed), last_failed


def test_a_runtime_another_user_re_created_is_never_run(trusted_root: Path) -> None:
    """The runtime disappears (an admin cleans up) from a directory anyone can write to,
    as /var/tmp is; ``nobody`` re-creates it with code that "archives" by exiting 0.
    PostgreSQL's next archive_command must fail loudly and run none of it."""
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        wal_dir = root / "repo" / "prod" / "wal"

        def stored(name: str) -> bool:
            return wal_dir.is_dir() and any(p.name.startswith(name) for p in wal_dir.iterdir())

        arch.switch_and_wait(stored)  # the runtime drkit prepared archives
        (target,) = _runtimes(trusted_root)
        shutil.rmtree(target)
        os.chmod(trusted_root, 0o1777)  # noqa: S103 - a /var/tmp-like directory under test
        ran = trusted_root / "planted-code-ran"
        plant = (
            f"mkdir -p {target}/src/drkit {target}/site && touch {target}/src/drkit/__init__.py"
            f' && echo \'open("{ran}", "w"); raise SystemExit(0)\''
            f" > {target}/src/drkit/__main__.py"
        )
        run_as(["sh", "-c", plant], "nobody", timeout=30)
        assert os.stat(target).st_uid == pwd.getpwnam("nobody").pw_uid
        try:
            archived, failed, _ = _archiver(arch)
            arch.execute("SELECT txid_current()")  # something to switch away from
            rows = arch.execute(
                "SELECT pg_walfile_name(pg_current_wal_insert_lsn()), pg_switch_wal()"
            )
            name = str(rows[0][0])
            deadline = time.monotonic() + 60
            while _archiver(arch)[:2] == (archived, failed):  # until PostgreSQL ran it
                assert time.monotonic() < deadline, "PostgreSQL never ran archive_command"
                time.sleep(0.2)
            assert not ran.exists()  # the planted code never ran
            now_archived, _, last_failed = _archiver(arch)
            assert now_archived == archived and last_failed == name
            assert not stored(name)
            assert (arch.cluster.data_dir / "pg_wal" / "archive_status" / f"{name}.ready").exists()
            log = arch.cluster.log_file.read_text()
            assert f"untrusted drkit runtime {target}" in log
        finally:
            os.chmod(trusted_root, 0o755)  # noqa: S103 - back to root-only


def test_the_command_line_refuses_a_runtime_others_can_write(trusted_root: Path) -> None:
    """Run as PostgreSQL would (the cluster's OS user, its own environment): a runtime
    directory made group-writable, or a ``site`` turned towards someone else's
    packages, is refused with one line naming the path, before any of it is imported."""
    user = cluster_os_user()
    assert user is not None, "these tests run as root"
    with shared_dir() as root:
        policy_dir = root / "policies"
        policy_dir.mkdir()
        line = walcmd.archive_command("prod", policy_dir, user)
        (target,) = _runtimes(trusted_root)

        def run() -> subprocess.CompletedProcess[str]:
            return run_as(
                ["sh", "-c", line.replace("%p", "pg_wal/000000010000000000000001")],
                user,
                env={"PATH": "/usr/bin:/bin"},
                check=False,
                timeout=60,
            )

        healthy = run()  # no such policy: drkit itself ran and said so
        assert healthy.returncode != 0 and "untrusted" not in healthy.stderr
        assert "drkit: error:" in healthy.stderr

        os.chmod(target / "src", 0o775)  # noqa: S103 - the hole under test
        refused = run()
        assert refused.returncode == 1
        assert refused.stderr.strip() == refused.stderr.strip().splitlines()[0]
        assert f"untrusted drkit runtime {target}: {target}/src is writable" in refused.stderr
        os.chmod(target / "src", 0o755)  # noqa: S103 - back to what drkit makes

        elsewhere = root / "site"
        elsewhere.mkdir()
        os.chown(elsewhere, pwd.getpwnam("nobody").pw_uid, -1)
        copy = os.readlink(target / "site")
        os.unlink(target / "site")
        os.symlink(elsewhere, target / "site")
        refused = run()
        assert refused.returncode == 1
        assert f"{elsewhere} is owned by uid" in refused.stderr
        os.unlink(target / "site")
        os.symlink(copy, target / "site")
        assert "untrusted" not in run().stderr


def test_a_percent_in_the_policy_directory_reaches_drkit_intact(run_drkit: DrkitRunner) -> None:
    """PostgreSQL expands %p, %f, %r and %% in archive_command and restore_command: a
    policy directory named with them must reach drkit as it is, through both lines, as
    PostgreSQL runs them (archiving, then a point-in-time recovery replaying from the
    archive)."""
    user = cluster_os_user()
    with shared_dir() as root:
        block = file_repo_block(root)
        policy_dir = root / "pol%p%f%r%%icies"
        policy_dir.mkdir()
        prepare_file_repository(str(block["url"]), "prod", user)
        cluster = LocalCluster.create(
            root / "pg",
            settings={
                "archive_mode": "on",
                "archive_command": walcmd.archive_command("prod", policy_dir, user),
                "max_wal_size": "256MB",
            },
            fast=True,
        )
        arch = Archived(root, cluster, policy_dir, block)
        try:
            arch.write_policy(cluster.dsn())
            repo = Repository.for_policy(load_wal_policy("prod", policy_dir))

            def stored(name: str) -> bool:
                return find_wal_key(repo, name) is not None

            arch.execute("CREATE TABLE marker (label text)")
            backup = run_drkit("backup", "prod", "--physical", policy_dir=policy_dir)
            assert backup.code == 0, backup.stderr
            arch.execute("INSERT INTO marker VALUES ('after the backup')")
            arch.switch_and_wait(stored)  # archive_command, as PostgreSQL runs it

            pgdata = arch.new_pgdata()
            restored = run_drkit(
                "restore",
                "prod",
                "--point-in-time",
                "latest",
                "--pgdata",
                str(pgdata),
                "--json",
                policy_dir=policy_dir,
                timeout=600,
            )
            assert restored.code == 0, restored.stderr
            conf = (pgdata / "postgresql.auto.conf").read_text()
            assert "pol%%p%%f%%r%%%%icies" in conf  # escaped in restore_command
            port = restored.json()["port"]
            rows = arch.execute("SELECT label FROM marker", restored_dsn(arch, port))
            assert rows == [("after the backup",)]  # replayed through restore_command
        finally:
            arch.stop_restored()
            cluster.destroy()
