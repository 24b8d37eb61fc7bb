"""The runtime the cluster's OS user runs drkit from when it cannot reach drkit's own
Python (drkit/walcmd.py): one per interpreter and checkout, never planted, never piling up.

Each install into site-packages used to leave a whole copy of it behind in /var/tmp
(about 110 MB), one per install, forever.  Now the runtime's name stays the same (so an
archive_command already configured keeps working), its ``site`` link moves to the new
copy, and superseded copies go once nothing can still be starting on them.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit import walcmd
from drkit.pg.cluster import cluster_os_user
from tests.wal_support import shared_dir

ROOT = Path(__file__).resolve().parents[1]


def _prepare_runtime(runtime_root: Path) -> subprocess.CompletedProcess[str]:
    code = "from drkit.walcmd import drkit_argv; print(drkit_argv('postgres'))"
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


def test_a_runtime_directory_someone_else_can_change_is_refused() -> None:
    with shared_dir("drkit-runtime-test-") as runtime_root:
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
    with shared_dir("drkit-runtime-test-") as root:
        monkeypatch.setenv(walcmd.RUNTIME_ROOT_ENV, str(root))
        walcmd._shared_runtime.cache_clear()
        yield root
        walcmd._shared_runtime.cache_clear()


def _prepare_at(monkeypatch: pytest.MonkeyPatch, state: str) -> walcmd._Runtime:
    """The runtime as it is prepared when site-packages is in ``state``."""
    monkeypatch.setattr(walcmd, "_site_state", lambda _site_packages: state)
    walcmd._shared_runtime.cache_clear()
    return walcmd._shared_runtime()


def _imports_drkit_as_the_cluster_user(runtime: walcmd._Runtime) -> bool:
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
