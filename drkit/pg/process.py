"""Running pg_dump, pg_restore, pg_basebackup as streaming subprocesses.

Argument lists only (never a shell), stderr drained by a thread and surfaced in the
error when the program fails, exit codes checked, and the child killed and reaped if
the caller fails half-way, so nothing hangs and nothing is left running.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from drkit.errors import SubprocessError

log = logging.getLogger(__name__)

_STDERR_LINES = 50
#: what the leader of a parallel pg_dump / pg_restore says once one of its workers
#: failed; the worker's own error line, earlier, says why (disk full, lost connection)
_CONSEQUENCES = ("a worker process died unexpectedly", "worker process failed")


def _is_error(line: str) -> bool:
    lowered = line.lower()
    return "error" in lowered or "fatal" in lowered


#: what a pipe from a dumping child holds: Linux's default of 64 KiB makes the reader
#: wake (and zstd take its input) in 64 KiB pieces; 1 MiB is the unprivileged maximum
PIPE_SIZE = 1024 * 1024


def widen_pipe(pipe: IO[bytes], size: int = PIPE_SIZE) -> None:
    """Ask Linux for a ``size`` pipe buffer (best effort: other systems keep theirs)."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError, ValueError) as exc:
        log.debug("pipe buffer left as it is: %s", exc)


class PipeProcess:
    """A child process whose stdin or stdout is a pipe the caller streams through."""

    def __init__(
        self,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        what: str | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        user: str | None = None,
    ) -> None:
        self.what = what or Path(args[0]).name
        log.debug("running %s", Path(args[0]).name)
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=dict(env) if env is not None else None,
                user=user,
                bufsize=0,
            )
        except FileNotFoundError:
            raise SubprocessError(f"{self.what}: program {args[0]} not found") from None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        # kept apart: --verbose chatter after an error must not push it out of the tail
        self._errors: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                if _is_error(line):
                    self._errors.append(line)
                log.debug("%s: %s", self.what, line)

    def stderr_tail(self) -> str:
        """The line that says why the program failed: its last error, skipping a parallel
        leader's "a worker process died" for the worker's own reason; else its last line."""
        lines = [line for line in self._stderr if line.strip()]
        errors = list(self._errors)
        causes = [line for line in errors if not any(c in line for c in _CONSEQUENCES)]
        return (causes or errors or lines or ["no error output"])[-1]

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a clean exit; anything else raises SubprocessError with stderr's gist."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SubprocessError(f"{self.what} did not finish within {timeout}s") from None
        self._reader.join(timeout=5)
        if code != 0:
            raise SubprocessError(f"{self.what} failed (exit {code}): {self.stderr_tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def __enter__(self) -> PipeProcess:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None or self.proc.poll() is None:
            self.kill()
