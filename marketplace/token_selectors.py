"""Reads of the token market: the endpoints as the token dispatcher sees them, token offers, and what
a buyer's vouchers would pay of a token quote."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from marketplace.models import Workload
from marketplace.selectors import QuotedUsage, _hub_facts, _hubs, usage_voucher_credits
from marketplace.token_dispatch import BATCH, REALTIME, EndpointSnapshot, TokenDispatchResult, TokenRequest, curves
from organizations.models import Organization
from pools.models import ModelEndpoint, PricePlan
from pools.selectors import fresh_after
from pools.tariffs import hour_bands, hour_prices, local_hour

# The workload of a token order's lease: what its invoice lines offer vouchers (``billing.voucher_credits``).
WORKLOADS = {REALTIME: Workload.REALTIME_INFERENCE, BATCH: Workload.BATCH_INFERENCE}

# What does not change while an endpoint keeps its pool's price version and PUE, by
# (endpoint, price plan, PUE): the snapshot but for ``stale``.
_static: dict[tuple[Any, ...], tuple[Any, ...] | None] = {}
MAX_STATIC = 20_000

_SNAPSHOT_SQL = """
SELECT e.id, (
        SELECT pp.id FROM pools_priceplan pp
        WHERE pp.pool_id = p.id AND pp.effective_from <= %(now)s
        ORDER BY pp.effective_from DESC LIMIT 1
    ) AS plan_id,
    p.pue::float8, p.last_heartbeat_at < %(fresh)s OR p.last_heartbeat_at IS NULL
FROM pools_modelendpoint e JOIN pools_resourcepool p ON p.id = e.pool_id
WHERE e.status = 'active' AND p.status = 'active' AND (%(model)s::text IS NULL OR e.model = %(model)s::text)
ORDER BY e.id
"""


def _token_hour_prices(plan: PricePlan, model: str, side: str, bands: list[str]) -> tuple[float, ...]:
    base = Decimal(plan.token_prices[model][side])
    return tuple(float(price) for price in hour_prices(base_price=base, factors=plan.time_of_use, bands=bands))


def _load_static(keys: list[tuple[Any, ...]]) -> None:
    if len(_static) + len(keys) > MAX_STATIC:
        _static.clear()
    hubs = _hubs.get(_hub_facts)
    plans = {plan.pk: plan for plan in PricePlan.objects.filter(pk__in=[key[1] for key in keys])}
    facts = {
        row[0]: row
        for row in ModelEndpoint.objects.filter(pk__in=[key[0] for key in keys]).values_list(
            "id",
            "pool_id",
            "pool__provider_id",
            "pool__hub_id",
            "model",
            "cards",
            "throughput_per_card",
            "pool__gpu_model__power_watts",
            "pool__green_share",
            "pool__hub__tariff",
        )
    }
    for key in keys:
        endpoint_id, plan_id, pue = key
        _, pool_id, provider_id, hub, model, cards, throughput, watts, green, tariff = facts[endpoint_id]
        plan = plans[plan_id]
        if model not in plan.token_prices:
            _static[key] = None
            continue
        region, kwh, latency = hubs[hub]
        bands = hour_bands(tariff)
        prices_in = _token_hour_prices(plan, model, "input", bands)
        prices_out = _token_hour_prices(plan, model, "output", bands)
        _static[key] = (
            endpoint_id,
            pool_id,
            provider_id,
            hub,
            region,
            model,
            cards,
            throughput,
            watts,
            pue,
            float(green),
            prices_in,
            prices_out,
            kwh,
            latency,
            curves(prices_in, prices_out, kwh),
        )


def endpoint_snapshots(*, now: datetime, model: str | None = None) -> list[EndpointSnapshot]:
    """Every active endpoint (of ``model``) on an active pool, priced, as the token dispatcher sees
    it at ``now``. Heartbeats and the price version in force are read fresh in one query; the rest
    is kept in this process keyed by them, as ``pool_snapshots`` does."""
    with connection.cursor() as cursor:
        cursor.execute(_SNAPSHOT_SQL, {"now": now, "fresh": fresh_after(now), "model": model})
        rows = [row for row in cursor.fetchall() if row[1] is not None]
    missing = [row[:3] for row in rows if row[:3] not in _static]
    if missing:
        _load_static(missing)
    snapshots = []
    for endpoint_id, plan_id, pue, stale in rows:
        static = _static[(endpoint_id, plan_id, pue)]
        if static is not None:
            snapshots.append(EndpointSnapshot(*static, stale))  # type: ignore[call-arg]  # the 16 leading fields
    return snapshots


def token_offers(*, now: datetime, model: str | None, user_region: str | None, ordering: str) -> list[dict[str, Any]]:
    """Fresh endpoints priced for this local hour, cheapest (input + output) first, or nearest first."""
    hour = local_hour(now)
    offers = [
        {
            "id": endpoint.id,
            "pool_id": endpoint.pool_id,
            "hub": endpoint.hub,
            "region": endpoint.region,
            "model": endpoint.model,
            "throughput": endpoint.cards * endpoint.throughput_per_card,
            "input_price_now": Decimal(str(endpoint.input_prices[hour])),
            "output_price_now": Decimal(str(endpoint.output_prices[hour])),
            "electricity_cost_per_million_tokens": Decimal(str(endpoint.electricity_per_million(hour))),
            "latency_ms": endpoint.latency_ms.get(user_region) if user_region else None,
        }
        for endpoint in endpoint_snapshots(now=now, model=model)
        if not endpoint.stale
    ]
    if ordering == "latency":
        offers.sort(key=lambda offer: (offer["latency_ms"] is None, offer["latency_ms"] or 0, str(offer["id"])))
    else:
        offers.sort(key=lambda offer: (offer["input_price_now"] + offer["output_price_now"], str(offer["id"])))
    return offers


def token_quote_voucher_credits(
    *, buyer: Organization, result: TokenDispatchResult, request: TokenRequest, now: datetime
) -> list[int]:
    """What the buyer's vouchers would pay now of each placement of a token quote, in fen, as they pay
    the token order's usage lines on its invoice (its endpoint's pool, its lease's workload); nothing
    is reserved."""
    return usage_voucher_credits(
        buyer=buyer,
        workload=WORKLOADS[request.workload],
        alternatives=[
            [QuotedUsage(placement.pool_id, placement.estimated_cost, placement.start_at, placement.end_at)]
            for placement in result.placements
        ],
        now=now,
    )
