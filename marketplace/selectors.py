"""Reads of the marketplace: offers, the dispatcher's snapshot, orders and leases."""

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DecimalField, IntegerField, JSONField, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast

from marketplace.dispatch import PoolSnapshot
from marketplace.models import Lease, Order
from organizations.models import Organization
from pools.models import Hub, PricePlan, ResourcePool
from pools.selectors import fresh_after
from pools.tariffs import band_prices, hour_bands, local_hour

# Provider reliability is the share of leases that did not fail over this window.
RELIABILITY_WINDOW = timedelta(days=30)


def offers_list(*, now: datetime, user_region: str | None = None) -> QuerySet[ResourcePool]:
    """Active, fresh pools with free cards, each annotated with its price now.

    ``price_now`` is the price per card-hour of the local hour ``now`` falls in,
    under the price version in force at ``now``; ``latency_ms`` the hub's round
    trip to ``user_region``. One SQL query; filtering and ordering happen in the
    database on ``pool_offer_idx`` and ``price_plan_lookup_idx``.
    """
    plan_in_force = PricePlan.objects.filter(pool=OuterRef("pk"), effective_from__lte=now).order_by("-effective_from")
    hour = local_hour(now)
    offers = (
        ResourcePool.objects.filter(
            status=ResourcePool.Status.ACTIVE, last_heartbeat_at__gte=fresh_after(now), free_cards__gt=0
        )
        .select_related("provider", "hub", "gpu_model")
        .annotate(
            price_now=Subquery(
                plan_in_force.annotate(
                    rate=Cast(KT(f"hour_prices__{hour}"), DecimalField(max_digits=22, decimal_places=10))
                ).values("rate")[:1]
            ),
            hour_prices_now=Subquery(plan_in_force.values("hour_prices")[:1], output_field=JSONField()),
            token_prices_now=Subquery(plan_in_force.values("token_prices")[:1], output_field=JSONField()),
        )
        .filter(price_now__isnull=False)
    )
    if user_region:
        offers = offers.annotate(latency_ms=Cast(KeyTextTransform(user_region, "hub__latency_ms"), IntegerField()))
    return offers


def _hourly_kwh_prices(tariff: dict[str, Any]) -> tuple[float, ...]:
    prices = {band: float(price) for band, price in band_prices(tariff).items()}
    return tuple(prices[band] for band in hour_bands(tariff))


def provider_reliability(*, since: datetime) -> dict[Any, float]:
    """Share of each provider's leases since ``since`` that did not fail."""
    rows = (
        Lease.objects.filter(created_at__gte=since)
        .values("provider_id")
        .annotate(total=Count("id"), failed=Count("id", filter=Q(status=Lease.Status.FAILED)))
    )
    return {row["provider_id"]: 1 - row["failed"] / row["total"] for row in rows if row["total"]}


def pool_snapshots(*, now: datetime) -> list[PoolSnapshot]:
    """Every active pool as the dispatcher sees it at ``now``, in three queries."""
    hubs = {hub.code: (hub.region, _hourly_kwh_prices(hub.tariff), hub.latency_ms) for hub in Hub.objects.all()}
    reliability = provider_reliability(since=now - RELIABILITY_WINDOW)
    plan_in_force = PricePlan.objects.filter(pool=OuterRef("pk"), effective_from__lte=now).order_by("-effective_from")
    rows = (
        ResourcePool.objects.filter(status=ResourcePool.Status.ACTIVE)
        .annotate(hour_prices_now=Subquery(plan_in_force.values("hour_prices")[:1], output_field=JSONField()))
        .filter(hour_prices_now__isnull=False)
        .values_list(
            "id",
            "provider_id",
            "hub_id",
            "gpu_model_id",
            "gpu_model__memory_gb",
            "gpu_model__power_watts",
            "free_cards",
            "green_share",
            "pue",
            "last_heartbeat_at",
            "hour_prices_now",
        )
        .order_by("id")
    )
    fresh = fresh_after(now)
    snapshots = []
    for pool_id, provider_id, hub, gpu, memory, watts, free, green, pue, heartbeat, prices in rows:
        region, tariff, latency = hubs[hub]
        snapshots.append(
            PoolSnapshot(
                id=pool_id,
                provider_id=provider_id,
                hub=hub,
                region=region,
                gpu_model=gpu,
                memory_gb=memory,
                power_watts=watts,
                free_cards=free,
                green_share=float(green),
                pue=float(pue),
                stale=heartbeat is None or heartbeat < fresh,
                hour_prices=tuple(float(price) for price in prices),
                tariff_kwh=tariff,
                latency_ms=latency,
                reliability=reliability.get(provider_id, 1.0),
            )
        )
    return snapshots


def lease_list(*, organization: Organization) -> QuerySet[Lease]:
    """Buyers see their leases, providers the leases on their pools, operators all."""
    leases = Lease.objects.select_related("pool")
    if organization.kind == Organization.Kind.BUYER:
        return leases.filter(buyer=organization)
    if organization.kind == Organization.Kind.PROVIDER:
        return leases.filter(provider=organization)
    if organization.kind == Organization.Kind.OPERATOR:
        return leases
    return leases.none()


def order_list(*, organization: Organization) -> QuerySet[Order]:
    orders = Order.objects.prefetch_related("leases")
    if organization.kind == Organization.Kind.OPERATOR:
        return orders
    return orders.filter(buyer=organization)
