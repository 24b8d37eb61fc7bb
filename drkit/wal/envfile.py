"""The environment a policy needs, pinned for the commands PostgreSQL runs.

A policy's ``${VAR}`` resolve in the environment of the process that reads it.  The
``archive_command`` and ``restore_command`` lines run in PostgreSQL's environment, not in
the shell of whoever ran ``drkit archive-command``: under systemd or ``env -i`` a
``${S3_BUCKET}`` is unset (wal-push fails), and a ``${S3_ENDPOINT:-}`` silently becomes
the default (WAL goes to AWS instead of the MinIO the backups use).  So
``drkit archive-command`` resolves them where it runs and writes them to an *env file*
named on the lines it prints (``--env-file PATH``); the WAL entry applies it before it
reads the policy, so both lines see exactly what ``archive-command`` saw:

- every variable the policy names outside its ``database`` section (the WAL commands
  never read the database url), set to its value here or recorded as unset;
- the settings the repository's driver reads (its backend model's
  ``environment_prefixes``: for ``s3://``, the ``AWS_*`` settings boto3 reads —
  credentials, region, profile, endpoint — and drkit's own ``DRKIT_S3_*``), and
  ``DRKIT_AGE_IDENTITY_FILE``, when set here.

The file is JSON, mode 0600, owned by the cluster's OS user, published atomically
(written aside, then renamed) in a directory only root (or that user) can write along
its whole path: ``/var/lib/drkit/env`` for root, ``$DRKIT_ENV_DIR`` to choose another.
Before applying one, the WAL entry refuses a file another user owns or others can
read or write, or one in a directory others could swap.  The values (credentials among
them) never reach output, logs or exception text: only names and the path do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from drkit.errors import OperationError, UsageError

ENV_DIR_ENV = "DRKIT_ENV_DIR"
DEFAULT_ENV_DIR = "/var/lib/drkit/env"

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-.*?)?\}")
_ALWAYS = ("DRKIT_AGE_IDENTITY_FILE",)
_FORMAT = 1


def referenced_variables(raw: Any, *, skip: tuple[str, ...] = ("database",)) -> list[str]:
    """The ``${VAR}`` names of a parsed policy document, outside the ``skip`` sections."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            names.extend(m.group(1) for m in _VAR_RE.finditer(node))

    if isinstance(raw, dict):
        walk({k: v for k, v in raw.items() if k not in skip})
    return list(dict.fromkeys(names))


def wal_environment(
    raw: Any, driver_prefixes: tuple[str, ...], environ: dict[str, str] | None = None
) -> dict[str, str | None]:
    """Name -> value (None: unset) of everything the WAL commands of this policy read
    from their environment, as ``environ`` (this process's) has it: the policy's own
    variables, and those its repository's driver reads (``driver_prefixes``, the
    backend model's ``environment_prefixes``)."""
    environ = dict(os.environ) if environ is None else environ
    pinned: dict[str, str | None] = {n: environ.get(n) for n in referenced_variables(raw)}
    wanted = _ALWAYS + driver_prefixes
    for name in sorted(environ):
        if name.startswith(wanted):
            pinned[name] = environ[name]
    return pinned


def env_dir() -> Path:
    """Where env files go: ``$DRKIT_ENV_DIR``, else /var/lib/drkit/env (root) or the
    user's own state directory."""
    configured = os.environ.get(ENV_DIR_ENV)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path(DEFAULT_ENV_DIR)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "drkit" / "env"


def env_file_path(env: str, policy_dir: Path) -> Path:
    """The env file of ``env``'s policy in ``policy_dir`` (one per policy file)."""
    digest = hashlib.sha256(str(policy_dir.resolve()).encode()).hexdigest()[:16]
    return env_dir() / f"{env}-{digest}.json"


def _directory_problem(directory: Path, uids: tuple[int, ...]) -> str | None:
    from drkit.wal.commands import chain_problem

    return chain_problem(directory, uids)


def write_env_file(
    env: str, policy_dir: Path, values: dict[str, str | None], user: str | None
) -> Path:
    """Publish ``values`` as ``env``'s env file for the cluster's OS user ``user`` (None:
    this user), atomically; refuse (exit 2) a directory others could write."""
    import pwd

    owner = pwd.getpwnam(user).pw_uid if user else os.geteuid()
    gid = pwd.getpwnam(user).pw_gid if user else os.getegid()
    path = env_file_path(env, policy_dir)
    directory = path.parent
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=0o755)
            os.chmod(new, 0o755)  # noqa: S103 - the cluster's OS user reads its file in it
    problem = _directory_problem(directory, (0, os.geteuid()))
    if problem is not None:
        raise UsageError(
            f"refusing to write the env file of {env} in {directory}: {problem}; set "
            f"{ENV_DIR_ENV} to a directory only root can write, along its whole path"
        )
    doc = {
        "format": _FORMAT,
        "environment": env,
        "policy_dir": str(policy_dir.resolve()),
        "set": {k: v for k, v in values.items() if v is not None},
        "unset": sorted(k for k, v in values.items() if v is None),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{env}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(doc, f, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chown(tmp, owner, gid)
        except PermissionError:
            raise OperationError(
                f"cannot give the env file of {env} to the OS user {user}: run drkit "
                "archive-command as root, or as that user"
            ) from None
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def apply_env_file(path: str | Path) -> list[str]:
    """Make this process's environment what the env file says (before the policy is
    read); the names it set or unset.  A file that is missing, not this user's (or
    root's), readable or writable by others, in a directory others could change, or
    not drkit's format fails (exit 1): the WAL command must not guess."""
    path = Path(path)
    euid = os.geteuid()
    problem = _directory_problem(path.parent, (0, euid))
    if problem is None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problem = "is missing"
        else:
            if not stat.S_ISREG(st.st_mode):
                problem = "is not a regular file"
            elif st.st_uid not in (0, euid):
                problem = f"is owned by uid {st.st_uid}"
            elif st.st_mode & 0o077:
                problem = f"is open to others (mode {stat.S_IMODE(st.st_mode):o}, not 600)"
    if problem is not None:
        raise OperationError(
            f"env file {path} {problem}: run drkit archive-command again and set the "
            "lines it prints"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        values = doc["set"]
        unset = doc["unset"]
        valid = doc.get("format") == _FORMAT and isinstance(values, dict)
        valid = valid and all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
        valid = valid and isinstance(unset, list) and all(isinstance(n, str) for n in unset)
    except (OSError, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise OperationError(
            f"env file {path} is not one drkit wrote: run drkit archive-command again"
        )
    for name in unset:
        os.environ.pop(name, None)
    os.environ.update(values)
    return [*values, *unset]
