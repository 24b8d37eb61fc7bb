"""root never writes through a data directory someone else controls.

An unprivileged user planted an empty directory, gave it as ``--pgdata`` (or waited for
root to), and dropped a symlink into it while drkit unpacked a base backup: root then
truncated a root-only file.  Now a ``--pgdata`` owned by anyone but root or the
cluster's OS user, or below a directory someone else can change, is refused (exit 4);
drkit keeps the directory its own while it fills it, and its extraction never writes
through a name it did not create.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import subprocess
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drkit.backup.unpack import unpack_base
from drkit.catalog import Manifest
from drkit.config import RepositoryConfig
from drkit.errors import SafetyRefused
from drkit.pg import Owner, claim_data_directory, cluster_os_user
from drkit.storage import Repository, open_backend
from tests.builders import build_manifest
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget
from tests.wal_support import shared_dir

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0:
        pytest.fail("these tests check what root does: run the suite as root (as CI does)")
    with shared_dir("drkit-pgdata-test-") as path:
        yield path


def refused(result: object) -> str:
    code, stderr = result.code, result.stderr  # type: ignore[attr-defined]
    assert code == 4, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_pgdata_someone_else_controls_is_refused(
    root: Path, make_policy: PolicyWriter, run_drkit: DrkitRunner, file_repo: RepoTarget
) -> None:
    policy_dir = make_policy("prod", "postgresql:///unused", file_repo)

    def restore(pgdata: Path) -> object:
        return run_drkit(
            "restore", "prod", "--point-in-time", "latest", "--pgdata", str(pgdata),
            policy_dir=policy_dir,
        )  # fmt: skip

    # an empty directory planted by an unprivileged user
    planted = root / "planted"
    planted.mkdir()
    os.chown(planted, NOBODY.pw_uid, NOBODY.pw_gid)
    line = refused(restore(planted))
    assert str(planted) in line and "owned by nobody" in line

    # a new directory below one that user owns: they could swap it while drkit writes
    theirs = root / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    assert "owned by nobody" in refused(restore(theirs / "pgdata"))
    assert not (theirs / "pgdata").exists()

    # below a directory anyone may write (not sticky, unlike /tmp)
    open_to_all = root / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)  # the hole under test
    assert "writable by others" in refused(restore(open_to_all / "pgdata"))

    # a link someone else owns on the way
    link = root / "link"
    os.symlink(root, link)
    os.lchown(link, NOBODY.pw_uid, NOBODY.pw_gid)
    assert "owned by nobody" in refused(restore(link / "pgdata"))


def _repository(root: Path) -> Repository:
    repo_root = root / "repo"
    repo_root.mkdir()
    config = RepositoryConfig(url=f"file://{repo_root}", compression={"algorithm": "none"})
    return Repository(open_backend(config), "prod", config)


def _backup(repo: Repository, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Manifest:
    """A physical backup whose base.tar holds ``members`` (infos, or name and content)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size, info.mode = len(member[1]), 0o600
                tar.addfile(info, io.BytesIO(member[1]))
    data.seek(0)
    obj = repo.store("backups/x-physical/base.tar", data)
    now = datetime.now(UTC)
    return build_manifest(
        "physical",
        backup_id="x-physical",
        at=now,
        databases=[],
        server_version="15.0",
        objects=[obj],
    )


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_the_extraction_never_writes_outside_the_data_directory(root: Path) -> None:
    repo = _repository(root)
    outside = root / "outside"
    outside.mkdir()
    secret = outside / "root-only"
    secret.write_text("keep me\n")
    secret.chmod(0o600)
    hostile = {
        "a link, then a file through it": [
            _link("global", str(outside)),
            ("global/root-only", b"owned\n"),
        ],
        "a relative link out, then a file through it": [
            _link("up", "../outside"),
            ("up/root-only", b"owned\n"),
        ],
        "a name with ..": [("../outside/root-only", b"owned\n")],
        "an absolute name": [(str(secret), b"owned\n")],
    }
    for number, (case, members) in enumerate(hostile.items()):
        pgdata = root / f"pgdata{number}"
        with pytest.raises(SafetyRefused):
            unpack_base(repo, _backup(repo, members), pgdata, None)
        assert secret.read_text() == "keep me\n", case
        assert sorted(p.name for p in outside.iterdir()) == ["root-only"], case
        repo.backend.delete("prod/backups/x-physical/base.tar")


def test_a_link_planted_while_the_backup_unpacks_is_never_followed(root: Path) -> None:
    """What a user able to write into the directory would do mid-unpack: a link where a
    later member lands.  (drkit keeps the directory root's alone while it fills it, so
    here root plants it, from inside the stream, just before that member is written.)"""
    repo = _repository(root)
    outside = root / "outside"
    outside.mkdir()
    secret = outside / "root-only"
    secret.write_text("keep me\n")
    pgdata = root / "pgdata"
    # a first member large enough to be read in several pieces, while it is written
    big = os.urandom(3 * 1024 * 1024)
    manifest = _backup(repo, [("base/1/1259", big), ("postgresql.auto.conf", b"x = 1\n")])
    real_open = repo.open_decoded

    class Planting:
        def __init__(self, stream: io.BufferedIOBase) -> None:
            self.stream = stream

        def read(self, size: int = -1) -> bytes:
            target = pgdata / "postgresql.auto.conf"
            if (pgdata / "base").exists() and not os.path.lexists(target):
                os.symlink(secret, target)
            return self.stream.read(size)

    @contextlib.contextmanager
    def open_decoded(obj: object) -> Iterator[Planting]:
        with real_open(obj) as stream:  # type: ignore[arg-type]
            yield Planting(stream)  # type: ignore[arg-type]

    repo.open_decoded = open_decoded  # type: ignore[method-assign,assignment]
    with pytest.raises(SafetyRefused, match=r"postgresql\.auto\.conf"):
        unpack_base(repo, manifest, pgdata, None)
    assert secret.read_text() == "keep me\n"


def test_while_drkit_fills_a_data_directory_nobody_else_can_enter_it(root: Path) -> None:
    """Even the cluster's OS user, whose directory it may be, until drkit hands it over."""
    user = cluster_os_user()
    assert user is not None
    entry = pwd.getpwnam(user)
    pgdata = root / "pgdata"
    pgdata.mkdir()
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    fd, created = claim_data_directory(pgdata, Owner.cluster(user))
    try:
        assert not created
        plant = subprocess.run(
            ["ln", "-s", "/etc/passwd", str(pgdata / "recovery.signal")],
            user=user, capture_output=True, check=False,
        )  # fmt: skip
        assert plant.returncode != 0 and not os.path.lexists(pgdata / "recovery.signal")
    finally:
        os.close(fd)


def test_a_damaged_base_backup_is_refused_after_decoding_ahead(root: Path) -> None:
    """The stored bytes are decoded by a thread ahead of the extraction; their sha256,
    checked at the end, still fails the unpack (exit 3), whatever was written."""
    from drkit.errors import CheckFailed

    repo = _repository(root)
    manifest = _backup(repo, [("PG_VERSION", b"15\n"), ("base/1/1259", os.urandom(300_000))])
    stored = root / "repo" / manifest.objects[0].key
    data = bytearray(stored.read_bytes())
    data[2048] ^= 0x01  # inside the second member's bytes: a valid tar, wrong content
    stored.write_bytes(bytes(data))
    with pytest.raises(CheckFailed, match="sha256"):
        unpack_base(repo, manifest, root / "pgdata", None)


def test_a_drill_refuses_a_scratch_root_someone_else_owns(
    root: Path,
    database: tuple[str, str],
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    file_repo: RepoTarget,
) -> None:
    """The drill's scratch cluster is made below ``DRKIT_TMPDIR``: one another user owns
    is refused before anything is made there."""
    _name, url = database
    policy_dir = make_policy("prod", url, file_repo)
    assert run_drkit("backup", "prod", policy_dir=policy_dir).code == 0
    theirs = root / "scratch"
    theirs.mkdir()
    os.chown(theirs, NOBODY.pw_uid, NOBODY.pw_gid)
    line = refused(
        run_drkit("drill", "prod", policy_dir=policy_dir, env={"DRKIT_TMPDIR": str(theirs)})
    )
    assert "scratch directory" in line and "owned by nobody" in line
    assert list(theirs.iterdir()) == []


def test_drkit_not_root_refuses_a_data_directory_it_cannot_make_its_own(root: Path) -> None:
    """Run as the cluster's OS user, drkit cannot take a root-owned directory for its
    own: one line saying so, not a PermissionError."""
    from tests.wal_support import cluster_user_python

    pgdata = root / "roots"
    pgdata.mkdir()
    pgdata.chmod(0o777)  # the user could write into it, but never own it
    python, prelude = cluster_user_python("postgres")
    code = prelude + (
        "import sys; from pathlib import Path; from drkit.errors import SafetyRefused\n"
        "from drkit.pg import Owner, claim_data_directory\n"
        "try: claim_data_directory(Path(sys.argv[1]), Owner.cluster(None))\n"
        "except SafetyRefused as exc: print(exc)\n"
    )
    done = subprocess.run(
        [*python, "-c", code, str(pgdata)],
        user="postgres", cwd="/",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "belongs to root" in done.stdout and "runs as postgres" in done.stdout, done.stdout
