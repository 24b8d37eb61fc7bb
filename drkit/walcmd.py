"""The command lines PostgreSQL itself runs: ``archive_command`` and ``restore_command``.

PostgreSQL runs them as its own OS user (``postgres`` when drkit runs as root), so that
user must be able to start drkit.  In a normal install (a system-wide ``pip install``,
the container image) it can, and ``drkit`` on PATH is used.  When drkit runs from a
Python the cluster user cannot reach (a virtualenv under ``/root``, as on a developer
machine or in CI), :func:`drkit_argv` prepares a readable runtime: the same site
packages copied into ``/var/tmp/drkit-runtime-<hash>`` (one per interpreter and drkit
checkout; an install swaps in a new copy and the old one goes) and run by the system
Python of the same minor version.  ``$DRKIT_CLUSTER_COMMAND`` overrides all of this.

Policies used by these commands need only their ``repository`` section: the database
URL (and its password) does not have to be in PostgreSQL's environment.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from drkit.errors import OperationError

log = logging.getLogger(__name__)

COMMAND_ENV = "DRKIT_CLUSTER_COMMAND"
RUNTIME_ROOT_ENV = "DRKIT_RUNTIME_DIR"

#: what ``python -m drkit wal-push/wal-fetch`` imports, by distribution name
_RUNTIME_DISTS = (
    "PyYAML",
    "pydantic",
    "zstandard",
    "boto3",
    "typer",
    "rich",
    "psycopg",
    "psycopg-binary",
    "apscheduler",
    "prometheus_client",
    "sqlglot",
)


def _can_run(argv: list[str], user: str | None, extra_env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ)
    env.update(extra_env or {})
    try:
        proc = subprocess.run(
            [*argv, "-c", "import drkit.wal"],
            user=user,
            env=env,
            cwd="/",
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


@functools.lru_cache(maxsize=8)
def _python_for(user: str | None) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(python argv, extra environment) that ``user`` can run drkit with."""
    here = [sys.executable]
    if user is None or (reachable_by(Path(sys.executable), user) and _can_run(here, user)):
        return tuple(here), ()
    runtime = _shared_runtime()
    pythonpath = os.pathsep.join(str(p) for p in runtime.pythonpath)
    env = (("PYTHONPATH", pythonpath), ("PYTHONNOUSERSITE", "1"))
    if not _can_run([runtime.python], user, dict(env)):
        raise OperationError(
            f"the cluster's OS user {user!r} cannot run drkit (tried {sys.executable} and "
            f"{runtime.python} with {runtime.site}): install drkit system-wide or set "
            f"{COMMAND_ENV} to a drkit command that user can run"
        )
    return (runtime.python,), env


def reachable_by(path: Path, user: str) -> bool:
    """Whether ``user`` may traverse every directory above ``path`` (mode bits only)."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for directory in Path(os.path.realpath(path)).parents:
        try:
            st = directory.stat()
        except OSError:
            return False
        if st.st_uid == entry.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def drkit_argv(user: str | None) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and extra environment with which ``user`` runs drkit."""
    override = os.environ.get(COMMAND_ENV)
    if override:
        return shlex.split(override), {}
    python, env = _python_for(user)
    return [*python, "-m", "drkit"], dict(env)


def shell_command(
    user: str | None, args: list[str], *, placeholders: tuple[str, ...] = ("%p", "%f")
) -> str:
    """One shell command line (for postgresql.conf) running ``drkit ARGS`` as ``user``.

    ``%p``/``%f`` are left for PostgreSQL to substitute; everything else is quoted.
    """
    prefix, env = drkit_argv(user)
    words = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    if words:
        words.insert(0, "env")
    words += [shlex.quote(w) for w in prefix]
    words += [a if a in placeholders else shlex.quote(a) for a in args]
    return " ".join(words)


def archive_command(env: str, policy_dir: Path, user: str | None) -> str:
    """The ``archive_command`` line: ``drkit wal-push ENV %p`` run as ``user``."""
    return shell_command(user, ["wal-push", env, "%p", "--policy-dir", str(policy_dir.resolve())])


def restore_command(env: str, policy_dir: Path, user: str | None) -> str:
    """``drkit wal-fetch`` through its lean entry point (``python -m drkit.wal fetch``).

    Equivalent to ``drkit wal-fetch ENV %f %p --policy-dir DIR``; it skips the
    command-line framework so that segments already prefetched are served in
    milliseconds.  An overriding ``$DRKIT_CLUSTER_COMMAND`` gets the plain form.
    """
    if os.environ.get(COMMAND_ENV):
        return shell_command(
            user, ["wal-fetch", env, "%f", "%p", "--policy-dir", str(policy_dir.resolve())]
        )
    python, extra = _python_for(user)
    words = [f"{k}={shlex.quote(v)}" for k, v in sorted(dict(extra).items())]
    if words:
        words.insert(0, "env")
    words += [shlex.quote(w) for w in python]
    words += ["-m", "drkit.wal", "fetch", shlex.quote(env), "%f", "%p"]
    words.append(shlex.quote(str(policy_dir.resolve())))
    return " ".join(words)


# ---------------------------------------------------------------------------
# A runtime readable by the cluster user
# ---------------------------------------------------------------------------


class _Runtime:
    def __init__(self, python: str, site: Path, source: Path) -> None:
        self.python = python
        self.site = site
        self.pythonpath = [source, site]


#: how long a superseded copy of site-packages is kept for processes still starting on it
SITE_GRACE_SECONDS = 15 * 60


def _closure(roots: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            match = re.match(r"[A-Za-z0-9_.\-]+", req)
            if match:
                todo.append(match.group(0))
    return list(seen.values())


def _system_python() -> str:
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"):
        if os.access(candidate, os.X_OK) and os.path.realpath(candidate) != os.path.realpath(
            sys.executable
        ):
            return candidate
    raise OperationError(
        f"the cluster's OS user cannot run {sys.executable} and there is no system "
        f"python{minor}: install drkit system-wide or set {COMMAND_ENV}"
    )


@functools.lru_cache(maxsize=1)
def _shared_runtime() -> _Runtime:
    """The runtime of this interpreter and this drkit checkout, its copy of site-packages
    current.

    One directory per interpreter, site-packages and drkit package (its name never
    changes, so the archive_command a cluster was given stays valid): ``src`` mirrors the
    drkit package, and ``site`` is a link to an immutable copy of site-packages,
    ``site-<state>``.  When site-packages changes (an install changes its mtime), a new
    copy is built aside and the link swapped to it in one rename; copies superseded for
    longer than :data:`SITE_GRACE_SECONDS` are removed, so installs no longer leave a
    copy each behind."""
    import sysconfig

    python = _system_python()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    # the drkit source mirrored into it is this package's: two checkouts of drkit beside
    # one Python (worktrees, a test run next to an install) must not share a runtime
    package = Path(__file__).resolve().parent
    identity = hashlib.sha256(f"{sys.version}\n{site_packages}\n{package}\n".encode())
    root = Path(os.environ.get(RUNTIME_ROOT_ENV) or "/var/tmp")  # noqa: S108 - shared on purpose
    target = root / f"drkit-runtime-{identity.hexdigest()[:16]}"
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".drkit-runtime-", dir=root))
        (staging / "src").mkdir()
        _make_readable(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    check_runtime_dir(target)
    site = target / "site"
    current = f"site-{_site_state(site_packages)}"
    if _link_name(site) != current:
        if not (target / current).is_dir():
            _copy_site(target, current)
        link = target / f".site-link-{os.getpid()}"
        link.unlink(missing_ok=True)
        os.symlink(current, link)
        os.replace(link, site)  # processes starting from now on use the new copy
    check_runtime_dir(target)
    _drop_superseded_sites(target, current)
    source = target / "src"
    changed = _sync_source(source)
    if changed:  # byte-compile with the runtime's Python: the cluster user cannot write here
        subprocess.run(
            [python, "-m", "py_compile", *map(str, changed)], capture_output=True, check=False
        )
        _make_readable(source)
    return _Runtime(python, site, source)


def _site_state(site_packages: Path) -> str:
    """What identifies the current contents of site-packages: installs change its mtime."""
    try:
        return hashlib.sha256(str(site_packages.stat().st_mtime_ns).encode()).hexdigest()[:16]
    except OSError:
        return "0" * 16


def _link_name(site: Path) -> str | None:
    try:
        return os.readlink(site)
    except OSError:
        return None


def _make_readable(top: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)  # noqa: S103 - the cluster's OS user must read it
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def _copy_site(target: Path, name: str) -> None:
    """Copy the packages drkit imports into ``target/name``, built aside and renamed."""
    log.info("preparing a drkit runtime the cluster's OS user can run in %s", target)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target))
    try:
        for dist in _closure(_RUNTIME_DISTS):
            for f in dist.files or []:
                parts = Path(str(f)).parts
                if not parts or parts[0] in ("..", "bin"):
                    continue
                dest = staging / str(f)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copy2(Path(str(dist.locate_file(f))), dest)
                except FileNotFoundError:
                    continue
        _make_readable(staging)
        os.rename(staging, target / name)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / name).is_dir():  # not another process's copy: a real failure
            raise


def _drop_superseded_sites(target: Path, current: str) -> None:
    """Remove the copies of site-packages the link left more than the grace period ago
    (a process started just before the swap may still be importing from its copy), and
    what a preparation cut short left behind, once as old."""
    now = time.time()
    try:
        swapped = os.lstat(target / "site").st_mtime
    except OSError:
        return
    for entry in os.scandir(target):
        if entry.name == current:
            continue
        if entry.name.startswith("site-"):
            since = swapped
        elif entry.name.startswith(".site-"):
            try:
                since = entry.stat(follow_symlinks=False).st_mtime
            except OSError:  # another preparation finished or removed it meanwhile
                continue
        else:
            continue  # site, src
        if now - since < SITE_GRACE_SECONDS:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def check_runtime_dir(target: Path) -> None:
    """Trust an existing runtime only if this user made it and nobody else can change it.

    ``/var/tmp`` is writable by every local user and the runtime's name is predictable:
    a directory planted there would be run by PostgreSQL's archive_command (and written
    into by drkit).  Its tree must be real directories owned by this user and writable
    by no one else, and ``site`` a link this user made to one of the runtime's own
    ``site-*`` copies; otherwise drkit refuses to use it.
    """
    uid = os.geteuid()

    def refuse(path: Path, problem: str) -> NoReturn:
        raise OperationError(
            f"refusing the drkit runtime {target}: {path} {problem}; remove {target} "
            f"(drkit rebuilds it) or set {RUNTIME_ROOT_ENV} to a directory only you can write"
        )

    def own_directory(path: Path) -> None:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            refuse(path, "is not a directory")
        if st.st_uid != uid:
            refuse(path, f"is owned by uid {st.st_uid}, not {uid}")
        if st.st_mode & 0o022:
            refuse(path, f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})")

    for path in (target, target / "src", target / "src" / "drkit"):
        try:
            own_directory(path)
        except FileNotFoundError:
            if path == target / "src" / "drkit":
                continue  # created by the first sync
            raise OperationError(f"the drkit runtime {target} is incomplete: remove it") from None
    site = target / "site"
    try:
        st = os.lstat(site)
    except FileNotFoundError:
        return  # made by the first preparation
    if not stat.S_ISLNK(st.st_mode):
        refuse(site, "is not a link to one of the runtime's own copies")
    if st.st_uid != uid:
        refuse(site, f"is owned by uid {st.st_uid}, not {uid}")
    name = os.readlink(site)
    if not re.fullmatch(r"site-[0-9a-f]{16}", name):
        refuse(site, f"links to {name!r}, not to one of the runtime's own copies")
    try:
        own_directory(target / name)
    except FileNotFoundError:
        raise OperationError(f"the drkit runtime {target} is incomplete: remove it") from None


def _sync_source(source: Path) -> list[Path]:
    """Mirror this drkit package into ``source/drkit`` (cheap: only changed files)."""
    package = Path(__file__).resolve().parent
    dest_pkg = source / "drkit"
    changed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = Path(dirpath).relative_to(package)
        out_dir = dest_pkg / rel
        out_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(out_dir, 0o755)  # noqa: S103 - the cluster's OS user must read it
        for name in filenames:
            if not name.endswith(".py"):
                continue
            src = Path(dirpath) / name
            dst = out_dir / name
            st = src.stat()
            try:
                dst_st = dst.stat()
                if dst_st.st_size == st.st_size and int(dst_st.st_mtime) == int(st.st_mtime):
                    continue
            except FileNotFoundError:
                pass
            tmp = dst.with_name(f".{name}.{os.getpid()}")
            shutil.copy2(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
            changed.append(dst)
    return changed


def prepare_file_repository(url: str, env: str, user: str | None) -> None:
    """Let ``user`` (the cluster's OS user) write WAL into a ``file://`` repository.

    drkit itself may run as root while PostgreSQL's archive_command runs as ``postgres``:
    create ``<root>/<env>/wal`` up front and hand it (and the directories above it that
    drkit created) to that user.  S3 repositories need nothing of the kind.
    """
    if user is None or not url.startswith("file://"):
        return
    import pwd

    from drkit.storage.file import FileBackend

    root = FileBackend.from_url(url).root
    entry = pwd.getpwnam(user)
    wal = root / env / "wal"
    wal.mkdir(parents=True, exist_ok=True)
    for path in (root, root / env, wal):
        st = path.stat()
        if st.st_uid == os.geteuid() and os.geteuid() == 0:
            os.chown(path, entry.pw_uid, entry.pw_gid)
