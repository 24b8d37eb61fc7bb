"""Acknowledgements of the asynchronous WAL archiver, checked with nothing heavy imported.

An acknowledgement ``<spool>/<name>.ack`` says: the file ``name`` whose bytes have this
size and sha256 is stored whole in this repository, from this cluster.  It is trusted
only when every field matches — the cluster's system identifier (from pg_control), the
repository's identity, the name, and the size and sha256 of the file in pg_wal *now*;
for a ``file://`` repository the object must also still be there with the size stored.

:func:`fast_push` is what ``drkit wal-push`` tries first in async mode, before loading
the policy (pydantic, YAML, the storage stack): the worker leaves a *hint* naming its
spool under a fingerprint of the policy (environment, policy directory, the policy
file's bytes and the values of the variables it references, salted with a random value
kept beside it), so a changed policy or environment never finds an old hint.  Anything
unexpected returns False and the full path decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit.wal.cluster import ControlFileError, system_identifier
from drkit.wal.names import is_archivable

if TYPE_CHECKING:
    from drkit.storage import RepositoryConfig

SPOOL_ROOT = ".drkit-archive"
ACK = ".ack"
WANT = ".want"
ERROR = ".error"
LOCK = "worker.lock"
ACK_VERSION = 1
POLL = 0.02
LINGER = 10.0  # seconds an acknowledged wal-push may stay while the worker drains the rest
_SALT = "salt"
_VAR_RE = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_ENV_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def repository_key(url: str, endpoint: str, env: str) -> str:
    """Identity of the place WAL goes: repository URL, endpoint and environment."""
    return hashlib.sha256(f"{url}\n{endpoint}\n{env}".encode()).hexdigest()[:16]


def repository_key_of(config: RepositoryConfig, env: str) -> str:
    """:func:`repository_key` of environment ``env`` in the repository ``config``."""
    return repository_key(config.url, config.endpoint_url or "", env)


@dataclass(frozen=True)
class Spool:
    """The async archiver's directory for one cluster and one repository."""

    pg_wal: Path
    system_identifier: int
    repository_id: str

    @property
    def path(self) -> Path:
        return self.pg_wal / SPOOL_ROOT / f"{self.system_identifier}-{self.repository_id}"

    def file(self, name: str, suffix: str) -> Path:
        return self.path / f"{name}{suffix}"


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_ack(spool: Spool, name: str, size: int, sha256: str, key: str, stored_size: int) -> None:
    """Record that ``name`` with content ``sha256`` is stored whole under ``key``."""
    doc = {
        "version": ACK_VERSION,
        "name": name,
        "size": size,
        "sha256": sha256,
        "system_identifier": spool.system_identifier,
        "repository": spool.repository_id,
        "key": key,
        "stored_size": stored_size,
    }
    write_atomic(spool.file(name, ACK), json.dumps(doc))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_ack(spool: Spool, name: str) -> tuple[int, str, str, int] | None:
    """What the ack of ``name`` records (raw size, sha256, key, stored size), for the
    report of a push the worker did; None without a readable ack.  It proves nothing:
    :func:`check_ack` decides whether an ack is trusted."""
    doc = _read_json(spool.file(name, ACK))
    if doc is None:
        return None
    size, sha, key, stored = (doc.get(k) for k in ("size", "sha256", "key", "stored_size"))
    if not (isinstance(size, int) and isinstance(stored, int)):
        return None
    return size, str(sha or ""), str(key or ""), stored


def check_ack(spool: Spool, path: Path, repo_root: Path | None = None) -> bool:
    """Whether the ack of ``path`` proves that this very file is stored whole; an ack
    that does not match is removed (it is stale or forged, and never consulted again)."""
    name = path.name
    doc = _read_json(spool.file(name, ACK))
    if doc is None:
        return False
    trusted = (
        doc.get("version") == ACK_VERSION
        and doc.get("name") == name
        and doc.get("system_identifier") == spool.system_identifier
        and doc.get("repository") == spool.repository_id
        and isinstance(doc.get("sha256"), str)
        and len(doc["sha256"]) == 64
    )
    if trusted:
        try:
            trusted = sha256_file(path) == (doc["sha256"], doc.get("size"))
        except OSError:
            trusted = False
    if trusted and repo_root is not None:
        key = doc.get("key")
        try:
            trusted = (
                isinstance(key, str)
                and ".." not in key.split("/")
                and (repo_root / key).stat().st_size == doc.get("stored_size")
            )
        except OSError:
            trusted = False
    if not trusted:
        with contextlib.suppress(OSError):
            spool.file(name, ACK).unlink()
    return trusted


def worker_running(spool: Spool) -> bool:
    """Whether a worker holds the spool's lock (the kernel drops it when the worker dies)."""
    try:
        fd = os.open(spool.file(LOCK, ""), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


def _salt(root: Path, create: bool) -> bytes | None:
    """The spool root's random salt; None when there is none and ``create`` is false (a
    lookup never writes into pg_wal)."""
    path = root / _SALT
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{_SALT}.{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(32))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # the first one wins; everyone reads the winner's
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def policy_fingerprint(
    env: str, policy_dir: Path | str, pg_wal: Path, *, create: bool = False
) -> str | None:
    """A salted fingerprint of everything the policy of ``env`` resolves from: None when
    there is no readable policy file, or no salt yet (``create`` makes one)."""
    if not _ENV_NAME_RE.match(env):
        return None
    directory = Path(os.path.realpath(policy_dir))
    try:
        text = (directory / f"{env}.yaml").read_bytes()
    except OSError:
        return None
    salt = _salt(pg_wal / SPOOL_ROOT, create)
    if salt is None:
        return None
    h = hashlib.sha256(salt)
    h.update(f"\0{env}\0{directory}\0".encode())
    h.update(text)
    for var in sorted(set(_VAR_RE.findall(text))):
        value = os.environb.get(var)
        h.update(b"\0" + var + (b"=" + value if value is not None else b"!"))
    return h.hexdigest()[:32]


def write_hint(fingerprint: str, spool: Spool, repo_root: Path | None, wait: float) -> None:
    """Let :func:`fast_push` find ``spool`` for the policy of ``fingerprint`` (from
    :func:`policy_fingerprint`) without loading it."""
    doc = {
        "system_identifier": spool.system_identifier,
        "repository": spool.repository_id,
        "repo_root": None if repo_root is None else str(repo_root),
        "wait": wait,
    }
    write_atomic(spool.pg_wal / SPOOL_ROOT / f"hint-{fingerprint}.json", json.dumps(doc))


def others_ready(pg_wal: Path, name: str) -> bool:
    """Whether a file other than ``name`` is still marked ``.ready``."""
    try:
        with os.scandir(pg_wal / "archive_status") as entries:
            return any(e.name.endswith(".ready") and e.name != f"{name}.ready" for e in entries)
    except OSError:
        return False


def linger(spool: Spool, name: str, seconds: float = LINGER) -> None:
    """After ``name`` was acknowledged: stay while the worker drains the other ready files.

    PostgreSQL runs archive_command again as soon as this one returns, for the oldest
    file still ready — most often one the worker is storing right now, at the price of
    an interpreter start.  While this call holds ``name``'s ``.ready``, the worker marks
    every other file it stores done itself, so a backlog costs PostgreSQL one call
    instead of one per file.  It changes nothing about ``name``: it is stored whole."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and others_ready(spool.pg_wal, name):
        if not worker_running(spool):
            return
        time.sleep(POLL * 2.5)


def fast_push(env: str, path_arg: str, policy_dir: str | None) -> bool:
    """True only when ``path_arg`` is acknowledged as stored whole (waiting for a running
    worker as long as the policy allows); False: let the full wal-push decide."""
    if policy_dir is None:
        return False
    path = Path(path_arg)
    if not path.is_absolute():
        path = Path.cwd() / path
    pg_wal = path.parent
    if pg_wal.name != "pg_wal" or not is_archivable(path.name):
        return False
    try:
        fingerprint = policy_fingerprint(env, policy_dir, pg_wal)
        if fingerprint is None:
            return False
        hint = _read_json(pg_wal / SPOOL_ROOT / f"hint-{fingerprint}.json")
        if hint is None:
            return False
        sysid = system_identifier(pg_wal.parent)
        if sysid is None or sysid != hint.get("system_identifier"):
            return False
        repo_root = Path(hint["repo_root"]) if hint.get("repo_root") else None
        spool = Spool(pg_wal, sysid, str(hint.get("repository")))
        if check_ack(spool, path, repo_root) or (
            worker_running(spool)
            and wait_for_ack(spool, path, repo_root, float(hint.get("wait", 0)))
        ):
            linger(spool, path.name)
            return True
        return False
    except (OSError, ValueError, TypeError, KeyError, ControlFileError):
        return False


def wait_for_ack(spool: Spool, path: Path, repo_root: Path | None, seconds: float) -> bool:
    """Wait while a worker runs for the ack of ``path``; False on an error it recorded,
    when no worker runs any more, or after ``seconds``."""
    name = path.name
    want = spool.file(name, WANT)
    want.touch()
    with contextlib.suppress(FileNotFoundError):
        spool.file(name, ERROR).unlink()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if spool.file(name, ACK).exists() and check_ack(spool, path, repo_root):
                return True
            if spool.file(name, ERROR).exists() or not worker_running(spool):
                return False
            time.sleep(POLL)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            want.unlink()
