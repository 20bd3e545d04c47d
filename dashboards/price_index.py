"""The compute price index beside an organization's own prices or spend, for every dashboard page
(``dashboards/_price_index.html``): the national index by day, and the organization's figure."""

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext as _

from dashboards import formatting
from dashboards.formatting import local_time
from dashboards.pages import line_chart
from marketplace.models import Lease, PriceIndexSnapshot
from marketplace.selectors import price_index
from organizations.models import Organization
from pools.models import ResourcePool
from pools.selectors import price_plans_in_force

INDEX_DAYS = 30
INDEX_MODELS = 3  # operators and issuers see the index of the GPU models with the most cards offered


def price_index_panel(*, organization: Organization, now: datetime) -> dict[str, Any]:
    """``price_index_chart``: the national median price per card-hour by day over INDEX_DAYS, of the
    GPU model the organization buys or sells most (providers: their pools' average price now;
    buyers: the average price their active leases are locked at), or of the most offered models."""
    own: dict[str, Decimal] = {}
    if organization.kind == Organization.Kind.PROVIDER:
        pools = list(ResourcePool.objects.filter(provider=organization, status=ResourcePool.Status.ACTIVE))
        plans = price_plans_in_force(pool_ids=[pool.pk for pool in pools], at=now)
        own = _averages([(pool.gpu_model_id, plans[pool.pk].average_price) for pool in pools if pool.pk in plans])
    elif organization.kind == Organization.Kind.BUYER:
        leases = Lease.objects.filter(buyer=organization, status__in=Lease.ACTIVE).select_related("pool", "price_plan")
        own = _averages([(lease.pool.gpu_model_id, lease.price_plan.average_price) for lease in leases])
    models = list(own)[:1] or _most_offered(now)
    start = now - timedelta(days=INDEX_DAYS)
    series = {
        row["gpu_model"]: {point["at"]: point["median"] for point in row["points"]}
        for model in models
        for row in price_index(start=start, end=now, granularity="day", area="national", gpu_model=model)
    }
    days = sorted({day for points in series.values() for day in points})
    lines = {f"{model} national median": [points.get(day) for day in days] for model, points in series.items()}
    for model, price in own.items():
        if model in series:
            label = "your price now" if organization.kind == Organization.Kind.PROVIDER else "your locked price"
            lines[f"{model} {label}"] = [price] * len(days)
    if not days:
        return {"price_index_chart": None}
    return {
        "price_index_chart": line_chart(
            [local_time(day, "Y-m-d") for day in days], lines, y_title=_("CNY per card-hour")
        ),
        "price_index_label": _("Price per card-hour by day, last %(days)s days: %(lines)s.")
        % {"days": INDEX_DAYS, "lines": "; ".join(_line_text(name, values) for name, values in lines.items())},
    }


def _line_text(name: str, values: list[Decimal | None]) -> str:
    """One line of the chart in words: its first and latest price."""
    known = [value for value in values if value is not None]
    if not known:
        return _("%(name)s none") % {"name": name}
    return _("%(name)s from %(first)s to %(last)s") % {
        "name": name,
        "first": formatting.price(known[0]),
        "last": formatting.price(known[-1]),
    }


def _averages(prices: list[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """The mean price per GPU model, the most frequent model first."""
    counts = Counter(model for model, _ in prices)
    return {
        model: sum((price for m, price in prices if m == model), Decimal(0)) / count
        for model, count in counts.most_common()
    }


def _most_offered(now: datetime) -> list[str]:
    latest = PriceIndexSnapshot.objects.filter(hour__lte=now).order_by("-hour").values_list("hour", flat=True).first()
    if latest is None:
        return []
    rows = PriceIndexSnapshot.objects.filter(hour=latest).values_list("gpu_model_id", "index")
    ranked = sorted(rows, key=lambda row: -row[1].get("national", {}).get("cards", 0))
    return [model for model, _ in ranked[:INDEX_MODELS]]
