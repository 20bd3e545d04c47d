"""The one format of every figure on the pages (``dashboards.formatting``), as template filters,
and the pieces every page draws: charts with their text alternative, bars, pagination."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html, json_script

from dashboards import formatting

register = template.Library()


@register.filter
def yuan(value: int | Decimal | str | None) -> str:
    """Money as people read it: ``1234567`` fen (or the API's ``"12345.67"``) -> ``"¥12,345.67"``."""
    return formatting.money(value)


@register.filter
def api_yuan(value: int | Decimal | str | None) -> str:
    """The API's money string of the same figure, for ``data-value``: ``1234567`` -> ``"12345.67"``."""
    return formatting.api_money(value)


@register.filter
def price(value: Decimal | str | None) -> str:
    """A price per card-hour (or per million tokens) with four places: ``"¥9.8000"``."""
    return formatting.price(value)


@register.filter
def api_price(value: Decimal | str | None) -> str:
    return formatting.api_price(value)


@register.filter
def whole(value: int | Decimal | str | None) -> str:
    """Cards, card-hours, counts: ``"12,346"``."""
    return formatting.quantity(value)


@register.filter
def local(value: datetime | str | None, format: str = formatting.MINUTE) -> str:
    """A time (a datetime or the API's ISO string) in Asia/Shanghai: ``2026-12-07 14:05``;
    ``|local:"Y-m"`` for the month."""
    return formatting.local_time(value, format)


@register.filter
def ago(value: datetime | str | None, now: datetime) -> str:
    """``{{ pool.last_heartbeat_at|ago:now }}``: "2 minutes ago"."""
    return formatting.ago(value, now)


@register.filter
def band(value: str | None) -> str:
    return formatting.band(value)


@register.filter
def claim_status(value: str) -> str:
    return formatting.claim_status(value)


@register.simple_tag
def time_zone() -> str:
    """The zone the pages' times are in: ``settings.BILLING_TIME_ZONE``."""
    return formatting.time_zone()


@register.filter
def percent(share: Decimal | None) -> str:
    """A 0..1 share as a percentage: ``"45.3%"``."""
    return formatting.percent(share)


@register.filter
def get(mapping: dict[str, Any], key: str) -> Any:
    return mapping.get(key)


@register.simple_tag
def bar(share: Decimal | float | None) -> str:
    """A horizontal bar filled to ``share`` (0..1), for utilization and progress."""
    width = min(max(float(share or 0), 0), 1) * 100
    return format_html('<span class="bar" aria-hidden="true"><span style="width:{}%"></span></span>', f"{width:.1f}")


@register.simple_tag
def chart(config: dict[str, Any], name: str, label: str, height: int = 240) -> str:
    """A canvas that ``dashboards.js`` draws ``config`` (a Chart.js configuration) on; ``label`` is
    its text alternative (``aria-label``, and the canvas's fallback content)."""
    script = json_script(config, f"chart-{name}")
    return format_html(
        '<div class="chart" style="height:{}px"><canvas data-chart="chart-{}" role="img" aria-label="{}">{}</canvas>'
        "</div>{}",
        height,
        name,
        label,
        label,
        script,
    )


@register.simple_tag(takes_context=True)
def page_url(context: dict[str, Any], name: str, number: int) -> str:
    """This page's address with ``?<name>_page=number``, the other lists' pages kept."""
    query = context["request"].GET.copy()
    query[f"{name}_page"] = str(number)
    return f"?{query.urlencode()}#{name}"
