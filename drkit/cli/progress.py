"""Progress for people: rich bars drawn from core's :class:`drkit.progress.ProgressEvent`.

Part of the CLI layer (only it draws).  On a TTY, each running (phase, item) is one
line: the phase label, the item, and

- with a known total: a bar, the percent, done/total, the rate and the ETA
  (``≈`` marks a total that is an estimate, e.g. a dump's, from its tables' data);
- without one: a spinner, the amount done and the rate.

When a phase ends, a permanent line says it is done and how long it took (a drill's
phases, a restore's fetch/pg_restore/row counts), unless ``quiet_done`` (a sanitize
copies hundreds of tables).  A phase that ended aborted (an error, Ctrl-C) just
disappears: no ✓ for what did not complete; the command's error line says what
happened.  Sizes are IEC (KiB, MiB, GiB) like all human output.
Off a TTY, under ``--json`` or ``--quiet`` nothing is drawn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from drkit.progress import (
    OnProgress,
    ProgressEvent,
    duration_text,
    eta_seconds,
    human_size,
    ignore_progress,
    percent,
)


def amount_text(n: float, unit: str) -> str:
    """``12.3 MiB`` or ``1,234 rows``."""
    return human_size(n) if unit == "bytes" else f"{n:,.0f} {unit}"


def rate_text(per_second: float | None, unit: str) -> str:
    if per_second is None:
        return ""
    return f"{human_size(per_second)}/s" if unit == "bytes" else f"{per_second:,.0f} {unit}/s"


@dataclass(frozen=True)
class Snapshot:
    """What one progress line says, from a task's numbers (pure: unit tested)."""

    done: float
    total: float | None
    unit: str
    estimate: bool
    elapsed: float

    def text(self) -> str:
        mark = "≈" if self.estimate else ""
        parts: list[str] = []
        share = percent(self.done, self.total)
        if share is not None and self.total is not None:
            if self.estimate and self.done >= self.total:
                parts.append("≈99%")  # the estimate is passed; not done yet
            else:
                parts.append(f"{mark}{share:3.0f}%")
            parts.append(
                f"{amount_text(self.done, self.unit)}/{mark}{amount_text(self.total, self.unit)}"
            )
        elif self.done > 0:  # a phase that counts nothing shows its time only
            parts.append(amount_text(self.done, self.unit))
        rate = self.done / self.elapsed if self.elapsed > 0 and self.done > 0 else None
        if rate is not None:
            parts.append(rate_text(rate, self.unit))
        eta = eta_seconds(self.done, self.total, self.elapsed)
        if eta is not None and eta > 0:
            parts.append(f"ETA {duration_text(eta)}")
        elif self.total is None or eta is None:
            parts.append(duration_text(self.elapsed))
        return "  ".join(parts)


class _Numbers(ProgressColumn):
    """Percent, done/total, rate and ETA (or elapsed) of a task."""

    def render(self, task: Task) -> Text:
        snap = Snapshot(
            done=task.completed,
            total=task.fields.get("real_total"),
            unit=str(task.fields.get("unit", "bytes")),
            estimate=bool(task.fields.get("estimate", False)),
            elapsed=task.elapsed or 0.0,
        )
        return Text(snap.text())


class _Bar(BarColumn):
    """A bar only where a total is known (a spinner says the rest)."""

    def render(self, task: Task) -> Text:  # type: ignore[override]
        if task.fields.get("real_total") is None:
            return Text("")
        return super().render(task)  # type: ignore[return-value]


def done_line(label: str, item: str, done: float, unit: str, seconds: float) -> str:
    """The permanent line a finished phase leaves: ``✓ fetch app: 1.2 MiB in 0.3s``."""
    what = f"{label} {item}".strip()
    amount = f"{amount_text(done, unit)} in " if done else ""
    return f"✓ {what}: {amount}{duration_text(seconds)}"


@contextmanager
def progress_events(
    console: Console,
    *,
    enabled: bool,
    titles: Mapping[str, str] | None = None,
    quiet_done: bool = False,
) -> Iterator[OnProgress]:
    """A sink for core's progress events, drawn on ``console`` while the block runs.

    ``enabled`` False (not a TTY, --json, --quiet): the sink ignores everything.
    ``titles`` maps phase names to labels (a drill's ``restore`` -> ``pg_restore``)."""
    if not enabled or not console.is_terminal:
        yield ignore_progress
        return
    names = dict(titles or {})
    lock = threading.Lock()
    tasks: dict[tuple[str, str], TaskID] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        _Bar(bar_width=24),
        _Numbers(),
        console=console,
        transient=True,
    ) as progress:

        def on_event(event: ProgressEvent) -> None:
            key = (event.phase, event.item)
            label = names.get(event.phase, event.phase)
            with lock:
                task = tasks.get(key)
                if task is None:
                    if event.state != "running":
                        return
                    description = f"{label} {event.item}".strip()
                    task = progress.add_task(
                        description,
                        total=event.total,
                        real_total=event.total,
                        unit=event.unit,
                        estimate=event.estimate,
                    )
                    tasks[key] = task
                    progress.refresh()  # drawn now, even if the phase is short
                if event.advance:
                    progress.advance(task, event.advance)
                    real = progress.tasks[_index(progress, task)]
                    total = real.fields.get("real_total")
                    if total is not None and real.completed > total:  # an estimate passed
                        progress.update(task, total=real.completed)
                if event.state == "aborted":  # failed or interrupted: no ✓, the error says
                    progress.remove_task(task)
                    del tasks[key]
                elif event.state == "done":
                    real = progress.tasks[_index(progress, task)]
                    if not quiet_done:
                        progress.console.print(
                            done_line(
                                label,
                                event.item,
                                real.completed,
                                event.unit,
                                event.seconds or 0.0,
                            ),
                            markup=False,
                            highlight=False,
                        )
                    progress.remove_task(task)
                    del tasks[key]

        yield on_event


def _index(progress: Progress, task_id: TaskID) -> int:
    for i, task in enumerate(progress.tasks):
        if task.id == task_id:
            return i
    raise KeyError(task_id)
