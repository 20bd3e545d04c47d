"""Electricity cost per token, the seed's figure, from what endpoints actually served.

For each model endpoint and UTC hour: energy = its cards x its GPU model's power x
its pool's PUE x 1 hour, costed at the hub's tariff for that local hour's band,
divided by the tokens its token orders were billed for in the hour (input and
output, from the rollups). An hour in which an endpoint served no token costs
its electricity but has no cost per token; it is left out. Read-only: the
figures are estimates beside the bill, never money.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Sum

from billing.models import UsageMetric, UsageRollup
from pools.models import ModelEndpoint
from pools.tariffs import band_prices, hour_bands, local_hour

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class EndpointHour:
    endpoint_id: Any
    hub: str
    model: str
    hour: datetime
    tokens: int
    kwh: Decimal
    electricity_cost: Decimal  # yuan

    @property
    def per_million_tokens(self) -> Decimal:
        return self.electricity_cost / self.tokens * MILLION


def endpoint_hours(*, since: datetime, until: datetime, endpoint_ids: list[Any] | None = None) -> list[EndpointHour]:
    """Each endpoint-hour from ``since`` to ``until`` in which the endpoint served tokens."""
    rollups = UsageRollup.objects.filter(
        hour__gte=since,
        hour__lt=until,
        lease__endpoint__isnull=False,
        metric__in=[UsageMetric.INPUT_TOKENS, UsageMetric.OUTPUT_TOKENS],
    )
    if endpoint_ids is not None:
        rollups = rollups.filter(lease__endpoint_id__in=endpoint_ids)
    served: dict[tuple[Any, datetime], Decimal] = defaultdict(Decimal)
    for endpoint_id, hour, tokens in rollups.values_list("lease__endpoint_id", "hour").annotate(Sum("quantity")):
        served[(endpoint_id, hour)] += tokens
    endpoints = {
        endpoint.pk: endpoint
        for endpoint in ModelEndpoint.objects.filter(pk__in={key[0] for key in served}).select_related(
            "pool__hub", "pool__gpu_model"
        )
    }
    rows = []
    for (endpoint_id, hour), tokens in sorted(served.items(), key=lambda item: (item[0][1], str(item[0][0]))):
        if tokens <= 0:
            continue
        endpoint = endpoints[endpoint_id]
        pool, tariff = endpoint.pool, endpoint.pool.hub.tariff
        kwh_price = band_prices(tariff)[hour_bands(tariff)[local_hour(hour)]]
        kwh = endpoint.cards * Decimal(pool.gpu_model.power_watts) / 1000 * pool.pue
        rows.append(
            EndpointHour(
                endpoint_id=endpoint_id,
                hub=pool.hub_id,
                model=endpoint.model,
                hour=hour,
                tokens=int(tokens),
                kwh=kwh,
                electricity_cost=kwh * kwh_price,
            )
        )
    return rows


def electricity_per_million_by_hub_and_hour(*, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The national chart: per hub and hour, the electricity cost of its endpoints over the tokens they served."""
    totals: dict[tuple[str, datetime], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in endpoint_hours(since=since, until=until):
        total = totals[(row.hub, row.hour)]
        total[0] += row.electricity_cost
        total[1] += row.tokens
    return [
        {"hub": hub, "hour": hour, "tokens": int(tokens), "per_million_tokens": cost / tokens * MILLION}
        for (hub, hour), (cost, tokens) in sorted(totals.items(), key=lambda item: (item[0][1], item[0][0]))
    ]


def lease_electricity_per_million(*, lease_ids: list[Any], since: datetime, until: datetime) -> dict[Any, Decimal]:
    """Of each token order's lease: the electricity cost per million of the tokens it was billed for
    from ``since`` to ``until``, its endpoint's figure of each hour weighted by the lease's tokens then."""
    served: dict[Any, list[tuple[Any, datetime, Decimal]]] = defaultdict(list)
    for lease_id, endpoint_id, hour, tokens in (
        UsageRollup.objects.filter(
            lease_id__in=lease_ids,
            lease__endpoint__isnull=False,
            hour__gte=since,
            hour__lt=until,
            metric__in=[UsageMetric.INPUT_TOKENS, UsageMetric.OUTPUT_TOKENS],
        )
        .values_list("lease_id", "lease__endpoint_id", "hour")
        .annotate(Sum("quantity"))
    ):
        served[lease_id].append((endpoint_id, hour, tokens))
    endpoint_ids = list({endpoint_id for rows in served.values() for endpoint_id, _, _ in rows})
    rates = {
        (row.endpoint_id, row.hour): row.per_million_tokens
        for row in endpoint_hours(since=since, until=until, endpoint_ids=endpoint_ids)
    }
    result = {}
    for lease_id, rows in served.items():
        weighted = [(tokens, rates[(endpoint_id, hour)]) for endpoint_id, hour, tokens in rows if tokens > 0]
        total = sum((tokens for tokens, _ in weighted), Decimal(0))
        if total:
            result[lease_id] = sum((tokens * rate for tokens, rate in weighted), Decimal(0)) / total
    return result


def provider_electricity_per_million(*, provider_id: Any, since: datetime, until: datetime) -> Decimal | None:
    """Of a provider's endpoints over a period: their electricity over the tokens they were billed for."""
    endpoint_ids = list(ModelEndpoint.objects.filter(pool__provider_id=provider_id).values_list("pk", flat=True))
    rows = endpoint_hours(since=since, until=until, endpoint_ids=endpoint_ids) if endpoint_ids else []
    tokens = sum(row.tokens for row in rows)
    return sum((row.electricity_cost for row in rows), Decimal(0)) / tokens * MILLION if tokens else None
