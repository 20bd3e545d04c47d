"""Billing periods: calendar months in the billing time zone (Asia/Shanghai), stored in UTC."""

from datetime import UTC, datetime

from core.timezones import local_zone


def month_of(at: datetime) -> tuple[datetime, datetime]:
    """The (start, end) in UTC of the local month ``at`` falls in."""
    local = at.astimezone(local_zone())
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


def local_year(at: datetime) -> int:
    return at.astimezone(local_zone()).year
