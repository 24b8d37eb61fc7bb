"""``s3://bucket/prefix`` repositories through boto3 (AWS, MinIO, any S3-compatible store).

Retries: botocore's ``standard`` mode retries throttling (SlowDown, 503), 5xx errors and
timeouts with exponential backoff and jitter, a bounded number of times, and each new
attempt logs one warning (operation, object path, attempt, why the last one failed).
Every call has a connect and a read timeout, so a stalled endpoint fails instead of
hanging: a listing, HEAD, GET, DELETE or a WAL segment's single PUT waits
``DRKIT_S3_READ_TIMEOUT`` (8 s) for S3 to answer and is tried ``DRKIT_S3_MAX_ATTEMPTS``
(4) times, so a store that accepts connections and never answers ends a command or a
``wal-push`` within a minute.  Backup uploads (``put_stream``: multipart parts, and the
PUT of an object smaller than one part) wait ``DRKIT_S3_UPLOAD_READ_TIMEOUT`` (120 s):
after the last byte of a part of up to 5 GiB, S3 checks and stores it before it answers,
and completing a multipart upload may take minutes by S3's own account.  A backup meets
a stalled endpoint earlier anyway, in the short calls before its uploads, and the body's
own send waits at most the connect timeout per write.
With ``repository.object_lock``, every object this backend writes carries the store's
retention (``ObjectLockMode`` and ``ObjectLockRetainUntilDate``: its write time plus the
policy's days), and every upload reads its retention back: an object that came back
without it (a store that drops the headers of a multipart upload) gets it set on the
object, and one the store will not lock fails the upload rather than stand unlocked.
Large objects go up as multipart uploads of bounded part size (8 MiB, larger when the
caller's size hint says 10,000 parts would not hold the object); s3transfer aborts the
upload if any part fails, so no partial object ever becomes visible.
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

from drkit.errors import ObjectExists, ObjectNotFound, StorageError
from drkit.storage.base import Backend, ObjectInfo
from drkit.streams import ReadDigest, read_full

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from drkit.storage.config import ObjectLockConfig, RepositoryConfig

# 8 MiB parts keep an upload's buffers small (3 x 8 MiB); S3 allows 10,000 parts per
# upload and 5 GiB per part, so an object larger than 10,000 x PART_SIZE (78 GiB) gets
# bigger parts, chosen from the caller's size hint
PART_SIZE = int(os.environ.get("DRKIT_S3_PART_SIZE", 8 * 1024 * 1024))
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024**3
_MIB = 1024 * 1024
MAX_CONCURRENCY = 3
# put_stream_new: what one PUT takes, and how much of it is spooled in memory
MAX_SINGLE_PUT = 5 * 1024**3
SHA256_METADATA = "drkit-sha256"  # x-amz-meta-drkit-sha256: put_stream_new's checksum
SPOOL_IN_MEMORY = 32 * 1024 * 1024
# s3transfer buffers whole parts of a non-seekable stream; bound how many it holds
# (its default of 10 x part size would be 80 MiB for one upload).
MAX_BUFFERED_PARTS = 3
#: (environment variable, default): read when a backend is made (see the module docstring)
MAX_ATTEMPTS = ("DRKIT_S3_MAX_ATTEMPTS", 4)
CONNECT_TIMEOUT = ("DRKIT_S3_CONNECT_TIMEOUT", 5.0)
READ_TIMEOUT = ("DRKIT_S3_READ_TIMEOUT", 8.0)
UPLOAD_READ_TIMEOUT = ("DRKIT_S3_UPLOAD_READ_TIMEOUT", 120.0)

_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
}


def part_size_for(size_hint: int | None) -> int:
    """The upload part size for an object of about ``size_hint`` bytes: PART_SIZE, or
    bigger (whole MiB) so that the object fits in MAX_PARTS with a margin of a quarter."""
    if not size_hint or size_hint <= 0:
        return PART_SIZE
    needed = -(-size_hint * 5 // 4 // MAX_PARTS)  # ceiling
    needed = -(-needed // _MIB) * _MIB
    return min(max(PART_SIZE, needed), MAX_PART_SIZE)


def _fixed_mmap_threshold() -> None:
    """Keep glibc from moving its mmap threshold up to the size of a freed part: parts
    (and the copies botocore signs) are then always mapped and unmapped whole, instead of
    settling in the heaps of the upload threads, whose RSS grew with the object's size."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        pass


_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1024 * 1024


def _checksummed_body_unsigned(config: Any) -> Any:
    """A ``before-sign`` hook: a PUT that carries its body's sha256 as
    ``x-amz-checksum-sha256`` goes with ``UNSIGNED-PAYLOAD``.

    S3 checks the body against that header, and the header is signed, so the body is
    bound to the signature as before; botocore (which signs every payload over plain
    HTTP) would otherwise hash the body again, and add a CRC32, both for nothing."""
    from botocore.config import Config

    unsigned = config.merge(Config(s3={**(config.s3 or {}), "payload_signing_enabled": False}))

    def hook(request: Any, **_: Any) -> None:
        if request.headers.get("x-amz-checksum-sha256"):
            request.context["client_config"] = unsigned

    return hook


def _setting(setting: tuple[str, float]) -> float:
    name, default = setting
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise StorageError(f"{name}={value!r} is not a number") from None


def _log_retries(client: Any) -> None:
    """One warning per retried S3 call: which operation, on which object, attempt n of m,
    and why the attempt before failed (an exception's type or S3's status and code —
    never a header, a signature or an exception text, which may name a credential)."""
    attempts = int(client.meta.config.retries["total_max_attempts"])

    def remember(request_dict: dict[str, Any], **kwargs: Any) -> None:
        caught = kwargs.get("caught_exception")
        response = kwargs.get("response")
        if caught is not None:
            reason = type(caught).__name__
        elif response is not None:
            meta = response[1].get("ResponseMetadata", {})
            code = response[1].get("Error", {}).get("Code", "")
            reason = f"HTTP {meta.get('HTTPStatusCode', '?')} {code}".strip()
        else:
            return
        request_dict.setdefault("context", {})["drkit_last_failure"] = reason

    def announce(request: Any, operation_name: str, **_: Any) -> None:
        context = getattr(request, "context", None) or {}
        attempt = int((context.get("retries") or {}).get("attempt", 1))
        if attempt > 1:
            log.warning(
                "S3 %s %s: attempt %d of %d (the last one failed: %s)",
                operation_name,
                urlsplit(request.url).path,
                attempt,
                attempts,
                context.get("drkit_last_failure", "unknown"),
            )

    client.meta.events.register("needs-retry.s3", remember)
    client.meta.events.register("request-created.s3", announce)


class S3Backend(Backend):
    new_puts_read_back = True  # put_stream_new HEADs the object and checks its ETag

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        storage_class: str | None = None,
        object_lock: ObjectLockConfig | None = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.storage_class = storage_class
        self.object_lock = object_lock
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": int(_setting(MAX_ATTEMPTS))},
            connect_timeout=_setting(CONNECT_TIMEOUT),
            read_timeout=_setting(READ_TIMEOUT),
            s3={"addressing_style": "path"} if endpoint_url else {},
            max_pool_connections=MAX_CONCURRENCY * 2 + 2,
        )
        self._session = boto3.session.Session()
        self._endpoint_url = endpoint_url
        self._region = region
        self._upload_client: Any = None
        self.client: Any = self._new_client(self._config)
        self.transfer = TransferConfig(
            multipart_threshold=PART_SIZE,
            multipart_chunksize=PART_SIZE,
            max_concurrency=MAX_CONCURRENCY,
            use_threads=True,
        )
        self.transfer.max_in_memory_upload_chunks = MAX_BUFFERED_PARTS
        _fixed_mmap_threshold()

    def _new_client(self, config: Any) -> Any:
        client = self._session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config
        )
        client.meta.events.register(
            "before-sign.s3.PutObject", _checksummed_body_unsigned(client.meta.config)
        )
        _log_retries(client)
        return client

    @property
    def upload_client(self) -> Any:
        """The client of upload bodies: the same, waiting longer for S3's answer after
        the last byte (made on first use: wal-push's start-up time matters)."""
        if self._upload_client is None:
            from botocore.config import Config

            longer = Config(read_timeout=_setting(UPLOAD_READ_TIMEOUT))
            self._upload_client = self._new_client(self._config.merge(longer))
        return self._upload_client

    @classmethod
    def from_config(cls, config: RepositoryConfig) -> S3Backend:
        parts = urlsplit(config.url)
        return cls(
            parts.netloc,
            parts.path,
            endpoint_url=config.endpoint_url,
            region=config.region,
            storage_class=config.storage_class,
            object_lock=config.object_lock,
        )

    def _lock_args(self) -> dict[str, Any]:
        """The retention of an object written now (nothing without ``object_lock``)."""
        if self.object_lock is None:
            return {}
        until = datetime.now(UTC) + timedelta(days=self.object_lock.days)
        return {
            "ObjectLockMode": self.object_lock.mode.upper(),
            "ObjectLockRetainUntilDate": until,
        }

    def _ensure_locked(self, key: str, lock: dict[str, Any], stored: dict[str, Any]) -> None:
        """Fail closed unless the stored object carries the retention it was written with:
        set it when the store dropped it, and raise when the store still will not lock it."""
        if not lock or _retained(stored, lock):
            return
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        try:
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=full,
                Retention={
                    "Mode": lock["ObjectLockMode"],
                    "RetainUntilDate": lock["ObjectLockRetainUntilDate"],
                },
            )
            stored = self.client.head_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("lock", key, exc) from None
        if not _retained(stored, lock):
            raise StorageError(
                f"stored {key} in {self.location} but S3 did not lock it "
                f"({lock['ObjectLockMode']} until {lock['ObjectLockRetainUntilDate']:%Y-%m-%d}): "
                "enable object lock on the bucket or remove repository.object_lock"
            )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str, exc: BaseException) -> StorageError:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StorageError(
                    f"bucket {self.bucket} does not exist ({self.location}): create it or fix "
                    "repository.url"
                )
            if code in _CREDENTIAL_CODES or status == 403:
                return StorageError(
                    f"S3 refused the credentials to {action} {key} in {self.location} ({code}): "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance role"
                )
            return StorageError(f"cannot {action} {key} in {self.location}: S3 error {code}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"no S3 credentials to {action} {key} in {self.location}: set "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an AWS profile"
            )
        if isinstance(exc, ReadTimeoutError | ConnectionError):
            return StorageError(
                f"cannot {action} {key}: S3 endpoint of {self.location} unreachable or not "
                f"answering after retries ({type(exc).__name__})"
            )
        if isinstance(exc, BotoCoreError):
            return StorageError(f"cannot {action} {key} in {self.location}: {exc}")
        return StorageError(f"cannot {action} {key} in {self.location}: {exc}")

    def _is_missing(self, exc: BaseException) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return False
        code = exc.response.get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> int:
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import S3UploadFailedError

        counter = _CountingReader(stream)
        extra: dict[str, str] = {}
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        lock = self._lock_args()
        transfer = self.transfer
        part = part_size_for(size_hint)
        if part != transfer.multipart_chunksize:
            transfer = copy.copy(transfer)
            transfer.multipart_threshold = transfer.multipart_chunksize = part
            log.info("%s: %d MiB upload parts for about %d bytes", key, part // _MIB, size_hint)
        try:
            self.upload_client.upload_fileobj(
                counter, self.bucket, self._key(key), ExtraArgs={**extra, **lock}, Config=transfer
            )
            if lock:
                self._ensure_locked(key, lock, self._head_object(key) or {})
        except S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            if cause is not None and isinstance(cause, ClientError | BotoCoreError):
                raise self._error("upload", key, cause) from None
            text = str(exc)
            if "NoSuchBucket" in text:
                raise StorageError(
                    f"bucket {self.bucket} does not exist ({self.location}): create it or fix "
                    "repository.url"
                ) from None
            if any(code in text for code in _CREDENTIAL_CODES):
                raise StorageError(
                    f"S3 refused the credentials to upload {key} in {self.location}: check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance role"
                ) from None
            raise StorageError(f"cannot upload {key} to {self.location}: {text}") from None
        except (ClientError, BotoCoreError) as exc:
            raise self._error("upload", key, exc) from None
        return counter.count

    def put_stream_new(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> int:
        """One conditional PUT (``If-None-Match: *``): S3 refuses it when the key exists,
        so of two writers at most one succeeds.

        The bytes are spooled first (memory, then a temporary file) so that the object
        goes up as a single PUT, whose check and store S3 performs as one step (WAL files
        are at most 1 GiB; S3 takes 5 GiB in one PUT).  The ETag read back must be the
        one this PUT produced, so a store that slipped past a weaker server's check is
        reported as taken rather than acknowledged.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        extra: dict[str, Any] = {"StorageClass": self.storage_class} if self.storage_class else {}
        lock = self._lock_args()
        extra.update(lock)
        digest = ReadDigest(stream)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            size = 0
            while chunk := stream.read(_MIB):
                spool.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            if size > MAX_SINGLE_PUT:
                raise StorageError(
                    f"cannot store {key} in {self.location} without risking a replace: "
                    f"{size} bytes is more than one PUT takes"
                )
            spool.seek(0)
            # S3 refuses the body unless its sha256 is this (BadDigest), and with it the
            # payload goes unsigned (see _checksummed_body_unsigned); a store that takes
            # no checksums is configured with AWS_REQUEST_CHECKSUM_CALCULATION=when_required
            sha256 = digest.hexdigest()
            checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
            checked = (
                {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": checksum}
                if self.client.meta.config.request_checksum_calculation != "when_required"
                else {}
            )
            try:
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=full,
                    Body=spool,
                    ContentLength=size,
                    IfNoneMatch="*",
                    Metadata={SHA256_METADATA: sha256},
                    **checked,
                    **extra,
                )
                stored = self.client.head_object(
                    Bucket=self.bucket, Key=full, ChecksumMode="ENABLED"
                )
            except (ClientError, BotoCoreError) as exc:
                if _is_taken(exc):
                    raise ObjectExists(f"{key} already exists in {self.location}") from None
                raise self._error("upload", key, exc) from None
        if stored.get("ETag") != response.get("ETag"):
            raise ObjectExists(f"{key} already exists in {self.location} (another writer's)")
        if stored.get("ChecksumSHA256", checksum) != checksum:  # a store may not keep it
            raise StorageError(
                f"stored {key} in {self.location} but S3 reports a different sha256 for it"
            )
        if stored.get("ContentLength") != size:
            raise StorageError(
                f"stored {size} bytes of {key} in {self.location} but S3 reports "
                f"{stored.get('ContentLength')}"
            )
        self._ensure_locked(key, lock, stored)
        return size

    def open_read(self, key: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(f"{key} does not exist in {self.location}") from None
            raise self._error("read", key, exc) from None
        return cast(BinaryIO, _BodyReader(response["Body"], self, key))

    def list(self, prefix: str) -> list[ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[ObjectInfo] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    found.append(
                        ObjectInfo(item["Key"][strip:], int(item["Size"]), item["LastModified"])
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", prefix, exc) from None
        found.sort(key=lambda o: o.key)
        return found

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            if self._is_missing(exc):
                return
            raise self._error("delete", key, exc) from None

    def _head_object(self, key: str) -> dict[str, Any] | None:
        """HEAD of ``key``: its response, or None when the object does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self._key(key)
            )
        except (ClientError, BotoCoreError) as exc:
            if self._is_missing(exc):
                return None
            raise self._error("stat", key, exc) from None
        return response

    def head(self, key: str) -> ObjectInfo | None:
        response = self._head_object(key)
        if response is None:
            return None
        return ObjectInfo(key, int(response["ContentLength"]), response["LastModified"])

    def stored_sha256(self, key: str) -> str | None:
        response = self._head_object(key)
        value = response.get("Metadata", {}).get(SHA256_METADATA) if response else None
        return str(value) if value else None

    def locked_until(self, key: str) -> datetime | None:
        """The object's retain-until date (any mode: governance can be bypassed only with a
        permission drkit never asks for; the caller compares it with its clock); None when
        the object carries no retention or does not exist."""
        response = self._head_object(key)
        until = response.get("ObjectLockRetainUntilDate") if response else None
        if not isinstance(until, datetime):
            return None
        return until.astimezone(UTC)

    def object_lock_enabled(self) -> bool | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
                "ObjectLockConfigurationNotFoundError",
                "ObjectLockConfigurationNotFound",
            ):
                return False
            raise self._error("read the object lock configuration of", self.bucket, exc) from None
        configuration = response.get("ObjectLockConfiguration") or {}
        return bool(configuration.get("ObjectLockEnabled") == "Enabled")

    def first_existing(self, keys: Sequence[str], *, expected: bool = True) -> ObjectInfo | None:
        """``expected`` (a lookup that usually finds the first key, as a fetch does): one
        HEAD for the first key, then one listing of the keys' common name prefix
        (``<env>/wal/<name>``: only that name's objects) for the others.  Not expected (a
        new segment's push): the listing alone, one request instead of two.  S3 lists
        consistently after a write; a store that lags is caught by the conditional PUT."""
        if not keys:
            return None
        if expected or len(keys) == 1:
            info = self.head(keys[0])
            if info is not None or len(keys) == 1:
                return info
        rest = keys[1:] if expected else keys
        prefix = rest[0]
        for key in rest[1:]:
            while not key.startswith(prefix):
                prefix = prefix[:-1]
        if not prefix:  # unrelated keys: never list the whole repository
            return super().first_existing(rest)
        found = {i.key: i for i in self.list(prefix)}
        return next((found[k] for k in rest if k in found), None)

    def sweep_incomplete(self, prefix: str, older_than: datetime) -> int:
        """Abort multipart uploads a crash left open (they are billed, never listed)."""
        from botocore.exceptions import BotoCoreError, ClientError

        removed = 0
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] >= older_than:
                        continue
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._error("clean up interrupted uploads under", prefix, exc) from None
        return removed

    def close(self) -> None:
        self.client.close()
        if self._upload_client is not None:
            self._upload_client.close()


def _retained(stored: dict[str, Any], lock: dict[str, Any]) -> bool:
    """Whether a HEAD response shows at least the retention ``lock`` asked for (S3 keeps
    the date to the second)."""
    until = stored.get("ObjectLockRetainUntilDate")
    wanted: datetime = lock["ObjectLockRetainUntilDate"]
    return (
        stored.get("ObjectLockMode") == lock["ObjectLockMode"]
        and isinstance(until, datetime)
        and until >= wanted.replace(microsecond=0)
    )


def _is_taken(exc: BaseException) -> bool:
    """A conditional write refused because the key exists (or another conditional write
    to it is in flight: S3's 409 ConditionalRequestConflict)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


class _CountingReader:
    """Full reads for s3transfer, counted.

    s3transfer takes one short read for the end of the stream: a short first read makes
    it read everything into memory for a single PUT, and a short read later makes a
    part below S3's 5 MiB minimum.  Pipes and decoders return short reads, so every
    read here is filled up to the size asked for (or EOF).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else read_full(self._stream, size)
        self.count += len(data)
        return data


class _BodyReader:
    """A botocore StreamingBody that maps network errors to StorageError."""

    def __init__(self, body: Any, backend: S3Backend, key: str) -> None:
        self._body = body
        self._backend = backend
        self._key = key

    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        try:
            return cast(bytes, self._body.read(None if size < 0 else size))
        except (BotoCoreError, HTTPError, OSError) as exc:
            raise self._backend._error("read", self._key, exc) from None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _BodyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
