"""Figures, times and prices as people read them on the dashboards and the invoice PDF, in one place.

One format everywhere: money with ``¥``, thousands separators and two places; prices per
card-hour (or per million tokens) with four; quantities (cards, card-hours) as whole numbers;
shares as percentages; times in the billing time zone (``settings.BILLING_TIME_ZONE``,
Asia/Shanghai) as ``2026-12-07 14:05``, whether they come as datetimes or as the API's ISO 8601
strings. In Chinese the days read as Chinese readers write them (``2026年12月7日 14:05``,
``2026年12月``); money, prices and counts keep the same form (``¥15,000.00``), which is theirs too.
The exact figure the API answers stays beside what is shown (``api_money``), in a
``data-value`` attribute, so that the pages and the API can be compared.
"""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.utils import dateformat
from django.utils.dateparse import parse_datetime
from django.utils.timesince import timesince
from django.utils.translation import get_language, gettext, pgettext_lazy

from core.money import fen_to_yuan, format_yuan, shown_price
from core.timezones import local_zone

MINUTE = "Y-m-d H:i"
DAY = "Y-m-d"
YUAN = "¥"
# The same moments as Chinese readers write them; other formats (an hour, "m-d" on a chart) stay.
CHINESE_FORMATS = {
    MINUTE: "Y年n月j日 H:i",
    DAY: "Y年n月j日",
    "Y-m-d H:i:s": "Y年n月j日 H:i:s",
    "Y-m": "Y年n月",
    "m-d": "n月j日",
    "m-d H:00": "n月j日 H:00",
}


def in_chinese() -> bool:
    return (get_language() or "").startswith("zh")


def time_zone() -> str:
    """The name the pages give their times' zone: the billing time zone's."""
    return str(settings.BILLING_TIME_ZONE)


def _moment(value: datetime | str) -> datetime:
    moment = parse_datetime(value) if isinstance(value, str) else value
    if moment is None:
        raise ValueError(f"not a date-time: {value!r}")
    return moment


def local_time(value: datetime | str | None, format: str = MINUTE) -> str:
    """``value`` in the billing time zone, in Django's date ``format`` (in Chinese, its Chinese
    form: ``2026年12月7日``); "" for no time."""
    if value is None or value == "":
        return ""
    if in_chinese():
        format = CHINESE_FORMATS.get(format, format)
    return dateformat.format(_moment(value).astimezone(local_zone()), format)


def ago(value: datetime | str | None, now: datetime) -> str:
    """How long before ``now``: "2 minutes ago", "just now"; "" for no time."""
    if value is None or value == "":
        return ""
    moment = _moment(value)
    if (now - moment).total_seconds() < 60:
        return gettext("just now")
    return gettext("%(time)s ago") % {"time": timesince(moment, now, depth=1)}


def _yuan(value: int | Decimal | str) -> Decimal:
    """Integer fen, or yuan as a Decimal or as the API's string."""
    return fen_to_yuan(value) if isinstance(value, int) else Decimal(value)


def money(value: int | Decimal | str | None) -> str:
    """``1234567`` fen (or ``"12345.67"`` yuan) -> ``"¥12,345.67"``; negative as ``"-¥12.00"``."""
    if value is None or value == "":
        return ""
    amount = _yuan(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{'-' if amount < 0 else ''}{YUAN}{abs(amount):,.2f}"


def api_money(value: int | Decimal | str | None) -> str:
    """The API's money string for the same figure: ``1234567`` fen -> ``"12345.67"``."""
    if value is None or value == "":
        return ""
    return format_yuan(value) if isinstance(value, int) else str(Decimal(value).quantize(Decimal("0.01")))


def price(value: Decimal | str | None) -> str:
    """A price per card-hour or per million tokens: ``"¥12.3457"`` (the API's ``"12.3457"``)."""
    if value is None or value == "":
        return ""
    return f"{YUAN}{shown_price(value):,.4f}"


def api_price(value: Decimal | str | None) -> str:
    """A price as the API writes it: ``"12.3457"``."""
    return "" if value is None or value == "" else f"{shown_price(value):f}"


def quantity(value: int | Decimal | str | None) -> str:
    """A count or card-hours as a whole number with thousands separators: ``"12,346"``."""
    if value is None or value == "":
        return ""
    return f"{Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"


def percent(share: Decimal | float | str | None) -> str:
    """A 0..1 share as a percentage with one place: ``"45.3%"``."""
    if share is None or share == "":
        return ""
    return f"{(Decimal(str(share)) * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


# Time-of-use tariff bands as the hubs' price plans name them (pools/reference_data.py).
BANDS = {
    "peak": pgettext_lazy("tariff band", "peak"),
    "flat": pgettext_lazy("tariff band", "flat"),
    "valley": pgettext_lazy("tariff band", "valley"),
}


def band(value: str | None) -> str:
    """A tariff band's name in the page's language; a band no plan here names stays as written."""
    return str(BANDS.get(value or "", value or ""))


# A claim's and its lines' statuses in a word, as its tables and PDF show them (the models' labels
# explain each one at length).
CLAIM_STATUSES = {
    "submitted": pgettext_lazy("claim status", "submitted"),
    "reviewed": pgettext_lazy("claim status", "reviewed"),
    "paid": pgettext_lazy("claim status", "paid"),
}
CLAIM_LINE_STATUSES = {
    "claimed": pgettext_lazy("claim line status", "claimed"),
    "approved": pgettext_lazy("claim line status", "approved"),
    "rejected": pgettext_lazy("claim line status", "rejected"),
    "withdrawn": pgettext_lazy("claim line status", "withdrawn"),
}


def claim_status(status: str) -> str:
    return str(CLAIM_STATUSES.get(status, status))


def claim_line_status(status: str) -> str:
    return str(CLAIM_LINE_STATUSES.get(status, status))
