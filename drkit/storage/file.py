"""``file://`` repositories: a directory tree, written by temp file + fsync + rename."""

from __future__ import annotations

import errno
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from drkit.errors import ObjectExists, ObjectNotFound, StorageError, UsageError
from drkit.storage.base import CHUNK_SIZE, Backend, ObjectInfo, scheme_of
from drkit.streams import ReadDigest

log = logging.getLogger(__name__)

TMP_MARK = ".drkit-tmp-"
SHA256_XATTR = "user.drkit.sha256"
_NO_LINK_ERRNOS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """``renameat2(src, dst, RENAME_NOREPLACE)``: FileExistsError when ``dst`` exists."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        renameat2 = libc.renameat2
    except AttributeError:
        raise OSError(errno.ENOSYS, "renameat2 is not available") from None
    rc = renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
    if rc != 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        raise OSError(err, os.strerror(err), str(dst))


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def local_root(url: str) -> Path | None:
    """The directory of a ``file://`` repository url; None for any other scheme."""
    return FileBackend.from_url(url).root if scheme_of(url) == "file" else None


class FileBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = f"file://{root}"

    @classmethod
    def from_url(cls, url: str) -> FileBackend:
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise UsageError(
                f"repository.url {url!r}: a file:// url must name an absolute path "
                "(file:///var/lib/drkit/repo)"
            )
        return cls(Path(path))

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        return self.root / key

    def put_stream(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> int:
        return self._put(key, stream, replace=True)

    def put_stream_new(self, key: str, stream: BinaryIO, size_hint: int | None = None) -> int:
        """Written aside, then published with a hard link (or ``renameat2`` with
        ``RENAME_NOREPLACE``), which fails when the name exists: never replaces."""
        return self._put(key, stream, replace=False)

    def _put(self, key: str, stream: BinaryIO, *, replace: bool) -> int:
        target = self._path(key)
        tmp = target.with_name(f"{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        size = 0
        digest = ReadDigest(stream) if not replace else None
        try:
            self._makedirs(target.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                while True:
                    chunk = stream.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    if digest is not None:
                        digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    size += len(chunk)
                if digest is not None:
                    self._set_sha256(fd, key, digest.hexdigest())
                os.fsync(fd)
            finally:
                os.close(fd)
            if replace:
                os.replace(tmp, target)
            else:
                self._publish_new(tmp, target, key)
            self._fsync_dir(target.parent)
        except OSError as exc:
            self._discard(tmp)
            raise StorageError(
                f"cannot write {key} to {self.location}: {_describe_os_error(exc)}"
            ) from None
        except BaseException:
            self._discard(tmp)
            raise
        return size

    def _set_sha256(self, fd: int, key: str, hexdigest: str) -> None:
        """Record the checksum on the inode before it is published (it travels with it)."""
        try:
            os.setxattr(fd, SHA256_XATTR, hexdigest.encode())
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            log.warning(
                "%s: the file system of %s keeps no extended attributes; stored without a checksum",
                key,
                self.location,
            )

    def stored_sha256(self, key: str) -> str | None:
        try:
            value = os.getxattr(self._path(key), SHA256_XATTR)
        except OSError:  # none recorded, not supported, or no such object
            return None
        return value.decode("ascii", "replace")

    def _publish_new(self, tmp: Path, target: Path, key: str) -> None:
        """Give ``tmp`` the name ``target`` unless it is taken (ObjectExists)."""
        taken = ObjectExists(f"{key} already exists in {self.location}")
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise taken from None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            try:
                rename_noreplace(tmp, target)
            except FileExistsError:
                raise taken from None
            except OSError as exc2:
                if exc2.errno not in (errno.EINVAL, errno.ENOSYS, *_NO_LINK_ERRNOS):
                    raise
                raise StorageError(
                    f"cannot store {key} in {self.location} without risking a replace: its "
                    "file system supports neither hard links nor RENAME_NOREPLACE"
                ) from None
            return
        # published: a temp name left behind by a failed unlink is swept by prune
        self._discard(tmp)

    def _makedirs(self, directory: Path) -> None:
        """Create missing directories, fsyncing each parent so the new entry is durable."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            self._fsync_dir(path.parent)

    @staticmethod
    def _discard(tmp: Path) -> None:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} does not exist in {self.location}") from None
        except OSError as exc:
            raise StorageError(
                f"cannot read {key} from {self.location}: {_describe_os_error(exc)}"
            ) from None

    def check_reachable(self) -> None:
        if not self.root.is_dir():
            raise StorageError(
                f"{self.location}: the repository directory does not exist or is not a "
                "directory: check repository.url"
            )

    def list(self, prefix: str) -> list[ObjectInfo]:
        # Walk only the directory the prefix names, not the whole repository.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return []
        found: list[ObjectInfo] = []
        try:
            for dirpath, _dirnames, filenames in os.walk(start):
                for name in filenames:
                    if TMP_MARK in name:
                        continue  # an upload in flight, or one a crash interrupted
                    path = Path(dirpath, name)
                    key = path.relative_to(self.root).as_posix()
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    found.append(
                        ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
                    )
        except OSError as exc:
            raise StorageError(
                f"cannot list {prefix} in {self.location}: {_describe_os_error(exc)}"
            ) from None
        found.sort(key=lambda o: o.key)
        return found

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(
                f"cannot delete {key} from {self.location}: {_describe_os_error(exc)}"
            ) from None
        # Remove directories left empty, up to the repository root.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def sweep_incomplete(self, prefix: str, older_than: datetime) -> int:
        """Temp files of uploads a crash (SIGKILL, power loss) interrupted."""
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        removed = 0
        cutoff = older_than.timestamp()
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                path = Path(dirpath, name)
                if TMP_MARK not in name or not path.relative_to(self.root).as_posix().startswith(
                    prefix
                ):
                    continue
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StorageError(
                        f"cannot remove {path.name} in {self.location}: {_describe_os_error(exc)}"
                    ) from None
        return removed

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(
                f"cannot stat {key} in {self.location}: {_describe_os_error(exc)}"
            ) from None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
