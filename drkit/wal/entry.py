"""Every entry PostgreSQL runs, and the helpers they start, in one lean module.

archive_command and restore_command start a process per WAL file, so these entries
import no command-line framework (typer, click, rich: a few hundred milliseconds), and
the fastest ones load no policy either:

- ``drkit wal-push ENV PATH`` and ``drkit wal-fetch ENV NAME PATH`` (``--policy-dir DIR``
  and ``--env-file FILE`` before or after; wal-fetch also ``--repo NAME``, the policy's
  copy of that name instead of the primary repository): the lines users configure.  The env file
  (:mod:`drkit.wal.envfile`) is applied first, so that the policy reads the variables
  ``drkit archive-command`` resolved, not whatever PostgreSQL's environment holds.  drkit's process entry hands every plain
  one to :func:`parse` and :func:`run`; anything else (``--json``, ``-v``, ``--help``,
  another command, a malformed line) goes to the full command line.  An async push
  acknowledged by the worker returns before the policy is read.
- ``python -m drkit.wal fetch [--repo NAME] ENV NAME PATH POLICY_DIR [ENV_FILE]``: the
  restore_command ``drkit archive-command`` prints and a restore writes
  (:func:`fetch_main`; ``--repo``: a recovery from the copy NAME, whose WAL is read from
  that copy alone): a prefetched segment, or one from a plain ``file://`` repository a
  restore named, is served with no policy loaded.
- ``python -m drkit.wal prefetch [--repo NAME] ENV POLICY_DIR SPOOL NAME...``: the
  detached helper that fetches the next segments ahead of replay.
- ``python -m drkit.wal worker ENV POLICY_DIR PG_WAL``: the async archiver's worker, when
  wal-push cannot fork it.
- ``python -m drkit.wal probe``: whether the cluster's OS user can import the WAL code
  (``drkit archive-command`` runs it as that user, through the launcher it will print).

Each keeps the command line's contract: one ``drkit: error: ...`` line with secrets
masked, the error's exit code, 130 on Ctrl-C, and wal-fetch's "1 when it does not exist"
— never above 125 and never a death by signal, which PostgreSQL takes as fatal.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drkit.config import Policy

#: what :func:`parse` returns: (command, positional arguments, policy directory, env file,
#: copy read instead of the primary repository)
Parsed = tuple[str, list[str], str | None, str | None, str | None]

_OWN = {"wal-push": 2, "wal-fetch": 3}  # command -> number of positional arguments


def parse(args: Sequence[str]) -> Parsed | None:
    """(command, positionals, policy dir, env file, copy) for a plain WAL command line,
    else None (``--repo`` on wal-push included: the full command line refuses it)."""
    command: str | None = None
    positionals: list[str] = []
    options: dict[str, str | None] = {"--policy-dir": None, "--env-file": None, "--repo": None}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in options:
            if i + 1 >= len(args):
                return None
            options[arg] = args[i + 1]
            i += 2
            continue
        name, eq, value = arg.partition("=")
        if eq and name in options:
            options[name] = value
        elif arg.startswith("-") and arg != "-":
            return None  # --json, -v, --help, unknown options: the full CLI
        elif command is None:
            if arg not in _OWN:
                return None
            command = arg
        else:
            positionals.append(arg)
        i += 1
    policy_dir, env_file, repo = options["--policy-dir"], options["--env-file"], options["--repo"]
    if command is None or len(positionals) != _OWN[command] or "" in (policy_dir, env_file, repo):
        return None
    if repo is not None and command != "wal-fetch":
        return None
    return command, positionals, policy_dir, env_file, repo


def _apply_env_file(env_file: str | None) -> str | None:
    """Apply the line's env file (:mod:`drkit.wal.envfile`); the error line, if any."""
    if env_file is None:
        return None
    from drkit.errors import DrkitError
    from drkit.wal.envfile import apply_env_file

    try:
        apply_env_file(env_file)
    except DrkitError as exc:
        return f"drkit: error: {exc}"
    return None


def run(parsed: Parsed) -> int:
    """Run a line :func:`parse` accepted; its exit code (the error line written)."""
    command, positionals, policy_dir, env_file, repo = parsed
    problem = _apply_env_file(env_file)
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    if command == "wal-push":
        from drkit.wal.ack import fast_push

        env, path = positionals
        if fast_push(env, path, policy_dir):  # acknowledged by the async archiver's worker
            return 0
    from drkit.logconfig import configure_logging
    from drkit.wal.commands import load_wal_policy

    configure_logging("warning", "text")
    if command == "wal-fetch":
        env, name, dest = positionals
        code, message = run_fetch(
            lambda: load_wal_policy(env, policy_dir, repo), name, dest, policy_dir
        )
        if message:
            sys.stderr.write(fetch_error_line(name, message) + "\n")
        return code
    from drkit.errors import failure
    from drkit.wal.archiver import archive_wal

    env, path = positionals
    try:
        archive_wal(load_wal_policy(env, policy_dir), path, policy_dir)
    except (Exception, KeyboardInterrupt) as exc:  # the last line of defence, as in drkit.cli
        code, line = failure(exc)
        sys.stderr.write(line + "\n")
        return code
    return 0


def fetch_error_line(name: str, message: str) -> str:
    """wal-fetch's one line for a file it could not serve (its exit code is its own)."""
    from drkit.redact import mask_url

    return f"drkit: wal-fetch {name}: {mask_url(message)}"


def run_fetch(
    load: Callable[[], Policy], name: str, dest: Path | str, policy_dir: Path | str | None
) -> tuple[int, str]:
    """wal-fetch for the command line: (exit code, message); never raises.

    0 fetched, 1 not archived or failed.  PostgreSQL treats an exit above 125 or a
    death by signal as fatal, so nothing here may produce one.
    """
    from drkit.errors import DrkitError
    from drkit.wal.fetch import fetch_wal, note_fetch
    from drkit.wal.names import is_segment

    with contextlib.suppress(ValueError, OSError):  # not in the main thread
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    message = ""
    try:
        found = fetch_wal(load(), name, dest, policy_dir=policy_dir)
    except DrkitError as exc:
        message = str(exc)
    except KeyboardInterrupt:
        message = "interrupted"
    except Exception as exc:
        message = f"internal error: {type(exc).__name__}: {exc}"
    if message:
        note_fetch(Path(dest), name, "failed", message)
        return 1, message
    if not found and is_segment(name):
        note_fetch(Path(dest), name, "missing")
    return (0, "") if found else (1, "")


def fetch_main(argv: list[str], repo: str | None = None) -> int:
    """``python -m drkit.wal fetch [--repo NAME] ENV NAME PATH POLICY_DIR [ENV_FILE]``:
    the restore_command drkit writes.

    The same as ``drkit wal-fetch``, minus the command-line framework: a segment already
    in the prefetch spool is renamed into place without loading the policy or any storage
    library, so replay is not held up by interpreter start-up.  ``repo``: the copy of
    that name is read, never the primary repository (a spool filled from another
    repository is not served: the policy is loaded and decides).
    """
    from drkit.wal.fetch import fetch_lean, note_fetch

    env, name, dest, policy_dir, *env_file = argv
    target = Path(dest)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if not target.is_absolute():
            target = Path.cwd() / target
        problem = _apply_env_file(env_file[0] if env_file else None)
        if problem is not None:  # fetched from nowhere rather than from a guessed repository
            note_fetch(target, name, "failed", problem)
            sys.stderr.write(problem + "\n")
            return 1
        found = fetch_lean(env, policy_dir, name, target, repo)
        if found is not None:
            return 0 if found else 1
    except KeyboardInterrupt:
        note_fetch(target, name, "failed", "interrupted")
        return 1
    except Exception as exc:
        note_fetch(target, name, "failed", str(exc))
        sys.stderr.write(fetch_error_line(name, str(exc)) + "\n")
        return 1
    from drkit.wal.commands import load_wal_policy

    code, message = run_fetch(
        lambda: load_wal_policy(env, policy_dir, repo), name, dest, policy_dir
    )
    if message:
        sys.stderr.write(fetch_error_line(name, message) + "\n")
    return code


def worker_main(argv: list[str]) -> int:
    """``python -m drkit.wal worker ENV POLICY_DIR PG_WAL``: the async archiver's worker."""
    from drkit.errors import DrkitError
    from drkit.wal.archiver import run_worker
    from drkit.wal.commands import load_wal_policy

    env, policy_dir, pg_wal = argv
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return run_worker(load_wal_policy(env, policy_dir), policy_dir, Path(pg_wal))
    except (DrkitError, KeyboardInterrupt):
        return 1


def main(argv: Sequence[str]) -> int:
    """``python -m drkit.wal COMMAND ...``: the entries drkit writes and starts itself."""
    args = list(argv)
    repo: str | None = None
    if len(args) >= 3 and args[0] in ("fetch", "prefetch") and args[1] == "--repo":
        repo = args[2]  # before the positionals, so that older lines keep their meaning
        args = [args[0], *args[3:]]
    if args == ["probe"]:  # drkit.wal.commands: the cluster's OS user can import the WAL code
        import drkit.wal.fetch
        import drkit.wal.push  # noqa: F401

        return 0
    if len(args) >= 4 and args[0] == "prefetch":
        from drkit.wal.fetch import run_prefetch

        env, policy_dir, spool, *names = args[1:]
        return run_prefetch(env, policy_dir, spool, names, repo)
    if len(args) in (5, 6) and args[0] == "fetch":
        return fetch_main(args[1:], repo)
    if len(args) == 4 and args[0] == "worker":
        return worker_main(args[1:])
    return 2
