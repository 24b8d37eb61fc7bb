"""What every command shares: the global state, the two terminals, the option types,
and ``settle``/``emit_json``/``load``."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from drkit.documents import Shape


@dataclass
class State:
    policy_dir: Path | None = None
    json: bool = False
    verbose: bool = False
    quiet: bool = False
    #: the command's --json document, written by :func:`run` once the exit code is known
    document: Any = None
    #: the command's outcome is settled (a sanitized copy was published): nothing that
    #: follows (a closed stdout, an interrupt) makes it exit with anything but 0
    settled: bool = False


class Terminal:
    """stdout or stderr as people read it, drawn by a rich Console made when the first
    line is printed: rich costs tens of milliseconds of start-up, and a backup or a
    wal-push prints its line only once the work is done (or nothing, under --json)."""

    #: the variables that let rich call a stream a terminal when it is none
    _FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(stderr=self.stderr, soft_wrap=True)

    def print(self, *objects: Any, **options: Any) -> None:
        """:meth:`rich.console.Console.print`."""
        self.console.print(*objects, **options)

    def may_be_terminal(self) -> bool:
        """False only where rich would not draw either: the stream is no TTY and nothing
        forces one (the console itself has the last word where this is True)."""
        if "console" in self.__dict__:
            return self.console.is_terminal
        if any(os.environ.get(name) for name in self._FORCING):
            return True
        stream = sys.stderr if self.stderr else sys.stdout
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError):  # no stream, or a closed one
            return False


state = State()
out = Terminal()
err = Terminal(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]
PolicyDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy-dir",
        metavar="DIR",
        help="Directory of ENV.yaml policies (default ./policies or $DRKIT_POLICY_DIR).",
        show_default=False,
    ),
]
EnvArg = Annotated[str, typer.Argument(help="Environment: the stem of a policy file.")]
RepoOpt = Annotated[
    str | None,
    typer.Option(
        "--repo",
        metavar="NAME",
        help="Work on the policy's copy NAME (copies.NAME) instead of the primary repository.",
        show_default=False,
    ),
]

# The recovery targets besides --point-in-time, one declaration for restore and drill
TargetXidOpt = Annotated[
    str | None,
    typer.Option(
        "--target-xid",
        metavar="XID",
        help="Physical PITR target: up to the end of this transaction.",
    ),
]
TargetLsnOpt = Annotated[
    str | None,
    typer.Option(
        "--target-lsn", metavar="LSN", help="Physical PITR target: up to this WAL position."
    ),
]
TargetNameOpt = Annotated[
    str | None,
    typer.Option(
        "--target-name",
        metavar="NAME",
        help="Physical PITR target: a restore point recorded by drkit restore-point.",
    ),
]
ImmediateOpt = Annotated[
    bool,
    typer.Option(
        "--immediate",
        help="Physical PITR target: the base backup's consistent point, and no further.",
    ),
]
ExclusiveOpt = Annotated[
    bool,
    typer.Option(
        "--exclusive",
        help="Stop just before the target (with --point-in-time TS, --target-xid, --target-lsn).",
    ),
]


def settle(json_out: bool = False, policy_dir: Path | None = None) -> State:
    """Merge a command's own --json/--policy-dir with the global ones."""
    if json_out:
        state.json = True
    if policy_dir is not None:
        state.policy_dir = policy_dir
    return state


def emit_json(data: Shape) -> None:
    """The command's one ``--json`` document, the model core returned (never a dict the
    command builds: one description per document); :func:`run` writes it with ``ok``
    (and ``error`` when the command then fails), so stdout holds exactly one document.
    A model is written as its producer filled it: a key it did not set is left out."""
    from drkit.documents import dump  # lazy: pydantic

    state.document = dump(data)


def load(env: str, repo: str | None = None) -> Any:
    """The policy of ENV, from the global or the command's --policy-dir; with ``repo``
    (``--repo NAME``), ENV as seen in its copy NAME: the copy's repository and retention
    (:meth:`drkit.config.Policy.for_copy`), so the command runs unchanged against it."""
    from drkit.config import load_policy  # lazy: pydantic costs ~0.3 s of start-up

    policy = load_policy(env, state.policy_dir)
    return policy if repo is None else policy.for_copy(repo)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends a drill or a sanitize run like Ctrl-C: the scratch cluster is torn
    down, the build dropped, on the way out.  Once the command's outcome is settled
    (:attr:`State.settled`), SIGTERM and SIGINT are ignored: there is nothing left to
    undo."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        if not state.settled:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def settle_outcome() -> None:
    """The command's outcome is settled: from now on it exits 0 (see :attr:`State.settled`)."""
    state.settled = True
