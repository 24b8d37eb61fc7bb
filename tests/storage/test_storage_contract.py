"""One contract suite for every storage backend (file:// and s3:// on a real S3 API)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from drkit.errors import ObjectNotFound, StorageError
from drkit.storage import Backend, RepositoryConfig, open_backend
from tests.fix_s3 import RepoTarget


@pytest.fixture
def backend(repo_target: RepoTarget, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    import drkit.storage.s3 as s3

    monkeypatch.setattr(s3, "PART_SIZE", 5 * 1024 * 1024)  # S3's minimum part size
    config = RepositoryConfig(**repo_target.policy_block())
    b = open_backend(config)
    yield b
    b.close()


class Exploding(io.RawIOBase):
    """A stream that fails after some bytes, like pg_dump dying mid-backup."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("the producer died")
        n = min(self.left, size if size > 0 else self.left)
        self.left -= n
        return b"x" * n


def test_put_get_head_list_delete(backend: Backend) -> None:
    backend.put_bytes("env/a/one", b"1")
    backend.put_bytes("env/a/two", b"22")
    backend.put_bytes("env/b/three", b"333")
    assert backend.get_bytes("env/a/two") == b"22"
    head = backend.head("env/b/three")
    assert head is not None and head.size == 3
    assert backend.head("env/missing") is None
    assert [o.key for o in backend.list("env/a/")] == ["env/a/one", "env/a/two"]
    assert [o.key for o in backend.list("env/")] == ["env/a/one", "env/a/two", "env/b/three"]
    assert backend.list("nothing/") == []
    backend.delete("env/a/one")
    backend.delete("env/a/one")  # deleting a missing key is fine
    assert [o.key for o in backend.list("env/a/")] == ["env/a/two"]
    with pytest.raises(ObjectNotFound):
        backend.open_read("env/a/one")


def test_large_streamed_object_round_trips(backend: Backend) -> None:
    data = os.urandom(1024 * 1024) * 12  # 12 MiB: several multipart parts on S3
    size = backend.put_stream("env/big", io.BytesIO(data))
    assert size == len(data)
    info = backend.head("env/big")
    assert info is not None and info.size == len(data)
    with backend.open_read("env/big") as stream:
        assert stream.read() == data


def test_size_hint_sizes_the_parts_so_huge_objects_fit(backend: Backend) -> None:
    """S3 takes 10,000 parts at most: a hint of a huge object makes the parts bigger."""
    import drkit.storage.s3 as s3

    five = 5 * 1024 * 1024
    assert s3.part_size_for(None) == s3.part_size_for(1000) == five
    assert s3.part_size_for(10_000 * five) == 7 * 1024 * 1024  # a quarter's margin, whole MiB
    assert s3.part_size_for(10**15) == s3.MAX_PART_SIZE
    data = os.urandom(1024 * 1024) * 12
    hint = 10_000 * 12 * 1024 * 1024  # parts of 15 MiB: the whole object in one
    for key, size_hint, parts in (("env/plain", None, 3), ("env/hinted", hint, 1)):
        assert backend.put_stream(key, io.BytesIO(data), size_hint) == len(data)
        with backend.open_read(key) as stream:
            assert stream.read() == data
        if isinstance(backend, s3.S3Backend):
            etag = backend.client.head_object(Bucket=backend.bucket, Key=backend._key(key))
            tag = etag["ETag"].strip('"')
            assert (int(tag.split("-")[1]) if "-" in tag else 1) == parts, tag


def test_overwrite_replaces_whole_object(backend: Backend) -> None:
    backend.put_bytes("env/k", b"old contents")
    backend.put_bytes("env/k", b"new")
    assert backend.get_bytes("env/k") == b"new"


@pytest.mark.parametrize("good", [0, 100, 7 * 1024 * 1024])
def test_failed_upload_leaves_nothing(backend: Backend, good: int) -> None:
    with pytest.raises((OSError, StorageError)):
        backend.put_stream("env/partial", Exploding(good))  # type: ignore[arg-type]
    assert backend.head("env/partial") is None
    assert backend.list("env/") == []


def test_failed_upload_keeps_the_previous_version(backend: Backend) -> None:
    backend.put_bytes("env/k", b"precious")
    with pytest.raises((OSError, StorageError)):
        backend.put_stream("env/k", Exploding(1000))  # type: ignore[arg-type]
    assert backend.get_bytes("env/k") == b"precious"


def test_missing_bucket_is_a_clear_error(s3_server) -> None:  # type: ignore[no-untyped-def]
    config = RepositoryConfig(url="s3://no-such-bucket-drkit/x", endpoint_url=s3_server.endpoint)
    backend = open_backend(config)
    with pytest.raises(StorageError, match="bucket no-such-bucket-drkit does not exist"):
        backend.put_bytes("env/k", b"x")
    with pytest.raises(StorageError, match="does not exist"):
        backend.list("env/")


def test_unreachable_endpoint_fails_fast() -> None:
    from drkit.pg import free_port

    config = RepositoryConfig(url="s3://b/x", endpoint_url=f"http://127.0.0.1:{free_port()}")
    backend = open_backend(config)
    with pytest.raises(StorageError, match="unreachable"):
        backend.put_bytes("env/k", b"x")


def test_file_backend_disk_errors_are_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from drkit.storage import FileBackend

    target = tmp_path / "ro"
    target.mkdir()
    backend = FileBackend(target)
    (target / "env").write_text("a file where a directory should be")
    with pytest.raises(StorageError, match=r"cannot write env/k"):
        backend.put_bytes("env/k", b"x")


def test_new_objects_carry_the_sha256_of_their_bytes(backend: Backend) -> None:
    """put_stream_new keeps the sha256 of what it stored beside the object.  A stream that
    hashes itself from its first byte lends its digest (no second pass); any other
    stream, or one read before the store, is hashed by the backend."""
    import hashlib

    from drkit.streams import HashingReader

    data = os.urandom(3 * 1024 * 1024 + 17)
    expected = hashlib.sha256(data).hexdigest()
    plain = io.BytesIO(data)
    hashing = HashingReader(io.BytesIO(data))
    started = HashingReader(io.BytesIO(b"header" + data))
    assert started.read(6) == b"header"  # its digest covers bytes the object won't hold
    for key, stream in (("env/plain", plain), ("env/hashing", hashing), ("env/started", started)):
        assert backend.put_stream_new(key, stream) == len(data)  # type: ignore[arg-type]
        assert backend.get_bytes(key) == data
        assert backend.stored_sha256(key) == expected, key


def _put_headers(backend: Backend) -> list[dict[str, bytes]]:
    """The headers of every PutObject ``backend`` sends from now on, as sent."""
    sent: list[dict[str, bytes]] = []
    # backups go up through the upload client (a longer wait for S3's answer)
    for client in (backend.client, backend.upload_client):  # type: ignore[attr-defined]
        client.meta.events.register(
            "before-send.s3.PutObject",
            lambda request, **_: sent.append({k.lower(): v for k, v in request.headers.items()}),
        )
    return sent


def test_s3_new_objects_go_up_with_their_sha256_for_s3_to_check(s3_repo: RepoTarget) -> None:
    """A conditional PUT carries the sha256 of its body as ``x-amz-checksum-sha256``, a
    signed header S3 checks the body against; so the body goes ``UNSIGNED-PAYLOAD``
    (botocore would hash it again over plain HTTP, and add a CRC32).  Every other upload
    is signed as before, and the checksum S3 keeps is read back and compared."""
    import base64
    import hashlib

    backend = open_backend(RepositoryConfig(**s3_repo.policy_block()))
    client = backend.client  # type: ignore[attr-defined]
    sent = _put_headers(backend)
    data = os.urandom(2 * 1024 * 1024 + 5)
    checksum = base64.b64encode(hashlib.sha256(data).digest())
    assert backend.put_stream_new("env/new", io.BytesIO(data)) == len(data)
    backend.put_bytes("env/plain", data)
    new, plain = sent
    assert new["x-amz-checksum-sha256"] == checksum
    assert new["x-amz-content-sha256"] == b"UNSIGNED-PAYLOAD"
    assert "x-amz-checksum-crc32" not in new
    assert plain["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest().encode()
    assert backend.get_bytes("env/new") == data
    kept = client.head_object(Bucket=s3_repo.bucket, Key="drkit/env/new", ChecksumMode="ENABLED")
    assert kept["ChecksumSHA256"] == checksum.decode()

    # a store reporting another sha256 for what it kept: refused, not acknowledged
    def other(parsed, **_) -> None:  # type: ignore[no-untyped-def]
        parsed["ChecksumSHA256"] = base64.b64encode(b"\0" * 32).decode()

    client.meta.events.register("after-call.s3.HeadObject", other)
    with pytest.raises(StorageError, match="different sha256"):
        backend.put_stream_new("env/next", io.BytesIO(data))


def test_s3_new_objects_follow_a_store_without_checksums(
    s3_repo: RepoTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (botocore's switch for stores
    that take no checksums): no checksum header, and the body is signed again."""
    import hashlib

    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    backend = open_backend(RepositoryConfig(**s3_repo.policy_block()))
    sent = _put_headers(backend)
    data = os.urandom(1024 * 1024)
    backend.put_stream_new("env/new", io.BytesIO(data))
    assert not any(k.startswith("x-amz-checksum-") for k in sent[0])
    assert sent[0]["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest().encode()
    assert backend.get_bytes("env/new") == data
