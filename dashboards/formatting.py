"""Times and prices as people read them on the dashboards and the invoice PDF.

Times are shown in the billing time zone (``settings.BILLING_TIME_ZONE``, Asia/Shanghai), as
``2026-12-07 14:05``, whether they come as datetimes or as the API's ISO 8601 strings (the
pages show some figures exactly as the API answers them). Prices have the API's four places.
"""

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils import dateformat
from django.utils.dateparse import parse_datetime

from core.money import shown_price
from core.timezones import local_zone

MINUTE = "Y-m-d H:i"


def time_zone() -> str:
    """The name the pages give their times' zone: the billing time zone's."""
    return str(settings.BILLING_TIME_ZONE)


def local_time(value: datetime | str | None, format: str = MINUTE) -> str:
    """``value`` in the billing time zone, in Django's date ``format``; "" for no time."""
    if value is None or value == "":
        return ""
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        raise ValueError(f"not a date-time: {value!r}")
    return dateformat.format(moment.astimezone(local_zone()), format)


def price(value: Decimal | str | None) -> str:
    """A price per card-hour or per million tokens as the API shows it: ``"12.3457"``."""
    return "" if value is None else f"{shown_price(value):f}"
