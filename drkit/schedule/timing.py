"""When the scheduled jobs run: fire times, a job's period, the checked schedule.

A schedule entry is a five-field cron expression in the policy's timezone
(:mod:`drkit.cron` gives it cron's meaning).  :func:`cron_period` is the
longest gap between two runs; a job is overdue when its last success is older than that
plus :data:`MISFIRE_GRACE`, the lateness APScheduler still starts a run with (its
default of one second would silently drop a run that starts a little late, e.g. after a
container restart).  :func:`show_schedule` is ``drkit schedule show``: it returns the
command's ``--json`` document, :class:`ScheduleShowDocument`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.documents import Document, LocalTimestamp, Shape
from drkit.errors import PolicyError

if TYPE_CHECKING:
    from drkit.config import Policy

MISFIRE_GRACE = timedelta(hours=1)


def next_runs(
    expr: str, timezone: str, count: int = 3, now: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fire times of a five-field cron expression, in ``timezone``."""
    from drkit.cron import cron_trigger

    trigger = cron_trigger(expr, timezone)
    current = now or datetime.now(UTC)
    out: list[datetime] = []
    previous = None
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, current)
        if fire is None:
            break
        out.append(fire)
        previous = fire
        # ``now`` in UTC: with a local ``now`` APScheduler repeats the ambiguous hour of
        # an autumn DST change forever
        current = fire.astimezone(UTC) + timedelta(microseconds=1)
    return out


def cron_period(expr: str, timezone: str, now: datetime | None = None) -> timedelta:
    """The longest gap between two consecutive runs of ``expr`` over the coming year.

    ``0 2 * * 1-5`` gives three days (Friday to Monday), ``0 2 * * *`` 25 hours around
    the autumn DST change, ``* * * * *`` a minute.  A job is overdue when its last
    success is older than this plus the misfire grace.
    """
    from drkit.cron import cron_trigger

    trigger = cron_trigger(expr, timezone)
    start = (now or datetime.now(UTC)).astimezone(UTC)
    horizon = start + timedelta(days=400)
    previous = trigger.get_next_fire_time(None, start)
    longest = timedelta(0)
    for _ in range(2000):
        if previous is None or previous > horizon:
            break
        after = previous.astimezone(UTC) + timedelta(microseconds=1)  # UTC: see next_runs
        fire = trigger.get_next_fire_time(previous, after)
        if fire is None:
            break
        longest = max(longest, fire.astimezone(UTC) - previous.astimezone(UTC))
        previous = fire
    return longest or timedelta(days=366)


def checked_policies(envs: list[str] | None, policy_dir: Path | str | None) -> list[Policy]:
    """The policies, each schedule entry checked the way the daemon will read it."""
    from drkit.config import load_policies
    from drkit.cron import cron_trigger

    policies = load_policies(envs or None, policy_dir)
    for policy in policies:
        for job, expr in policy.schedule.jobs().items():
            try:
                cron_trigger(expr, policy.schedule.timezone)
            except (ValueError, TypeError) as exc:
                raise PolicyError(f"{policy.source}: schedule.{job}: {exc}") from None
    return policies


def show_schedule(
    envs: list[str] | None, policy_dir: Path | str | None, count: int = 3
) -> ScheduleShowDocument:
    """Each job of each policy with its next ``count`` run times (``schedule show``)."""
    jobs = []
    for policy in checked_policies(envs, policy_dir):
        timezone = policy.schedule.timezone
        for job, expr in policy.schedule.jobs().items():
            jobs.append(
                ScheduledJob(
                    env=policy.name,
                    job=job,
                    cron=expr,
                    timezone=timezone,
                    next_runs=[r.isoformat() for r in next_runs(expr, timezone, count)],
                    period_seconds=int(cron_period(expr, timezone).total_seconds()),
                )
            )
    return ScheduleShowDocument(ok=True, jobs=jobs)


class ScheduledJob(Shape):
    env: str
    job: str
    cron: str
    timezone: str
    next_runs: list[LocalTimestamp]
    period_seconds: int


class ScheduleShowDocument(Document):
    """`drkit schedule show [ENV...] --json`"""

    jobs: list[ScheduledJob]
