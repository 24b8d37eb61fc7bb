"""Five-field cron expressions: checked for a policy, and made APScheduler 3 triggers.

The policy loader checks every schedule entry with :func:`check_cron` and the scheduler
runs them through :func:`cron_trigger`, the same reading: an expression that loads is one
the daemon can schedule.  Nothing here imports APScheduler until a trigger is made.

APScheduler 3's ``CronTrigger.from_crontab`` passes the day-of-week field through
unchanged, and its numbering starts at Monday = 0: ``0 3 * * 0`` would run on
*Monday*, not on Sunday as in cron(5).  :func:`cron_trigger` rewrites that field into
weekday names (``sun``, ``mon``, ...), expanding ranges and steps with cron's
numbering (0 and 7 are Sunday), so every expression means what it means in crontab.

APScheduler 3 also fires a fixed-time job twice when the autumn DST change repeats its
hour (``0 2 * * *`` in Europe/Rome: 02:00 CEST, then 02:00 CET).  The trigger
:func:`cron_trigger` makes (:class:`_CronOnceTrigger`, built on first use) skips the
second pass of a repeated wall-clock time, as cron(8) does, unless the hour field is a
wildcard (``*``, ``*/2``): such a job keeps its rhythm in elapsed time through the
change, again as cron does.  The spring gap needs nothing: a time that does not exist
that day fires once, just after the change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _day(token: str) -> int:
    token = token.strip().lower()
    if token[:3] in _NAMES and len(token) >= 3:
        return _NAMES.index(token[:3])
    value = int(token)
    if not 0 <= value <= 7:
        raise ValueError(f"day of week {token!r} is not 0-7 or sun-sat")
    return value % 7 if value == 7 else value


def cron_day_of_week(field: str) -> str:
    """A cron(5) day-of-week field as APScheduler weekday names (``1-5`` -> ``mon,...,fri``)."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step {step_text!r} must be positive")
        if span in ("*", "?"):
            start, end = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            start, end = _day(low), int(high) if high.strip().isdigit() else _day(high)
            if end == 7:
                end = 7  # 5-7 means fri, sat, sun
            elif end < start:
                raise ValueError(f"day-of-week range {span!r} runs backwards")
        else:
            start = _day(span)
            end = 6 if step_text else start
        days.update(d % 7 for d in range(start, end + 1, step))
    return ",".join(_NAMES[d] for d in sorted(days))


def check_cron(expr: str, timezone: str) -> str:
    """Validate a five-field cron expression the way the scheduler will read it."""
    if len(expr.split()) != 5:
        raise ValueError(
            f"{expr!r} is not a five-field cron expression (minute hour day month weekday)"
        )
    try:
        cron_trigger(expr, timezone)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cron expression {expr!r} does not parse: {exc}") from exc
    return expr


def repeated_wall_time(fire: datetime) -> bool:
    """True when ``fire`` is the second pass of a local time an autumn DST change repeats."""
    if fire.tzinfo is None:
        return False
    wall = fire.replace(tzinfo=None)
    first = wall.replace(tzinfo=fire.tzinfo, fold=0)
    return first.utcoffset() != fire.utcoffset() and first.astimezone(UTC) < fire.astimezone(UTC)


_trigger_class: Any = None


def _once_trigger_class() -> Any:
    """The trigger class, built on first use so APScheduler loads only with a trigger."""
    global _trigger_class
    if _trigger_class is None:
        from apscheduler.triggers.cron import CronTrigger

        class _CronOnceTrigger(CronTrigger):  # type: ignore[misc]
            """A CronTrigger that runs a fixed-hour job once on the autumn DST change."""

            def __init__(self, *args: Any, hour_wildcard: bool, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.hour_wildcard = hour_wildcard

            def get_next_fire_time(
                self, previous_fire_time: datetime | None, now: datetime
            ) -> datetime | None:
                fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
                while fire is not None and not self.hour_wildcard and repeated_wall_time(fire):
                    # this wall-clock time already fired, an hour ago: the next one instead
                    after = fire.astimezone(UTC) + timedelta(microseconds=1)
                    fire = super().get_next_fire_time(None, after)
                return fire

        _trigger_class = _CronOnceTrigger
    return _trigger_class


def cron_trigger(expr: str, timezone: Any) -> Any:
    """The APScheduler trigger of a five-field cron expression in ``timezone``: cron's
    day-of-week numbering, and one run of a fixed-hour job on the autumn DST change."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} is not a five-field cron expression")
    minute, hour, day, month, dow = fields
    return _once_trigger_class()(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=cron_day_of_week(dow),
        timezone=timezone,
        hour_wildcard=hour.startswith("*"),
    )
