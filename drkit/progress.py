"""Progress events: what core code tells the CLI while it works (it never draws).

A long operation is made of *phases* ("dump", "fetch", "pg_restore", "WAL replay",
"validation", ...), each possibly over several *items* (a database, a table, a file).
Core code emits :class:`ProgressEvent` values through an :data:`OnProgress` sink:

- a first event for a (phase, item) starts it, carrying the ``total`` when one is
  known (``None`` otherwise) and whether that total is only an ``estimate``;
- later events ``advance`` it by a number of ``unit`` (bytes or rows) done since the
  previous event;
- a last event with ``state="done"`` ends it, with the ``seconds`` it took; one with
  ``state="aborted"`` ends a phase that did not complete (an error, Ctrl-C), so nothing
  ever shows a phase as done that was not.

:class:`Meter` is the one helper core code uses to emit them; a ``None`` sink makes it
a no-op.  The rendering (rich, on a TTY only) lives in the CLI layer.  Pure helpers for
the human side (:func:`human_size`, :func:`eta_seconds`) live here so every output
shares one unit system: IEC (KiB, MiB, GiB).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from drkit.streams import CountingReader

Unit = Literal["bytes", "rows"]
State = Literal["running", "done", "aborted"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of one phase of one item (see the module docstring)."""

    phase: str
    item: str = ""
    advance: int = 0
    total: int | None = None
    unit: Unit = "bytes"
    estimate: bool = False
    state: State = "running"
    #: with ``state="done"`` or ``"aborted"``: the phase's wall time for this item
    seconds: float | None = None


OnProgress = Callable[[ProgressEvent], None]


def ignore_progress(_event: ProgressEvent) -> None:
    """The sink that draws nothing (no terminal, ``--json``, ``--quiet``)."""
    return None


def watched(on_progress: OnProgress | None) -> bool:
    """Someone draws these events: work done only for progress (an estimate) is worth it."""
    return on_progress is not None and on_progress is not ignore_progress


class Meter:
    """Emits the events of one (phase, item): ``Meter(...)`` starts it, calling it with a
    count advances it, :meth:`finish` ends it done and :meth:`abort` ends it undone.
    Leaving its ``with`` block finishes it, or aborts it when an exception (an error,
    Ctrl-C's KeyboardInterrupt) leaves the block."""

    def __init__(
        self,
        sink: OnProgress | None,
        phase: str,
        item: str = "",
        *,
        total: int | None = None,
        unit: Unit = "bytes",
        estimate: bool = False,
    ) -> None:
        self.sink = sink
        self.phase = phase
        self.item = item
        self.unit: Unit = unit
        self.started = time.monotonic()
        self._finished = False
        self._lock = threading.Lock()
        self._emit(ProgressEvent(phase, item, 0, total, unit, estimate))

    def _emit(self, event: ProgressEvent) -> None:
        if self.sink is not None:
            self.sink(event)

    def __call__(self, n: int) -> None:
        if n and self.sink is not None:
            self._emit(ProgressEvent(self.phase, self.item, n, unit=self.unit))

    def finish(self) -> float:
        """End the phase as done (once); returns its wall time in seconds."""
        return self._end("done")

    def abort(self) -> float:
        """End the phase as not done (once): it failed or was interrupted."""
        return self._end("aborted")

    def _end(self, state: State) -> float:
        took = time.monotonic() - self.started
        with self._lock:
            if self._finished:
                return took
            self._finished = True
        self._emit(ProgressEvent(self.phase, self.item, unit=self.unit, state=state, seconds=took))
        return took

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


class MeteredReader(CountingReader):
    """A binary stream whose reads advance a :class:`Meter` by the bytes read."""

    def __init__(self, source: Any, meter: Meter) -> None:
        super().__init__(source, meter)


def human_size(n: float) -> str:
    """Bytes in IEC units (1 KiB = 1024 B), the one unit system of drkit's human output:
    pydantic's :meth:`~pydantic.ByteSize.human_readable` (``0 B``, ``1.5 KiB``)."""
    from pydantic import ByteSize

    return ByteSize(int(n)).human_readable(separator=" ")


def human_rate(bytes_per_second: float) -> str:
    return f"{human_size(bytes_per_second)}/s"


def eta_seconds(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the average rate so far; None when it cannot be told (no total,
    nothing done yet, no time elapsed).  Past the total (an estimate exceeded) it is 0."""
    if total is None or done <= 0 or elapsed <= 0:
        return None
    if done >= total:
        return 0.0
    return (total - done) / (done / elapsed)


def percent(done: float, total: float | None) -> float | None:
    """Percent done, capped at 100; None without a (positive) total."""
    if total is None or total <= 0:
        return None
    return min(100.0, 100.0 * done / total)


def duration_text(seconds: float) -> str:
    """``4.2s``, ``3m07s``, ``1h02m``: a short duration for progress lines."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
