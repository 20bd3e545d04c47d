"""Figures as the API writes them: money through ``core.money.format_yuan``, prices with four
places; times as people read them, in the billing time zone (``dashboards.formatting``)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html

from core.money import format_yuan
from dashboards import formatting

register = template.Library()


@register.filter
def yuan(fen: int | None) -> str:
    """Integer fen as the API's money string: ``1500000`` -> ``"15000.00"``."""
    return "" if fen is None else format_yuan(fen)


@register.filter
def price(value: Decimal | str | None) -> str:
    """A price per card-hour (or per million tokens) with the API's four places."""
    return formatting.price(value)


@register.filter
def local(value: datetime | str | None, format: str = formatting.MINUTE) -> str:
    """A time (a datetime or the API's ISO string) in Asia/Shanghai: ``2026-12-07 14:05``;
    ``|local:"Y-m"`` for the month."""
    return formatting.local_time(value, format)


@register.simple_tag
def time_zone() -> str:
    """The zone the pages' times are in: ``settings.BILLING_TIME_ZONE``."""
    return formatting.time_zone()


@register.filter
def percent(share: Decimal | None) -> str:
    """A 0..1 share as a percentage with two places."""
    return "" if share is None else f"{Decimal(share) * 100:.2f}%"


@register.filter
def get(mapping: dict[str, Any], key: str) -> Any:
    return mapping.get(key)


@register.simple_tag
def chart(config: dict[str, Any], name: str, height: int = 260) -> str:
    """A canvas that ``dashboards.js`` draws ``config`` (a Chart.js configuration) on."""
    from django.utils.html import json_script

    script = json_script(config, f"chart-{name}")
    return format_html(
        '<div class="chart" style="height:{}px"><canvas data-chart="chart-{}"></canvas></div>{}', height, name, script
    )
