"""The smaller holes of issue 11: relative file:// URLs, directory fsyncs, the shared
runtime directory, lookups by name, checksums of uncompressed objects."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit.errors import ObjectExists
from drkit.storage.file import FileBackend, rename_noreplace
from tests.builders import pg_wal_dir, wal_file, write_policy
from tests.fix_cli import DrkitRunner
from tests.fix_s3 import S3Server
from tests.reliability.faultproxy import FaultProxy
from tests.wal_support import file_repo_block, shared_dir

SEG = 16 * 1024 * 1024


def _policy(directory: Path, block: dict[str, str]) -> Path:
    return write_policy(directory, "prod", "postgresql://drkit@127.0.0.1/app", block)


# ---------------------------------------------------------------------------
# relative file:// urls
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file://relative/dir", "file://repo", "file://./repo"])
def test_relative_file_url_is_refused_with_exit_2(tmp_path: Path, url: str) -> None:
    """archive_command runs in the data directory: a relative repository would put the
    WAL archive inside it."""
    policy_dir = _policy(tmp_path / "policies", {"url": url})
    pgdata = tmp_path / "pgdata"
    wal_file(pg_wal_dir(pgdata), "000000010000000000000001", b"\0" * SEG, ready=False)
    before = sorted(p.relative_to(pgdata) for p in pgdata.rglob("*"))
    for args in (
        ["wal-push", "prod", "pg_wal/000000010000000000000001"],
        ["wal-push", "prod", "pg_wal/000000010000000000000001", "--json"],  # the full CLI
        ["wal-fetch", "prod", "000000010000000000000001", "pg_wal/RECOVERYXLOG"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args],
            cwd=pgdata,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
            check=False,
        )
        expected = 1 if args[0] == "wal-fetch" else 2  # wal-fetch: 1 for any failure
        assert proc.returncode == expected, (args, proc.stderr)
        assert "repository.url" in proc.stderr and "absolute" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.relative_to(pgdata) for p in pgdata.rglob("*")) == before


def test_relative_file_url_is_refused_by_check_policy(
    tmp_path: Path, run_drkit: DrkitRunner
) -> None:
    policy_dir = _policy(tmp_path / "policies", {"url": "file://relative/dir"})
    result = run_drkit("status", "prod", policy_dir=policy_dir)
    assert result.code == 2, result.stderr
    assert "repository.url" in result.stderr


# ---------------------------------------------------------------------------
# file:// durability and no-replace
# ---------------------------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths fsync() is called on (the real fsync still runs)."""
    calls: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    yield calls


def test_file_put_fsyncs_new_directories_and_the_renamed_into_directory(
    tmp_path: Path, fsynced: list[str]
) -> None:
    backend = FileBackend(tmp_path / "repo")
    (tmp_path / "repo").mkdir()
    backend.put_stream("prod/backups/20260101T000000Z/app.dump", io.BytesIO(b"data"))
    root = tmp_path / "repo"
    for directory in (root, root / "prod", root / "prod" / "backups"):
        assert str(directory) in fsynced, (directory, fsynced)  # a new entry in it
    assert str(root / "prod" / "backups" / "20260101T000000Z") in fsynced  # the rename
    fsynced.clear()
    backend.put_stream_new("prod/wal/000000010000000000000001", io.BytesIO(b"w"))
    assert str(root / "prod" / "wal") in fsynced and str(root / "prod") in fsynced


def test_file_put_new_never_replaces(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.put_stream_new("prod/wal/a", io.BytesIO(b"first"))
    with pytest.raises(ObjectExists):
        backend.put_stream_new("prod/wal/a", io.BytesIO(b"second"))
    assert backend.get_bytes("prod/wal/a") == b"first"
    assert [p.name for p in (tmp_path / "prod" / "wal").iterdir()] == ["a"]  # no temp left


def test_rename_noreplace_refuses_an_existing_name(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        rename_noreplace(src, dst)
    assert dst.read_bytes() == b"old" and src.exists()
    dst.unlink()
    rename_noreplace(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()


# ---------------------------------------------------------------------------
# segments are looked up by name
# ---------------------------------------------------------------------------


def test_file_push_and_fetch_never_list_the_wal_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from drkit.storage import Repository
    from drkit.wal import download, load_wal_policy, push_file

    with shared_dir() as root:
        policy_dir = _policy(root / "policies", file_repo_block(root))
        repo = Repository.for_policy(load_wal_policy("prod", policy_dir))
        pg_wal = root / "pgdata" / "pg_wal"
        pg_wal.mkdir(parents=True)
        for n in range(1, 4):
            (pg_wal / f"00000001000000000000000{n}").write_bytes(os.urandom(1024) * 1024)
        listed: list[str] = []
        real_list = FileBackend.list

        def recording(self: FileBackend, prefix: str) -> list[object]:
            listed.append(prefix)
            return real_list(self, prefix)  # type: ignore[return-value]

        monkeypatch.setattr(FileBackend, "list", recording)
        for n in range(1, 4):
            assert push_file(repo, pg_wal / f"00000001000000000000000{n}").status == "stored"
        assert push_file(repo, pg_wal / "000000010000000000000001").status == "exists"
        assert download(repo, "000000010000000000000002", root / "out")
        assert not download(repo, "000000010000000000000009", root / "out2")
        assert listed == []


def test_s3_push_lists_only_the_segments_own_name(
    s3_server: S3Server, run_drkit: DrkitRunner
) -> None:
    with shared_dir() as root:
        proxy = FaultProxy(s3_server.endpoint).start()
        try:
            block = {
                "url": f"s3://{s3_server.create_bucket()}/drkit",
                "endpoint_url": proxy.endpoint,
                "region": "us-east-1",
            }
            policy_dir = _policy(root / "policies", block)
            pg_wal = pg_wal_dir(root / "pgdata")
            name = "000000010000000000000001"
            (pg_wal / name).write_bytes(os.urandom(1024) * 1024 * 16)
            pushed = run_drkit("wal-push", "prod", str(pg_wal / name), policy_dir=policy_dir)
            assert pushed.code == 0, pushed.stderr
        finally:
            proxy.stop()
        listings = [path for method, path, _ in proxy.log if method == "GET" and "prefix=" in path]
        assert all(f"wal%2F{name}" in p or f"wal/{name}" in p for p in listings), listings


# ---------------------------------------------------------------------------
# uncompressed WAL objects carry a checksum
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_corrupt_uncompressed_wal_is_detected_on_fetch(
    request: pytest.FixtureRequest, run_drkit: DrkitRunner, backend: str
) -> None:
    """compression: none has no frame checksum: a flipped byte in the stored segment must
    still fail wal-fetch (exit 1, nothing written) instead of feeding replay bad WAL."""
    from drkit.storage import Repository
    from drkit.wal import find_wal_key, load_wal_policy

    with shared_dir() as root:
        if backend == "file":
            block: dict[str, object] = file_repo_block(root)
        else:
            s3: S3Server = request.getfixturevalue("s3_server")
            block = {
                "url": f"s3://{s3.create_bucket()}/drkit",
                "endpoint_url": s3.endpoint,
                "region": "us-east-1",
            }
        block["compression"] = {"algorithm": "none"}
        policy_dir = _policy(root / "policies", block)  # type: ignore[arg-type]
        pg_wal = pg_wal_dir(root / "pgdata")
        name = "000000010000000000000001"
        data = os.urandom(SEG)
        (pg_wal / name).write_bytes(data)
        assert run_drkit("wal-push", "prod", str(pg_wal / name), policy_dir=policy_dir).code == 0
        repo = Repository.for_policy(load_wal_policy("prod", policy_dir))
        key = find_wal_key(repo, name)
        assert key is not None and key.endswith(f"wal/{name}")  # stored as is

        dest = pg_wal / "RECOVERYXLOG"
        good = run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=policy_dir)
        assert good.code == 0, good.stderr
        assert dest.read_bytes() == data
        dest.unlink()

        damaged = bytearray(data)
        damaged[SEG // 2] ^= 0x01
        if backend == "file":
            with open(Path(str(block["url"]).removeprefix("file://")) / key, "r+b") as f:
                f.write(bytes(damaged))  # in place: bit rot, not a new object
        else:
            client = s3_server_client(request)
            bucket = str(block["url"]).removeprefix("s3://").split("/", 1)[0]
            full = f"drkit/{key}"
            meta = client.head_object(Bucket=bucket, Key=full)["Metadata"]
            client.put_object(Bucket=bucket, Key=full, Body=bytes(damaged), Metadata=meta)
        bad = run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=policy_dir)
        assert bad.code == 1, bad.stderr
        assert "sha256" in bad.stderr and name in bad.stderr, bad.stderr
        assert not dest.exists()


def s3_server_client(request: pytest.FixtureRequest) -> object:
    s3: S3Server = request.getfixturevalue("s3_server")
    return s3.client()


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_a_copy_that_drops_attributes_still_checks_uncompressed_wal(
    request: pytest.FixtureRequest, run_drkit: DrkitRunner, backend: str
) -> None:
    """The sha256 of a WAL object stored as is lives in the repository, in a checksum file
    beside it: a copy keeping neither extended attributes (``cp -r``) nor S3 user metadata
    (a sync tool) still refuses a flipped byte.  On 8f47402 it served the damaged bytes."""
    from drkit.storage import Repository
    from drkit.wal import find_wal_key, load_wal_policy

    with shared_dir() as root:
        s3: S3Server | None = None
        if backend == "file":
            block: dict[str, object] = file_repo_block(root)
        else:
            s3 = request.getfixturevalue("s3_server")
            block = {
                "url": f"s3://{s3.create_bucket()}/drkit",
                "endpoint_url": s3.endpoint,
                "region": "us-east-1",
            }
        block["compression"] = {"algorithm": "none"}
        policy_dir = _policy(root / "policies", block)  # type: ignore[arg-type]
        pg_wal = pg_wal_dir(root / "pgdata")
        name = "000000010000000000000001"
        data = os.urandom(SEG)
        (pg_wal / name).write_bytes(data)
        assert run_drkit("wal-push", "prod", str(pg_wal / name), policy_dir=policy_dir).code == 0

        copy_block = dict(block)
        if s3 is None:
            source = Path(str(block["url"]).removeprefix("file://"))
            subprocess.run(["cp", "-r", str(source), str(root / "copy")], check=True)
            copy_block["url"] = f"file://{root / 'copy'}"
        else:
            client = s3.client()
            bucket = str(block["url"]).removeprefix("s3://").split("/", 1)[0]
            copy_bucket = s3.create_bucket()
            for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                client.put_object(Bucket=copy_bucket, Key=item["Key"], Body=body)  # no metadata
            copy_block["url"] = f"s3://{copy_bucket}/drkit"
        copy_dir = _policy(root / "policies-copy", copy_block)  # type: ignore[arg-type]
        repo = Repository.for_policy(load_wal_policy("prod", copy_dir))
        key = find_wal_key(repo, name)
        assert key is not None and repo.backend.stored_sha256(key) is None  # lost on the way
        assert repo.backend.get_bytes(f"{key}.sha256").split()[1] == name.encode()

        dest = pg_wal / "RECOVERYXLOG"
        good = run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=copy_dir)
        assert good.code == 0, good.stderr
        assert dest.read_bytes() == data
        dest.unlink()
        damaged = bytearray(data)
        damaged[SEG // 3] ^= 0x01
        repo.backend.put_bytes(key, bytes(damaged))
        bad = run_drkit(
            "wal-fetch",
            "prod",
            name,
            str(dest),
            policy_dir=copy_dir,
            env={"DRKIT_WAL_FETCH_ATTEMPTS": "1"},
        )
        assert bad.code == 1, bad.stderr
        assert "sha256" in bad.stderr and name in bad.stderr, bad.stderr
        assert not dest.exists()
