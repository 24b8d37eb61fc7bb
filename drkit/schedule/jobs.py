"""The jobs ``drkit schedule run`` runs: one row each.

A job's name is its policy schedule key (``schedule: {logical_backup: "0 2 * * *"}``,
one field of :class:`drkit.config.ScheduleConfig`, which validates the expression).  Its
row says what it runs, what it leaves in the repository (so the daemon, after a
restart, takes its last success from the catalog, and ``/metrics`` groups the expected
intervals by backup kind) and what its schedule key means in the policy reference.

Adding a job is a row here and its key in ``ScheduleConfig``; a test checks the two
name the same jobs.  What a job runs is imported when it runs: the daemon starts
without the backup, prune and drill code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from drkit.errors import DrkitError
from drkit.redact import mask_url

if TYPE_CHECKING:
    from drkit.config import Policy

#: what a job leaves in the repository: a backup of that kind, or a drill report
Makes = Literal["logical", "physical", "drill"]
#: how a scheduled run ended (``missed``: APScheduler started it too late, never)
RUN_STATUSES = ("success", "failure", "skipped", "missed")


@dataclass(frozen=True)
class Job:
    """One schedulable job; calling it runs it for one policy."""

    name: str
    doc: str  # what the schedule key means (the policy reference)
    run: Callable[[Policy], Any]
    makes: Makes | None = None

    def __call__(self, policy: Policy) -> Any:
        return self.run(policy)


def _logical_backup(policy: Policy) -> Any:
    from drkit.backup import backup_logical  # the size picks the dump format

    return backup_logical(policy)


def _physical_backup(policy: Policy) -> Any:
    from drkit.backup import run_physical_backup

    return run_physical_backup(policy)


def _physical_incremental_backup(policy: Policy) -> Any:
    from drkit.backup import run_physical_backup

    return run_physical_backup(policy, incremental=True)


def _copy(policy: Policy) -> Any:
    """``drkit copy ENV``: every copy brought up to date; any copy failing fails the run."""
    from drkit.backup import copy_all

    results = copy_all(policy)
    failed = next((r.error for r in results if r.error is not None), None)
    if failed is not None:
        raise failed
    return results


def _then_copy(backup: Callable[[Policy], Any]) -> Callable[[Policy], Any]:
    """A backup job followed by the copy, where the policy has copies: a backup is not
    done until its copies hold it (a failed copy fails the run; the backup stays)."""

    def run(policy: Policy) -> Any:
        result = backup(policy)
        if policy.copies:
            _copy(policy)
        return result

    return run


def _prune(policy: Policy) -> Any:
    """The primary, then each copy with its own retention (``drkit prune ENV`` and
    ``drkit prune ENV --repo NAME``)."""
    from drkit.backup import prune_policy, refuse_same_repository
    from drkit.storage import Repository

    result = prune_policy(policy)
    for name in sorted(policy.copies):
        copy = policy.for_copy(name)
        primary, held = Repository.for_policy(policy), Repository.for_policy(copy)
        try:
            refuse_same_repository(primary, held, name)  # never the primary by another name
        finally:
            primary.close()
            held.close()
        prune_policy(copy)
    return result


def _drill(policy: Policy) -> Any:
    """A drill that does not PASS is a failed job."""
    from drkit.drill import run_drill

    result = run_drill(policy)
    verdict = getattr(result, "verdict", None)
    if verdict is not None and str(verdict).upper() != "PASS":
        raise DrkitError(f"drill verdict {verdict}")
    return result


def _sanitize(policy: Policy) -> Any:
    """Refresh this environment from ``schedule.sanitize.source`` through the rules.

    The copy replaces the one the previous run published (``force``: refreshing is the
    job); every guard of ``drkit sanitize`` still holds (direction, protected targets,
    leak scan), and a leak is a failed run.
    """
    from drkit.config import load_policy
    from drkit.sanitize import Options, sanitize

    planned = policy.schedule.sanitize
    if planned is None:
        raise DrkitError(f"{policy.source}: schedule.sanitize is not set")
    source = load_policy(planned.source, Path(policy.source).parent)
    return sanitize(source, policy, Options(rules_path=planned.rules, force=True))


_ROWS = (
    Job(
        "logical_backup",
        "When to run `drkit backup ENV`.",
        _then_copy(_logical_backup),
        makes="logical",
    ),
    Job(
        "physical_backup",
        "When to run `drkit backup ENV --physical` (a base backup for point-in-time recovery).",
        _then_copy(_physical_backup),
        makes="physical",
    ),
    Job(
        "physical_incremental_backup",
        "When to run `drkit backup ENV --physical --incremental` (PostgreSQL 17+ with "
        "summarize_wal = on): e.g. a full base backup weekly in physical_backup and "
        "incrementals on the other days. Each incremental is taken on the newest base "
        "backup; restores combine the chain with pg_combinebackup, and retention keeps "
        "every ancestor of a kept incremental.",
        _then_copy(_physical_incremental_backup),
        makes="physical",
    ),
    Job(
        "copies",
        "When to run `drkit copy ENV` besides after each backup (every backup job runs it "
        "when the policy has copies): e.g. to catch up a copy that was unreachable.",
        _copy,
    ),
    Job(
        "prune",
        "When to run `drkit prune ENV`, then `drkit prune ENV --repo NAME` for each copy "
        "(each with its own retention).",
        _prune,
    ),
    Job("drill", "When to run `drkit drill ENV`.", _drill, makes="drill"),
    Job(
        "sanitize",
        "When and from where to run `drkit sanitize SOURCE ENV --force`: "
        '`{cron: "0 4 * * *", source: prod, rules: FILE}` (staging: the PROD -> STAGING '
        "copy). Each run replaces the previous copy; a leak fails the run.",
        _sanitize,
    ),
)

#: job name (a policy's schedule key) -> the job, in the order ``schedule show`` lists them
JOBS: dict[str, Job] = {job.name: job for job in _ROWS}


def dispatch(job: str, policy: Policy) -> Any:
    """Run one job for one policy."""
    return JOBS[job](policy)


def scrub(text: str) -> str:
    """The first line of a message, secrets masked (:func:`drkit.redact.mask_url`): how
    a failed job's error is logged, counted and shown by ``/status``."""
    stripped = text.strip()
    return mask_url(stripped.splitlines()[0] if stripped else "")


def error_line(exc: Exception) -> str:
    """A failed run's error as ``/status`` shows it: drkit's own errors by their
    message, anything else by its type too."""
    if isinstance(exc, DrkitError):
        return scrub(str(exc))
    return f"{type(exc).__name__}: {scrub(str(exc))}"


@dataclass
class JobState:
    """One scheduled job of one environment, as the daemon has seen it run."""

    env: str
    job: str
    cron: str
    timezone: str
    period: timedelta
    baseline: datetime
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    running_since: datetime | None = None
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_success: datetime | None = None
    last_duration: float | None = None

    def rescheduled(self, cron: str, timezone: str, period: timedelta, now: datetime) -> JobState:
        """The same job on a new schedule: its history kept, its baseline ``now``."""
        state = JobState(self.env, self.job, cron, timezone, period, now)
        state.runs = self.runs
        state.last_started, state.last_finished = self.last_started, self.last_finished
        state.last_status, state.last_error = self.last_status, self.last_error
        state.last_success, state.last_duration = self.last_success, self.last_duration
        return state

    def record(self, status: str, started: datetime, finished: datetime, error: str | None) -> None:
        self.runs[status] = self.runs.get(status, 0) + 1
        self.last_started = started
        self.last_finished = finished
        self.last_status = status
        self.last_duration = (finished - started).total_seconds()
        if status == "success":
            self.last_success = finished
            self.last_error = None
        elif status == "failure":
            self.last_error = error
