"""Five-field cron expressions: checked for a policy, and made APScheduler 3 triggers.

The policy loader checks every schedule entry with :func:`check_cron` and the scheduler
runs them through :func:`cron_trigger`, the same reading: an expression that loads is one
the daemon can schedule.  Nothing here imports APScheduler until a trigger is made.

APScheduler 3's ``CronTrigger.from_crontab`` passes the day-of-week field through
unchanged, and its numbering starts at Monday = 0: ``0 3 * * 0`` would run on
*Monday*, not on Sunday as in cron(5).  :func:`cron_trigger` rewrites that field into
weekday names (``sun``, ``mon``, ...), expanding ranges and steps with cron's
numbering (0 and 7 are Sunday), so every expression means what it means in crontab.
"""

from __future__ import annotations

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


def cron_trigger(expr: str, timezone: Any) -> Any:
    """An APScheduler ``CronTrigger`` for a five-field cron expression in ``timezone``."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} is not a five-field cron expression")
    minute, hour, day, month, dow = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=cron_day_of_week(dow),
        timezone=timezone,
    )
