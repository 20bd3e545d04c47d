"""Rating: usage rollups times the price version in force in each hour.

Card-seconds are billed per card-hour at the plan's price for the local hour
(time-of-use band); tokens per million at the plan's token prices for the
model. Rates stay exact Decimals; each invoice line rounds once
(``core.money.round_to_fen``).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Case, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import ExtractHour

from billing.models import InvoiceLine, UsageMetric, UsageRollup
from billing.periods import local_zone
from core.money import round_to_fen
from pools.models import PricePlan
from pools.tariffs import hour_bands

SECONDS_PER_HOUR = Decimal(3600)
TOKENS_PER_UNIT = Decimal(1_000_000)


@dataclass
class RatedLine:
    kind: str
    lease_id: Any
    pool_id: Any
    provider_id: Any
    price_plan_id: Any
    metric: str
    model: str
    band: str
    unit: str
    quantity: Decimal = Decimal(0)
    rate: Decimal = Decimal(0)

    @property
    def exact_amount(self) -> Decimal:
        return self.quantity * self.rate

    @property
    def amount(self) -> int:
        return round_to_fen(self.exact_amount)


def unbilled_rollups(*, buyer_id: Any, period_end: datetime) -> QuerySet[UsageRollup]:
    """The buyer's usage up to ``period_end`` that no finalized invoice has billed yet."""
    return UsageRollup.objects.filter(buyer_id=buyer_id, hour__lt=period_end).exclude(quantity=F("billed_quantity"))


def rate(rollups: QuerySet[UsageRollup], *, period_start: datetime) -> list[RatedLine]:
    """Lines per lease, metric, model, price version and rate; usage before
    ``period_start`` becomes adjustment lines (late usage of a closed period)."""
    groups = (
        rollups.annotate(
            local_hour=ExtractHour("hour", tzinfo=local_zone()),
            kind=Case(
                When(Q(hour__lt=period_start), then=Value(InvoiceLine.Kind.ADJUSTMENT)),
                default=Value(InvoiceLine.Kind.USAGE),
            ),
        )
        .values("kind", "lease_id", "pool_id", "provider_id", "price_plan_id", "metric", "model", "local_hour")
        .annotate(unbilled=Sum(F("quantity") - F("billed_quantity")))
        .order_by()
    )
    rows = list(groups)
    plans = {
        plan.pk: plan
        for plan in PricePlan.objects.filter(pk__in={row["price_plan_id"] for row in rows}).select_related("pool__hub")
    }
    lines: dict[tuple[Any, ...], RatedLine] = {}
    for row in rows:
        plan = plans[row["price_plan_id"]]
        if row["metric"] == UsageMetric.GPU_SECONDS:
            unit, band = InvoiceLine.Unit.CARD_HOUR, hour_bands(plan.pool.hub.tariff)[row["local_hour"]]
            unit_rate = Decimal(plan.hour_prices[row["local_hour"]])
            quantity = row["unbilled"] / SECONDS_PER_HOUR
        else:
            side = "input" if row["metric"] == UsageMetric.INPUT_TOKENS else "output"
            unit, band = InvoiceLine.Unit.MILLION_TOKENS, ""
            unit_rate = Decimal(plan.token_prices.get(row["model"], {}).get(side, "0"))
            quantity = row["unbilled"] / TOKENS_PER_UNIT
        key = (row["kind"], row["lease_id"], row["metric"], row["model"], plan.pk, unit_rate, band)
        line = lines.get(key)
        if line is None:
            line = lines[key] = RatedLine(
                kind=row["kind"],
                lease_id=row["lease_id"],
                pool_id=row["pool_id"],
                provider_id=row["provider_id"],
                price_plan_id=plan.pk,
                metric=row["metric"],
                model=row["model"],
                band=band,
                unit=unit,
                rate=unit_rate,
            )
        line.quantity += quantity
    return sorted(lines.values(), key=lambda line: (line.kind, str(line.lease_id), line.metric, line.model, line.band))
