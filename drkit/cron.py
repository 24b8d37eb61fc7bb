"""Five-field cron expressions: checked for a policy, and made APScheduler 3 triggers.

The policy loader checks every schedule entry with :func:`check_cron` and the scheduler
runs them through :func:`cron_trigger`, the same reading: an expression that loads is one
the daemon can schedule.  Nothing here imports APScheduler until a trigger is made.

What an expression means is cronsim's answer (the evaluator healthchecks.io runs, which
follows Debian's cron(8)), never code of ours.  APScheduler 3's own ``CronTrigger`` is not
cron: its day-of-week numbering starts at Monday = 0 (``0 3 * * 0`` would run on
Monday), it requires both day fields when both are restricted where cron runs on either
(``0 2 1 * 1``: every Monday and every 1st), and it runs a fixed-time job twice when the
autumn DST change repeats its hour.  So the daemon's trigger (:func:`cron_trigger`)
lets APScheduler schedule (coalescing, misfire grace, one instance) and cronsim say when:

- 0 and 7 are Sunday; names (``mon-fri``) work;
- a fixed minute and hour (``0 2 * * *`` in Europe/Rome) runs once on the autumn change,
  in the first pass of the repeated hour; a time the spring change skips runs once, just
  after the change;
- a wildcard or step in the minute or the hour (``0 * * * *``, ``*/20 2 * * *``) keeps
  its rhythm in elapsed time through the change, as Debian's cron runs it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo


def check_cron(expr: str, timezone: str) -> str:
    """Validate a five-field cron expression the way the scheduler will read it."""
    if len(expr.split()) != 5:
        raise ValueError(
            f"{expr!r} is not a five-field cron expression (minute hour day month weekday)"
        )
    cron_trigger(expr, timezone)
    return expr


def next_fire(expr: str, zone: tzinfo, start: datetime) -> datetime | None:
    """The first time at or after ``start`` that ``expr`` fires in ``zone`` (cronsim),
    None when it never does again."""
    from cronsim import CronSim

    # cronsim yields times strictly after the second it starts from: start a second
    # early (from UTC, so the fold of a repeated local hour is right) and skip what
    # falls before ``start``
    begin = (start.astimezone(UTC) - timedelta(seconds=1)).astimezone(zone)
    for fire in CronSim(expr, begin):
        if fire.astimezone(UTC) >= start.astimezone(UTC):
            return fire
    return None


_trigger_class: Any = None
_TICK = timedelta(microseconds=1)
#: the five fields, as cronsim's errors name them
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


def _cronsim_trigger_class() -> Any:
    """The trigger class, built on first use so APScheduler loads only with a trigger."""
    global _trigger_class
    if _trigger_class is None:
        from apscheduler.triggers.base import BaseTrigger

        class CronSimTrigger(BaseTrigger):  # type: ignore[misc]
            """An APScheduler 3 trigger whose fire times are cronsim's."""

            def __init__(self, expr: str, zone: tzinfo) -> None:
                self.expr = expr
                self.timezone = zone

            def get_next_fire_time(
                self, previous_fire_time: datetime | None, now: datetime
            ) -> datetime | None:
                # as APScheduler's CronTrigger: the first fire after the previous one
                # (even if past: the scheduler applies coalescing and the misfire
                # grace), else the first at or after now.  In UTC: local arithmetic
                # and comparison ignore the fold of a repeated hour
                start = now.astimezone(UTC)
                if previous_fire_time is not None:
                    start = previous_fire_time.astimezone(UTC) + _TICK
                return next_fire(self.expr, self.timezone, start)

            def __str__(self) -> str:
                return f"cron[{self.expr}, {self.timezone}]"

            def __repr__(self) -> str:
                return f"<CronSimTrigger ({self.expr!r}, timezone={str(self.timezone)!r})>"

        _trigger_class = CronSimTrigger
    return _trigger_class


def cron_trigger(expr: str, timezone: str | tzinfo) -> Any:
    """The APScheduler trigger of a five-field cron expression in ``timezone``, with
    cron's meaning (cronsim's); ValueError naming the problem when it does not parse."""
    from cronsim import CronSim, CronSimError

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} is not a five-field cron expression")
    zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    try:
        CronSim(expr, datetime.now(zone))
    except CronSimError as exc:
        problem = str(exc)
        for index, name in enumerate(_FIELDS):
            if problem.lower() == f"bad {name}":  # cronsim names the field, not its text
                problem = f"bad {name.replace('-', ' ')} {fields[index]!r}"
        raise ValueError(f"cron expression {expr!r} does not parse: {problem}") from None
    return _cronsim_trigger_class()(expr, zone)
