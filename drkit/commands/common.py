"""What every command shares: the global state, the consoles, the option types, and
``settle``/``emit_json``/``load``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console


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


state = State()
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

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


def settle(json_out: bool = False, policy_dir: Path | None = None) -> State:
    """Merge a command's own --json/--policy-dir with the global ones."""
    if json_out:
        state.json = True
    if policy_dir is not None:
        state.policy_dir = policy_dir
    return state


def emit_json(data: dict[str, Any]) -> None:
    """The command's one ``--json`` document; :func:`run` writes it with ``ok`` (and
    ``error`` when the command then fails), so stdout holds exactly one document."""
    state.document = data


def load(env: str) -> Any:
    """The policy of ENV, from the global or the command's --policy-dir."""
    from drkit.config import load_policy  # lazy: pydantic costs ~0.3 s of start-up

    return load_policy(env, state.policy_dir)


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
