"""``drkit wal-push`` / ``drkit wal-fetch``: exit codes and bytes, on file:// and S3.

No PostgreSQL here: a ``pg_wal`` directory with ``archive_status`` is laid out the way
the archiver leaves it, and the real CLI is run on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drkit.config import load_policy
from drkit.storage import Repository
from drkit.wal import find_wal_key, prefetch_into
from tests.builders import pg_wal_dir, wal_file, write_policy
from tests.fix_cli import DrkitRunner
from tests.fix_s3 import S3Server
from tests.reliability.faultproxy import Fault, FaultProxy
from tests.wal_support import file_repo_block, shared_dir

SEG = 16 * 1024 * 1024


def segment_bytes(seed: int) -> bytes:
    """16 MB that compress somewhat, like WAL: a random block repeated with a counter."""
    block = os.urandom(64 * 1024)
    return b"".join(block[:-8] + (seed * 1000 + i).to_bytes(8, "big") for i in range(256))


class Layout:
    def __init__(self, root: Path, block: dict[str, str]) -> None:
        self.root = root
        self.block = block
        self.pg_wal = pg_wal_dir(root / "pgdata")
        self.policy_dir = write_policy(root / "policies", repository=block)

    def control_file(self, system_identifier: int) -> None:
        """A ``global/pg_control`` beside pg_wal, as in a data directory: the cluster's
        system identifier first, then the sizes drkit reads (16 MB segments)."""
        data = bytearray(8192)
        data[:8] = system_identifier.to_bytes(8, sys.byteorder)
        data[256:264] = struct.pack("=d", 1234567.0)
        data[264:280] = struct.pack("=IIII", 8192, 131072, 8192, SEG)
        (self.pg_wal.parent / "global").mkdir(exist_ok=True)
        (self.pg_wal.parent / "global" / "pg_control").write_bytes(bytes(data))

    def segment(self, name: str, data: bytes, ready: bool = True) -> Path:
        return wal_file(self.pg_wal, name, data, ready=ready)

    def repo(self) -> Repository:
        from drkit.wal import load_wal_policy

        return Repository.for_policy(load_wal_policy("prod", self.policy_dir))


@pytest.fixture(params=["file", "s3"])
def layout(request: pytest.FixtureRequest) -> Iterator[Layout]:
    with shared_dir() as root:
        if request.param == "file":
            block = file_repo_block(root)
        else:
            block = s3_block(request.getfixturevalue("s3_server"))
        yield Layout(root, block)


def s3_block(s3: S3Server) -> dict[str, str]:
    """A fresh bucket as a policy's ``repository`` section."""
    return {
        "url": f"s3://{s3.create_bucket()}/drkit",
        "endpoint_url": s3.endpoint,
        "region": "us-east-1",
    }


@contextlib.contextmanager
def s3_wal_layout(s3: S3Server) -> Iterator[tuple[Layout, Repository]]:
    """A pg_wal layout archiving into a fresh bucket, and the repository WAL goes to."""
    from drkit.wal import load_wal_policy

    with shared_dir() as root:
        layout = Layout(root, s3_block(s3))
        yield layout, Repository.for_wal(load_wal_policy("prod", layout.policy_dir))


def test_push_fetch_round_trip_and_duplicates(layout: Layout, run_drkit: DrkitRunner) -> None:
    name = "000000010000000000000007"
    original = segment_bytes(7)
    path = layout.segment(name, original)
    os.environ.pop("PROD_DATABASE_URL", None)

    pushed = run_drkit("wal-push", "prod", str(path), "--json", policy_dir=layout.policy_dir)
    assert pushed.code == 0, pushed.stderr
    assert pushed.json()["status"] == "stored"
    repo = layout.repo()
    key = find_wal_key(repo, name)
    assert key is not None and key.endswith(f"wal/{name}.zst")
    stored = repo.backend.get_bytes(key)
    assert 0 < len(stored) < SEG  # compressed

    # the same bytes again: success, nothing rewritten
    again = run_drkit("wal-push", "prod", str(path), "--json", policy_dir=layout.policy_dir)
    assert again.code == 0, again.stderr
    assert again.json()["status"] == "exists"

    # different bytes under the same name: exit 1, the archive keeps the first copy
    path.write_bytes(segment_bytes(8))
    clash = run_drkit("wal-push", "prod", str(path), policy_dir=layout.policy_dir)
    assert clash.code == 1
    assert "two clusters" in clash.stderr.lower()
    assert repo.backend.get_bytes(key) == stored

    # fetch writes exactly the original bytes, through a temp file + rename
    dest = layout.pg_wal / "RECOVERYXLOG"
    fetched = run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=layout.policy_dir)
    assert fetched.code == 0, fetched.stderr
    assert dest.read_bytes() == original
    assert not [p for p in layout.pg_wal.iterdir() if ".drkit-" in p.name and p.is_file()]

    # a missing segment or history file: exit 1, nothing written, no traceback
    for missing in ("000000010000000000000099", "00000009.history"):
        target = layout.pg_wal / "RECOVERYHISTORY"
        result = run_drkit("wal-fetch", "prod", missing, str(target), policy_dir=layout.policy_dir)
        assert result.code == 1, result.stderr
        assert not target.exists()
        assert "Traceback" not in result.stderr

    # not a WAL name: refused (never a key outside wal/)
    bad = run_drkit("wal-push", "prod", str(layout.root / "policies" / "prod.yaml"))
    assert bad.code == 2


def test_push_archives_ready_segments_ahead(layout: Layout, run_drkit: DrkitRunner) -> None:
    names = [f"0000000100000000000000{n:02X}" for n in range(0x10, 0x16)]
    contents = {n: segment_bytes(i) for i, n in enumerate(names)}
    for n in names:
        layout.segment(n, contents[n])
    layout.segment("00000002.history", b"1\t0/16000000\tno recovery target specified\n")
    status = layout.pg_wal / "archive_status"

    result = run_drkit(
        "wal-push", "prod", str(layout.pg_wal / names[0]), "--json", policy_dir=layout.policy_dir
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert sorted(report["archived_ahead"]) == sorted([*names[1:], "00000002.history"])
    repo = layout.repo()
    for n in [*names, "00000002.history"]:
        assert find_wal_key(repo, n) is not None, n
    # PostgreSQL's own marker for what it handed us is left to PostgreSQL ...
    assert (status / f"{names[0]}.ready").exists()
    # ... the others are marked done, so the archiver never calls us for them
    for n in [*names[1:], "00000002.history"]:
        assert (status / f"{n}.done").exists() and not (status / f"{n}.ready").exists()

    # what was archived ahead decodes to the original bytes (prefetch path)
    spool = layout.root / "spool"
    got = prefetch_into(repo, spool, names[1:4], jobs=3)
    assert got == names[1:4]
    for n in got:
        assert (spool / n).read_bytes() == contents[n]


def test_fetch_prefetches_the_next_segments(layout: Layout, run_drkit: DrkitRunner) -> None:
    names = [f"0000000100000000000000{n:02X}" for n in range(0x20, 0x24)]
    contents = {n: segment_bytes(i + 40) for i, n in enumerate(names)}
    for n in names:
        layout.segment(n, contents[n], ready=False)
        assert (
            run_drkit("wal-push", "prod", str(layout.pg_wal / n), policy_dir=layout.policy_dir).code
            == 0
        )
        (layout.pg_wal / n).unlink()
    dest = layout.pg_wal / "RECOVERYXLOG"
    assert (
        run_drkit("wal-fetch", "prod", names[0], str(dest), policy_dir=layout.policy_dir).code == 0
    )
    spool = layout.pg_wal / ".drkit-prefetch"
    deadline = time.monotonic() + 60
    while not all((spool / n).exists() for n in names[1:]):
        assert time.monotonic() < deadline, f"prefetch did not arrive: {list(spool.iterdir())}"
        time.sleep(0.1)
    # the next fetch is served from the spool, moving the file out of it
    assert (
        run_drkit("wal-fetch", "prod", names[1], str(dest), policy_dir=layout.policy_dir).code == 0
    )
    assert dest.read_bytes() == contents[names[1]]
    assert not (spool / names[1]).exists()


def _file_upload_in_flight(layout: Layout) -> bool:
    wal_dir = Path(str(layout.block["url"]).removeprefix("file://")) / "prod" / "wal"
    return wal_dir.is_dir() and any(".drkit-tmp-" in p.name for p in wal_dir.iterdir())


def test_killed_push_leaves_nothing_fetchable(layout: Layout, run_drkit: DrkitRunner) -> None:
    """kill -9 in the middle of an upload: wal-fetch must not return a partial segment.

    file://: killed while its temp file exists.  S3: the push goes through a proxy that
    takes its PUT and never answers (the upload is in flight until the kill)."""
    name = "000000010000000000000030"
    path = layout.segment(name, os.urandom(SEG))  # incompressible: the upload takes a while
    policy_dir = layout.policy_dir
    proxy: FaultProxy | None = None
    if not str(layout.block["url"]).startswith("file://"):
        import yaml

        proxy = FaultProxy(str(layout.block["endpoint_url"])).start()
        proxy.set_faults(Fault("stall", "PUT", "/wal/", times=None))
        policy_dir = layout.root / "policies-via-proxy"
        policy_dir.mkdir()
        doc = yaml.safe_load((layout.policy_dir / "prod.yaml").read_text())
        doc["repository"]["endpoint_url"] = proxy.endpoint
        (policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))

    def in_flight() -> bool:
        return proxy.outcomes("stall") > 0 if proxy else _file_upload_in_flight(layout)

    killed_mid_upload = False
    try:
        for _attempt in range(5):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drkit",
                    "--policy-dir",
                    str(policy_dir),
                    "wal-push",
                    "prod",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if in_flight():
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_mid_upload = True
                    break
                time.sleep(0.001)
            proc.wait()
            if killed_mid_upload:
                break
            repo = layout.repo()
            key = find_wal_key(repo, name)
            if key is not None:  # finished before we caught it: start over
                repo.backend.delete(key)
    finally:
        if proxy is not None:
            proxy.stop()
    assert killed_mid_upload, "never caught the upload in flight"
    dest = layout.pg_wal / "RECOVERYXLOG"
    result = run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=layout.policy_dir)
    assert result.code == 1, result.stderr
    assert not dest.exists()
    # and PostgreSQL's retry archives it properly
    retry = run_drkit("wal-push", "prod", str(path), policy_dir=layout.policy_dir)
    assert retry.code == 0, retry.stderr
    assert run_drkit("wal-fetch", "prod", name, str(dest), policy_dir=layout.policy_dir).code == 0
    assert dest.read_bytes() == path.read_bytes()


def test_wal_policy_needs_no_database_secret(tmp_path: Path) -> None:
    with shared_dir() as root:
        layout = Layout(root, file_repo_block(root))
        os.environ.pop("PROD_DATABASE_URL", None)
        from drkit.errors import PolicyError

        with pytest.raises(PolicyError):
            load_policy("prod", layout.policy_dir)  # the full policy needs the URL ...
        from drkit.wal import load_wal_policy

        assert load_wal_policy("prod", layout.policy_dir).repository.url.startswith("file://")


def _text_segment(seed: int) -> bytes:
    """16 MB of text from a small vocabulary: zstd level 3 packs it clearly tighter than
    level 1 (about 15 %)."""
    import random

    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rnd.choice(letters) for _ in range(rnd.randint(3, 9))) for _ in range(3000)]
    lines = []
    size = 0
    while size < SEG:
        line = (" ".join(rnd.choice(words) for _ in range(12)) + "\n").encode()
        lines.append(line)
        size += len(line)
    return b"".join(lines)[:SEG]


@pytest.mark.parametrize("wal_level", [None, 1, 3])
def test_wal_is_stored_at_the_wal_compression_level(wal_level: int | None) -> None:
    """wal_archiver.compression_level decides how WAL is compressed (default 1, null: the
    repository's level), and what is stored decodes to the segment's bytes."""
    import yaml

    from drkit.wal import load_wal_policy, open_wal_object, push_file

    data = _text_segment(3)
    sizes = {}
    with shared_dir() as root:
        for label, archiver in (
            ("default", {}),
            ("chosen", {"compression_level": wal_level}),
        ):
            sub = root / label
            sub.mkdir()
            block = {**file_repo_block(sub), "compression": {"algorithm": "zstd", "level": 3}}
            layout = Layout(sub, block)
            doc = yaml.safe_load((layout.policy_dir / "prod.yaml").read_text())
            doc["wal_archiver"] = archiver
            (layout.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
            policy = load_wal_policy("prod", layout.policy_dir)
            repo = Repository.for_wal(policy)
            path = layout.segment("000000010000000000000003", data)
            outcome = push_file(repo, path, SEG)
            with open_wal_object(repo, outcome.key) as stream:
                assert stream.read() == data
            sizes[label] = outcome.stored_size
            assert policy.wal_compression().level == (1 if archiver == {} else wal_level or 3)
    if wal_level == 1:
        assert sizes["chosen"] == sizes["default"]  # the default is level 1
    else:  # level 3 (given, or the repository's through null) packs tighter than level 1
        assert sizes["chosen"] < sizes["default"] * 0.95, sizes


def test_a_gzip_wal_level_above_9_is_refused(tmp_path: Path) -> None:
    from drkit.config import parse_policy
    from drkit.errors import PolicyError

    raw = {
        "environment": "prod",
        "database": {"url": "postgresql:///x"},
        "repository": {"url": "file:///tmp/x", "compression": {"algorithm": "gzip", "level": 6}},
        "wal_archiver": {"compression_level": 12},
    }
    with pytest.raises(PolicyError, match=r"wal_archiver\.compression_level"):
        parse_policy("prod", raw, "prod.yaml")


def test_s3_store_that_reads_back_another_size_is_not_acknowledged(s3_server: S3Server) -> None:
    """push_file trusts S3's conditional PUT to read the object back (no second HEAD):
    a server reporting another size for the object is an error, never a stored segment."""
    from drkit.errors import StorageError
    from drkit.wal import push_file

    with s3_wal_layout(s3_server) as (layout, repo):
        assert repo.backend.new_puts_read_back
        client = repo.backend.client  # type: ignore[attr-defined]
        real_head = client.head_object

        def short_head(**kwargs: object) -> dict[str, object]:
            found = dict(real_head(**kwargs))
            found["ContentLength"] = int(found["ContentLength"]) - 1  # type: ignore[call-overload]
            return found

        client.head_object = short_head
        path = layout.segment("000000010000000000000005", segment_bytes(5))
        with pytest.raises(StorageError, match="but S3 reports"):
            push_file(repo, path, SEG)
        client.head_object = real_head
        # the real store was whole: a retry finds identical content and acknowledges it
        assert push_file(repo, path, SEG).status == "exists"


def test_a_segment_stored_under_another_encoding_is_found(layout: Layout) -> None:
    """The policy changed its compression since a segment was archived: pushing the same
    name again must find the old object (one lookup of every candidate key), answer
    "exists" for identical bytes and refuse different ones, never store a second copy."""
    import yaml

    from drkit.wal import WalConflict, load_wal_policy, push_file

    def repo_with(algorithm: str) -> Repository:
        doc = yaml.safe_load((layout.policy_dir / "prod.yaml").read_text())
        doc["repository"]["compression"] = {"algorithm": algorithm}
        (layout.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc))
        return Repository.for_wal(load_wal_policy("prod", layout.policy_dir))

    name = "000000010000000000000007"
    data = segment_bytes(7)
    path = layout.segment(name, data)
    old = push_file(repo_with("gzip"), path, SEG)
    assert old.status == "stored" and old.key.endswith(".gz")
    repo = repo_with("zstd")
    assert find_wal_key(repo, name) == old.key
    assert find_wal_key(repo, name, expected=False) == old.key
    assert find_wal_key(repo, "000000010000000000000009", expected=False) is None
    again = push_file(repo, path, SEG)
    assert (again.status, again.key) == ("exists", old.key)
    path.write_bytes(segment_bytes(8))
    with pytest.raises(WalConflict, match="already holds a different"):
        push_file(repo, path, SEG)
    stored = [o.key for o in repo.backend.list(repo.key(f"wal/{name}"))]
    assert stored == [old.key]


def test_a_new_segment_costs_s3_one_listing_and_one_put(s3_server: S3Server) -> None:
    """Before a new segment's conditional PUT, one listing of its name covers every key it
    may be stored under (a HEAD first cost a second request per segment); the PUT reads
    the object back itself.  The archive's identity, checked on every push, is read
    from the repository once a minute at most."""
    from drkit.wal import push_file

    with s3_wal_layout(s3_server) as (layout, repo):
        layout.control_file(7000000000000000001)
        first = layout.segment("000000010000000000000009", segment_bytes(9))
        assert push_file(repo, first, SEG).status == "stored"  # binds and reads the identity
        calls: list[str] = []
        client = repo.backend.client  # type: ignore[attr-defined]
        client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        path = layout.segment("00000001000000000000000A", segment_bytes(10))
        assert push_file(repo, path, SEG).status == "stored"
        assert calls == ["ListObjectsV2", "PutObject", "HeadObject"]  # HEAD: the read-back
        calls.clear()
        # a fetch expects to find it: the current key's HEAD alone
        assert find_wal_key(repo, path.name) is not None
        assert calls == ["HeadObject"]


def test_ready_files_come_history_first_then_oldest_and_only_with_their_file(
    tmp_path: Path,
) -> None:
    """The order PostgreSQL's archiver takes them in (the worker leaves the head to it):
    history files, then segments oldest first across timelines; never a file whose
    segment is gone, one already .done, the one excluded, or a name that is not WAL."""
    from drkit.wal import ready_files

    status = tmp_path / "archive_status"
    status.mkdir()
    ready = [
        "000000020000000000000004",
        "000000010000000000000003",
        "00000002.history",
        "000000010000000000000002",
        "000000010000000000000005",  # excluded below
        "000000010000000000000001",  # its segment is gone
        "not-wal",
    ]
    for name in ready:
        (status / f"{name}.ready").touch()
        if name != "000000010000000000000001":
            (tmp_path / name).write_bytes(b"x")
    (tmp_path / "000000010000000000000000").write_bytes(b"x")
    (status / "000000010000000000000000.done").touch()
    names = [p.name for p in ready_files(tmp_path, "000000010000000000000005", 10)]
    assert names == [
        "00000002.history",
        "000000010000000000000002",
        "000000010000000000000003",
        "000000020000000000000004",
    ]
    assert [p.name for p in ready_files(tmp_path, "", 2)] == names[:2]
    assert ready_files(tmp_path / "missing", "", 5) == []


def _damage(layout: Layout, name: str) -> None:
    """Flip one byte of the stored object of ``name`` (bit rot, or a bad upload)."""
    repo = layout.repo()
    key = find_wal_key(repo, name)
    assert key is not None
    data = bytearray(repo.backend.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    repo.backend.put_bytes(key, bytes(data))


def test_an_unreadable_segment_is_retried_then_fails_never_missing(
    layout: Layout, run_drkit: DrkitRunner
) -> None:
    """PostgreSQL reads any failed restore_command as "end of archive": a segment that
    exists but does not decode is tried DRKIT_WAL_FETCH_ATTEMPTS times (one line per
    retry), then fails saying why, and the failure (not a "missing") is recorded in the
    fetch journal a restore drkit drives reads.  The prefetch helper never turns it into
    a "missing" either.  Both entries: ``drkit wal-fetch`` and the lean one."""
    from drkit.config import load_policy
    from drkit.wal import SPOOL_DIR, read_fetch_journal, start_fetch_journal, write_repo_hint

    name = "000000010000000000000041"
    layout.segment(name, segment_bytes(41), ready=False)
    assert run_drkit("wal-push", "prod", str(layout.pg_wal / name), policy_dir=layout.policy_dir)
    (layout.pg_wal / name).unlink()
    _damage(layout, name)
    os.environ["PROD_DATABASE_URL"] = "postgresql:///unused"
    try:
        write_repo_hint(load_policy("prod", layout.policy_dir), layout.pg_wal)  # file://: lean
    finally:
        os.environ.pop("PROD_DATABASE_URL")
    start_fetch_journal(layout.pg_wal)
    env = dict(
        os.environ,
        DRKIT_WAL_FETCH_ATTEMPTS="2",
        DRKIT_WAL_PREFETCH="0",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),  # this checkout's drkit
    )
    lean = [sys.executable, "-m", "drkit.wal", "fetch", "prod", name, "pg_wal/RECOVERYXLOG"]
    full = [sys.executable, "-m", "drkit", "wal-fetch", "prod", name, "pg_wal/RECOVERYXLOG"]
    for argv in ([*lean, str(layout.policy_dir)], [*full, "--policy-dir", str(layout.policy_dir)]):
        proc = subprocess.run(
            argv, cwd=layout.pg_wal.parent, env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 2, (argv, lines)  # one retry, then the failure
        assert "attempt 1 of 2 failed" in lines[0] and "retrying" in lines[0], lines
        assert lines[1].startswith(f"drkit: wal-fetch {name}: ") and "zstd" in lines[1], lines
        assert not (layout.pg_wal / "RECOVERYXLOG").exists()

    # a prefetch of it fails quietly, leaves no "missing" marker and no file to serve
    spool = layout.pg_wal / SPOOL_DIR
    assert prefetch_into(layout.repo(), spool, [name], jobs=1) == []
    assert sorted(p.name for p in spool.iterdir()) in (
        ["fetch-journal"],
        ["fetch-journal", "repo.json"],
    )
    # and a segment that is not archived is recorded as missing
    missing = "000000010000000000000042"
    proc = subprocess.run(
        [*lean[:-3], "prod", missing, "pg_wal/RECOVERYXLOG", str(layout.policy_dir)],
        cwd=layout.pg_wal.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (1, "")
    outcomes = [(e.name, e.outcome) for e in read_fetch_journal(layout.pg_wal)]
    assert outcomes == [(name, "failed"), (name, "failed"), (missing, "missing")]
    assert "zstd" in read_fetch_journal(layout.pg_wal)[0].detail
