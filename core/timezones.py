"""The hubs' local time zone: billing months, time-of-use bands and dashboard times are read in it.

Every hub is in China; the zone is named once, by ``settings.BILLING_TIME_ZONE``
(Asia/Shanghai), and every module takes it from here. Times are stored in UTC.
"""

from functools import cache
from zoneinfo import ZoneInfo

from django.conf import settings


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_zone() -> ZoneInfo:
    """The billing time zone (Asia/Shanghai)."""
    return _zone(settings.BILLING_TIME_ZONE)
