"""The hubs' local time zone: billing months, time-of-use bands and dashboard times are read in it.

Every hub is in China; the zone is named once, by ``settings.BILLING_TIME_ZONE``
(Asia/Shanghai), and every module takes it from here. Times are stored in UTC; the
date-times the API takes are bounded (``datetime_problem``).
"""

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from django.conf import settings


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_zone() -> ZoneInfo:
    """The billing time zone (Asia/Shanghai)."""
    return _zone(settings.BILLING_TIME_ZONE)


# The date-times the API takes, in UTC: wider than any billing date, narrow enough that a day or a
# month either side is still a datetime (0001-01-01 less a day was an OverflowError, a 500).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# PostgreSQL refuses a UTC offset of 16 hours or more; RFC 3339 and Python take up to 23:59.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)


def datetime_problem(value: datetime) -> str | None:
    """Why the API refuses an aware date-time (an offset PostgreSQL refuses, a year out of range), or None."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        return "The UTC offset must be within -15:59 and +15:59."
    if not EARLIEST <= value < LATEST:
        return f"Give a date-time from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} (UTC)."
    return None
