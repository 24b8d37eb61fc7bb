"""The command lines PostgreSQL itself runs: ``archive_command`` and ``restore_command``.

PostgreSQL runs them as its own OS user (``postgres`` when drkit runs as root), so that
user must be able to start drkit.  In a normal install (a system-wide ``pip install``,
the container image) it can, and ``drkit`` on PATH is used.  When drkit runs from a
Python the cluster user cannot reach (a virtualenv under ``/root``, as on a developer
machine or in CI), root prepares a *runtime*: the same site packages copied into
``/var/lib/drkit/runtime/drkit-runtime-<hash>`` (one per interpreter and drkit checkout;
an install swaps in a new copy and the old one goes), run by the system Python of the
same minor version.  ``$DRKIT_CLUSTER_COMMAND`` overrides all of this.

The runtime is code PostgreSQL runs for every WAL file, so it is trusted at use time,
not once: the command line itself (``python -I -S -c CODE``, nothing read from the
environment, the working directory, site-packages or the runtime first) walks every directory from the runtime's ``src`` and
``site`` up to ``/``, symlinks resolved, and runs nothing unless each is owned by root
or the cluster's OS user and writable by no one else.  A runtime that was removed and
re-created by another user (``/var/tmp`` was its home once, writable by everyone) makes
archive_command fail with one line naming the path, never exit 0.  Only root prepares a
runtime, in a directory only root can write along its whole path.

Everything placed on these command lines is escaped for PostgreSQL, which expands
``%p``/``%f``/``%r``/``%%`` in them: a ``%`` in a path is written ``%%``.

Policies used by these commands need only their ``repository`` section: the database
URL (and its password) does not have to be in PostgreSQL's environment
(:func:`load_wal_policy`).  The helpers a WAL command starts (the prefetch helper, the
async archiver's worker) are started the way it was started itself (:func:`module_argv`).

The lean entries import this module: what only preparing a runtime needs (copying
site-packages) is imported there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from drkit.errors import OperationError, UsageError

if TYPE_CHECKING:
    import importlib.metadata

    from drkit.config import Policy

log = logging.getLogger(__name__)

#: the drkit package (this module is drkit/wal/commands.py): what a runtime mirrors
_PACKAGE = Path(__file__).resolve().parents[1]

COMMAND_ENV = "DRKIT_CLUSTER_COMMAND"
RUNTIME_ROOT_ENV = "DRKIT_RUNTIME_DIR"
#: where root prepares runtimes: a directory only root can write, along its whole path
DEFAULT_RUNTIME_ROOT = "/var/lib/drkit/runtime"
#: PostgreSQL 15 and older cut an archive_command at this many characters, silently
MAX_COMMAND_LENGTH = 1023

#: ``W(path, uids)``: the first directory on ``path``'s chain (``path`` itself, symlinks
#: resolved, up to ``/``) that is missing, owned by a uid not in ``uids``, or writable by
#: group or others (mode & 0o022 = 18), as a phrase; None when the chain is sound.  One
#: line of expressions: it runs inline in the command line PostgreSQL runs (where nothing
#: may be imported from the runtime it checks) and, the same source, when root prepares one.
_CHAIN_CHECK = (
    'A=lambda p:[p]+A(os.path.dirname(p)) if p!="/" else [p];'
    'W=lambda p,u:next((q+(" is missing" if s is None else " is writable by group or others"'
    ' if s.st_mode&18 else " is owned by uid "+str(s.st_uid)) for q in A(os.path.realpath(p))'
    " for s in[os.lstat(q) if os.path.lexists(q) else None]"
    " if s is None or s.st_uid not in u or s.st_mode&18),None)"
)

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
    "cronsim",  # a policy's schedule is checked on load (drkit.cron)
    "prometheus_client",
    "python-json-logger",  # --log-format json (drkit.logconfig)
    "sqlglot",
)


def _load_chain_check() -> Any:
    namespace: dict[str, Any] = {"os": os}
    exec(_CHAIN_CHECK, namespace)  # noqa: S102 - a constant: the source the command line runs
    return namespace["W"]


_chain_problem = _load_chain_check()


def chain_problem(path: Path, uids: tuple[int, ...]) -> str | None:
    """Why ``path`` is not trusted (see :data:`_CHAIN_CHECK`), or None."""
    problem = _chain_problem(str(path), uids)
    return None if problem is None else str(problem)


def runtime_bootstrap(target: Path) -> str:
    """The Python code (one line, for ``python -I -S -c``) that runs a drkit module from the
    runtime ``target`` only after checking its chain as the user running it; the module
    and its arguments follow on the command line.  It records how it was started in
    ``sys.drkit_launcher``, so the helpers drkit starts are checked the same way."""
    return (
        f"import os,sys;R={json.dumps(str(target))};{_CHAIN_CHECK};"
        'P=[os.path.realpath(R+x) for x in("/src","/site")];'
        "M=[m for m in(W(p,(0,os.geteuid())) for p in P) if m];"
        'M and sys.exit("drkit: error: untrusted drkit runtime "+R+": "+M[0]+"; as root,'
        ' remove it and run drkit archive-command again");'
        'sys.path[:0]=P;sys.drkit_launcher=sys.orig_argv[:sys.orig_argv.index("-c")+2];'
        "import runpy;"
        'runpy.run_module(sys.argv.pop(1),run_name="__main__",alter_sys=True)'
    )


def _can_run(launcher: list[str], user: str | None) -> str | None:
    """Why ``user`` cannot import drkit's WAL code through ``launcher`` (an argv that runs
    the module named after it), or None when it can."""
    try:
        proc = subprocess.run(
            [*launcher, "drkit.wal", "probe"],
            user=user,
            env=dict(os.environ),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


@functools.lru_cache(maxsize=8)
def _python_for(user: str | None) -> tuple[str, ...]:
    """The argv prefix with which ``user`` runs a drkit module: the module's name and its
    arguments follow (``python -m`` here; the runtime's checked launcher otherwise)."""
    here = [sys.executable, "-m"]
    if user is None or (reachable_by(Path(sys.executable), user) and not _can_run(here, user)):
        return tuple(here)
    runtime = shared_runtime()
    # -I: nothing from the environment or the working directory; -S: no site module, so
    # no .pth file or sitecustomize of the system's site-packages runs first either
    launcher = [runtime.python, "-I", "-S", "-c", runtime_bootstrap(runtime.target)]
    problem = _can_run(launcher, user)
    if problem is not None:
        raise OperationError(
            f"the cluster's OS user {user!r} cannot run drkit (tried {sys.executable} and "
            f"the runtime {runtime.target}: {problem}): install drkit system-wide or set "
            f"{COMMAND_ENV} to a drkit command that user can run"
        )
    return tuple(launcher)


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


def module_argv(module: str) -> list[str]:
    """The argv that starts drkit's ``module`` as this process was started: through the
    runtime's checked launcher when PostgreSQL started it so (:func:`runtime_bootstrap`),
    else ``python -m``."""
    launcher = getattr(sys, "drkit_launcher", None)
    if isinstance(launcher, list) and launcher:
        return [*launcher, module]
    return [sys.executable, "-m", module]


def load_wal_policy(
    env: str, policy_dir: Path | str | None = None, repo: str | None = None
) -> Policy:
    """The policy, validated, without needing its database URL; with ``repo``, as seen
    in its copy of that name (a name the policy no longer has is a usage error).

    archive_command and restore_command run in PostgreSQL's environment, which has no
    reason to hold the database password; only the repository section is used.
    """
    from drkit.config import load_policy, parse_policy, policy_path, read_yaml
    from drkit.errors import PolicyError

    path = policy_path(env, policy_dir)
    if not path.exists():
        return load_policy(env, policy_dir)  # raises the usual "no policy" error
    raw = read_yaml(path, PolicyError)
    if isinstance(raw, dict) and "database" in raw:
        raw = {**raw, "database": {"url": "postgresql:///unused-by-wal-commands"}}
    policy = parse_policy(env, raw, str(path))
    return policy if repo is None else policy.for_copy(repo)


def drkit_argv(user: str | None) -> list[str]:
    """The argv with which ``user`` runs the ``drkit`` command."""
    override = os.environ.get(COMMAND_ENV)
    if override:
        return shlex.split(override)
    return [*_python_for(user), "drkit"]


PLACEHOLDERS = ("%p", "%f", "%r")


def command_line(words: list[str]) -> str:
    """One shell command line for postgresql.conf: each word quoted for the shell, then
    every ``%`` doubled for PostgreSQL (which expands ``%p``/``%f``/``%r`` and turns ``%%``
    into ``%``), except the placeholders themselves."""
    return " ".join(w if w in PLACEHOLDERS else shlex.quote(w).replace("%", "%%") for w in words)


def _checked_length(line: str, name: str) -> str:
    if len(line) > MAX_COMMAND_LENGTH:
        raise UsageError(
            f"the {name} drkit would print is {len(line)} characters and PostgreSQL 15 and "
            f"older cut it at {MAX_COMMAND_LENGTH}: use a shorter policy directory path"
        )
    return line


def archive_command(
    env: str, policy_dir: Path, user: str | None, env_file: Path | None = None
) -> str:
    """The ``archive_command`` line: ``drkit wal-push ENV %p`` run as ``user`` (with
    ``env_file``: applied before the policy is read, :mod:`drkit.wal.envfile`)."""
    words = [*drkit_argv(user), "wal-push", env, "%p", "--policy-dir", str(policy_dir.resolve())]
    if env_file is not None:
        words += ["--env-file", str(env_file)]
    return _checked_length(command_line(words), "archive_command")


def restore_command(
    env: str,
    policy_dir: Path,
    user: str | None,
    env_file: Path | None = None,
    repo: str | None = None,
) -> str:
    """``drkit wal-fetch`` through its lean entry point (``python -m drkit.wal fetch``).

    Equivalent to ``drkit wal-fetch ENV %f %p --policy-dir DIR``; it skips the
    command-line framework so that segments already prefetched are served in
    milliseconds.  An overriding ``$DRKIT_CLUSTER_COMMAND`` gets the plain form.
    ``repo``: the copy of that name (``--repo NAME``) is read instead of the primary
    repository, so that a recovery from a copy takes its WAL from where its base backup
    came from.
    """
    directory = str(policy_dir.resolve())
    if os.environ.get(COMMAND_ENV):
        words = [*drkit_argv(user), "wal-fetch", env, "%f", "%p", "--policy-dir", directory]
        words += ["--env-file", str(env_file)] if env_file is not None else []
        words += ["--repo", repo] if repo is not None else []
    else:
        words = [*_python_for(user), "drkit.wal", "fetch"]
        words += ["--repo", repo] if repo is not None else []
        words += [env, "%f", "%p", directory]
        words += [str(env_file)] if env_file is not None else []
    return command_line(words)


# ---------------------------------------------------------------------------
# A runtime readable by the cluster user
# ---------------------------------------------------------------------------


class Runtime:
    def __init__(self, python: str, target: Path) -> None:
        self.python = python
        self.target = target
        self.site = target / "site"
        self.pythonpath = [target / "src", self.site]


#: how long a superseded copy of site-packages is kept for processes still starting on it
SITE_GRACE_SECONDS = 15 * 60


def _closure(roots: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    import importlib.metadata

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
def shared_runtime() -> Runtime:
    """The runtime of this interpreter and this drkit checkout, its copy of site-packages
    current.

    One directory per interpreter, site-packages and drkit package (its name never
    changes, so the archive_command a cluster was given stays valid): ``src`` mirrors the
    drkit package, and ``site`` is a link to an immutable copy of site-packages,
    ``site-<state>``.  When site-packages changes (an install changes its mtime), a new
    copy is built aside and the link swapped to it in one rename; copies superseded for
    longer than :data:`SITE_GRACE_SECONDS` are removed, so installs no longer leave a
    copy each behind."""
    import shutil
    import sysconfig
    import tempfile

    python = _system_python()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    # the drkit source mirrored into it is this package's: two checkouts of drkit beside
    # one Python (worktrees, a test run next to an install) must not share a runtime
    package = _PACKAGE
    identity = hashlib.sha256(f"{sys.version}\n{site_packages}\n{package}\n".encode())
    root = _runtime_root()
    target = root / f"drkit-runtime-{identity.hexdigest()[:16]}"
    if not target.exists():
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
    return Runtime(python, target)


def _runtime_root() -> Path:
    """Where root keeps runtimes, created if need be: a directory only root can write,
    along its whole path (a runtime anyone could re-create would be run by PostgreSQL)."""
    if os.geteuid() != 0:
        raise OperationError(
            "the cluster's OS user cannot run drkit from "
            f"{sys.executable}, and only root prepares a runtime it can: install drkit "
            f"system-wide, run this as root, or set {COMMAND_ENV}"
        )
    root = Path(os.environ.get(RUNTIME_ROOT_ENV) or DEFAULT_RUNTIME_ROOT)
    missing = [p for p in (root, *root.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o755)
            os.chmod(directory, 0o755)  # noqa: S103 - the cluster's OS user reads it
    problem = chain_problem(root, (0,))
    if problem is not None:
        raise OperationError(
            f"refusing the drkit runtime root {root}: {problem}; set {RUNTIME_ROOT_ENV} to "
            "a directory only root can write, along its whole path"
        )
    return root


def _site_state(site_packages: Path) -> str:
    """What identifies the copy to run: the contents of site-packages (installs change
    its mtime) and the distributions copied (a drkit that needs one more gets a new copy)."""
    try:
        mtime = str(site_packages.stat().st_mtime_ns)
    except OSError:
        mtime = "0"
    return hashlib.sha256("\n".join((mtime, *_RUNTIME_DISTS)).encode()).hexdigest()[:16]


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
    import shutil
    import tempfile

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
    import shutil

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
    """Write into an existing runtime only if this user (root) made it and nobody else
    can change it.

    The runtime's name is predictable and drkit writes into it as root: a directory
    planted there would be run by PostgreSQL's archive_command and could turn root's
    writes elsewhere.  Its tree must be real directories owned by this user and writable
    by no one else, and ``site`` a link this user made to one of the runtime's own
    ``site-*`` copies; otherwise drkit refuses to use it.  (The command line PostgreSQL
    runs checks the runtime again, each time, before running any of it.)
    """
    uid = os.geteuid()

    def refuse(path: Path, problem: str) -> NoReturn:
        raise OperationError(
            f"refusing the drkit runtime {target}: {path} {problem}; as root, remove "
            f"{target} (drkit rebuilds it)"
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
    import shutil

    package = _PACKAGE
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

    drkit itself may run as root while PostgreSQL's archive_command runs as ``postgres``,
    which writes ``<root>/<env>/wal/*`` and the records beside it (``<env>/*.json``).
    The directories this call creates are made for that user (``<env>`` and ``wal``
    handed to it; the repository root and the directories above it stay root's and only
    traversable); a directory that already existed keeps its owner: the repository root
    may be shared with other data.  One the user cannot write is refused (exit 4),
    saying what to do.  S3 repositories need nothing of the kind.
    """
    if user is None:
        return
    from drkit.storage import local_root

    root = local_root(url)
    if root is None:
        return
    import pwd

    from drkit.errors import SafetyRefused

    entry = pwd.getpwnam(user)
    mine = [root / env, root / env / "wal"]
    for path in [*reversed(root.parents), root, *mine]:
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            if path in mine and not writable_by(path, user):
                raise SafetyRefused(
                    f"{path} exists and the cluster's OS user {user} cannot write to it; "
                    f"drkit hands over only directories it creates: give it to {user} "
                    f"(chown {user} {path}) or use a repository whose {env}/wal does not "
                    "exist yet"
                ) from None
            continue
        os.chmod(path, 0o755)  # noqa: S103 - the cluster's OS user traverses it
        if path in mine and os.geteuid() == 0:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    if not reachable_by(mine[-1] / "segment", user):
        raise SafetyRefused(
            f"the cluster's OS user {user} cannot reach {mine[-1]} (a directory above it is "
            "not traversable for it): let it traverse the repository's path, or use "
            "another repository path"
        )


def writable_by(path: Path, user: str) -> bool:
    """Whether ``user`` may create entries in the directory ``path`` (mode bits only)."""
    import pwd

    entry = pwd.getpwnam(user)
    st = path.stat()
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        bits = 0o300
    elif st.st_gid in os.getgrouplist(user, entry.pw_gid):
        bits = 0o030
    else:
        bits = 0o003
    return stat.S_ISDIR(st.st_mode) and st.st_mode & bits == bits
