"""Reads of the marketplace: offers, the dispatcher's snapshot, orders and leases."""

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import (
    Count,
    DecimalField,
    F,
    IntegerField,
    JSONField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.fields.json import KT, KeyTextTransform
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone

from core.money import round_to_fen, shown_price
from core.timezones import local_zone
from marketplace.dispatch import DispatchResult, PoolSnapshot, Requirements
from marketplace.models import Lease, Order, PriceIndexSnapshot
from marketplace.offers import Held, pools_held
from marketplace.price_index import area_index, areas_of
from orbit.reference_data import HUB_CODE as ORBIT_HUB
from organizations.models import Organization
from pools.models import Hub, PricePlan, ResourcePool
from pools.selectors import fresh_after, plan_in_force, plans_by_pool
from pools.tariffs import hourly_kwh_prices, local_hour
from vouchers.charges import ChargeLine
from vouchers.selectors import redeemable_vouchers, voucher_estimates

# Provider reliability is the share of leases that did not fail over this window.
RELIABILITY_WINDOW = timedelta(days=30)


def offers_list(
    *, now: datetime, user_region: str | None = None, also_pools: Sequence[Any] = ()
) -> QuerySet[ResourcePool]:
    """Active, fresh pools with free cards, each annotated with its price now.

    ``price_now`` is the price per card-hour of the local hour ``now`` falls in,
    under the price version in force at ``now``; ``latency_ms`` the hub's round
    trip to ``user_region``. One SQL query; filtering and ordering happen in the
    database on ``pool_offer_idx`` and ``price_plan_lookup_idx``. ``also_pools``: pools
    offered though they have no free cards of their own (deposited cards: ``bank_capacity``).
    """
    plan_in_force = PricePlan.objects.filter(pool=OuterRef("pk"), effective_from__lte=now).order_by("-effective_from")
    hour = local_hour(now)
    offers = (
        ResourcePool.objects.filter(
            Q(free_cards__gt=0) | Q(pk__in=list(also_pools)),
            status=ResourcePool.Status.ACTIVE,
            last_heartbeat_at__gte=fresh_after(now),
        )
        .exclude(hub_id=ORBIT_HUB)  # satellites are ordered through their datasets
        .select_related("provider", "hub", "gpu_model")
        .annotate(
            price_now=Subquery(
                plan_in_force.annotate(
                    rate=Cast(KT(f"hour_prices__{hour}"), DecimalField(max_digits=22, decimal_places=10))
                ).values("rate")[:1]
            ),
            hour_prices_now=Subquery(plan_in_force.values("hour_prices")[:1], output_field=JSONField()),
            token_prices_now=Subquery(plan_in_force.values("token_prices")[:1], output_field=JSONField()),
            reserved_discount_now=Subquery(plan_in_force.values("reserved_discount")[:1]),
        )
        .filter(price_now__isnull=False)
        .annotate(reserved_price_now=F("price_now") * (Value(1) - F("reserved_discount_now")))
    )
    if user_region:
        offers = offers.annotate(latency_ms=Cast(KeyTextTransform(user_region, "hub__latency_ms"), IntegerField()))
    return offers


def provider_reliability(*, since: datetime) -> dict[Any, float]:
    """Share of each provider's leases since ``since`` that did not fail."""
    rows = (
        Lease.objects.filter(created_at__gte=since)
        .values("provider_id")
        .annotate(total=Count("id"), failed=Count("id", filter=Q(status=Lease.Status.FAILED)))
    )
    return {row["provider_id"]: 1 - row["failed"] / row["total"] for row in rows if row["total"]}


class _Memo:
    """A value recomputed at most every ``seconds`` in this process."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.value, self.expires = seconds, None, 0.0

    def get(self, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        if now >= self.expires:
            self.value, self.expires = compute(), now + self.seconds
        return self.value


# Hubs are reference data and reliability moves over weeks: both may be a minute old.
_hubs = _Memo(60)
_reliability = _Memo(60)


def _hub_facts() -> dict[str, tuple[str, tuple[float, ...], dict[str, int]]]:
    return {hub.code: (hub.region, hourly_kwh_prices(hub.tariff), hub.latency_ms) for hub in Hub.objects.all()}


class _Built(NamedTuple):
    """The dispatcher's snapshots as last built, and the moments between which they hold."""

    generation: int  # the offers snapshot's
    reliability: dict[Any, float]
    valid_from: datetime
    valid_until: datetime
    pools: list[Any]  # the offers snapshot's pools they were built from (``Held.pools``), in its order
    by_pool: tuple[PoolSnapshot | None, ...]  # each one's snapshot; None when not offered
    snapshots: tuple[PoolSnapshot, ...]


_built: list[_Built] = []
# Each pool's last PoolSnapshot, by pool: (the offers snapshot's pool, its price version, stale,
# reliability) it was built from, and itself. A pool read again is a new object there.
_built_pools: dict[Any, tuple[Any, Any, bool, float, PoolSnapshot]] = {}
_NEVER = datetime.max.replace(tzinfo=UTC)


def pool_snapshots(*, now: datetime) -> list[PoolSnapshot]:
    """Every active pool on the ground with a price version in force at ``now``, in id order, as
    the dispatcher sees it (satellites take only orders for the data they hold: ``marketplace.orbit``).

    Built from the offers snapshot (``marketplace.offers.pools_held``), which learns in one
    indexed query per call which pools changed (price versions, capacity, heartbeats, status:
    every such write marks its pool) and reads only those again. What depends on the clock is
    worked out here: the version in force and whether the last heartbeat is still fresh. The list
    is kept until the snapshot changes, the reliability figures are recomputed, or the clock
    reaches the next price version or the first fresh heartbeat to go stale; a pool's snapshot is
    kept while its row, version, staleness and reliability stay the same. So a quote or an order
    reads no pool row unless one changed, and builds no snapshot unless its pool did.

    When only some pools were read again (an order takes cards from one or two), only those are
    looked at: every other pool's snapshot holds until the list's end, which can only come sooner
    (the pools read again may end it earlier, never later: their old ends are kept).
    """
    reliability = _reliability.get(lambda: provider_reliability(since=now - RELIABILITY_WINDOW))
    held = pools_held()
    built = _built[0] if _built else None
    if built is not None and built.reliability is reliability and built.valid_from <= now < built.valid_until:
        if built.generation == held.generation:
            return list(built.snapshots)
        if len(built.pools) == len(held.pools):
            patched = _patched(built, held, reliability, now)
            if patched is not None:
                _built[:] = [patched]
                return list(patched.snapshots)
    fresh = fresh_after(now)
    stale_after = now - fresh
    until = _NEVER
    by_pool = []
    if len(_built_pools) > 4 * len(held.pools) + 1000:  # pools gone
        _built_pools.clear()
    for pool in held.pools:
        snapshot, pool_until = _pool_snapshot(pool, now, fresh, stale_after, reliability)
        until = min(until, pool_until)
        by_pool.append(snapshot)
    snapshots = tuple(snapshot for snapshot in by_pool if snapshot is not None)
    _built[:] = [_Built(held.generation, reliability, now, until, held.pools, tuple(by_pool), snapshots)]
    return list(snapshots)


def _patched(built: _Built, held: Held, reliability: dict[Any, float], now: datetime) -> _Built | None:
    """``built`` with the snapshots of the pools read again since made anew at ``now``; None when
    the pools are not the same ones in the same order (a pool came or went)."""
    fresh = fresh_after(now)
    stale_after = now - fresh
    until = built.valid_until
    by_pool = list(built.by_pool)
    for position, (old, pool) in enumerate(zip(built.pools, held.pools, strict=True)):
        if old is pool:
            continue
        if old.id != pool.id:
            return None
        by_pool[position], pool_until = _pool_snapshot(pool, now, fresh, stale_after, reliability)
        until = min(until, pool_until)
    snapshots = tuple(snapshot for snapshot in by_pool if snapshot is not None)
    return _Built(held.generation, reliability, now, until, held.pools, tuple(by_pool), snapshots)


def _pool_snapshot(
    pool: Any, now: datetime, fresh: datetime, stale_after: timedelta, reliability: dict[Any, float]
) -> tuple[PoolSnapshot | None, datetime]:
    """The offers snapshot's pool as the dispatcher sees it at ``now`` (None when not offered:
    inactive or without a price version in force), and the moment until which that holds (the
    next price version, or its fresh heartbeat going stale)."""
    if not pool.active:
        return None, _NEVER
    until = _NEVER
    in_force = None
    for version in pool.plans:
        if version.effective_from > now:
            until = version.effective_from
            break
        in_force = version
    if in_force is None:
        return None, until
    heartbeat = pool.last_heartbeat_at
    stale = heartbeat is None or heartbeat < fresh
    if heartbeat is not None and not stale:
        until = min(until, heartbeat + stale_after)
    share = reliability.get(pool.provider_id, 1.0)
    kept = _built_pools.get(pool.id)
    if kept is not None and kept[0] is pool and kept[1] is in_force and kept[2] == stale and kept[3] == share:
        return kept[4], until
    snapshot = PoolSnapshot(
        pool.id,
        pool.provider_id,
        pool.hub,
        pool.region,
        pool.gpu_model,
        pool.memory_gb,
        pool.power_watts,
        float(pool.green_share),
        float(pool.pue),
        in_force.floats,
        pool.tariff_kwh,
        pool.latency_ms,
        pool.free_cards,
        stale,
        share,
    )
    _built_pools[pool.id] = (pool, in_force, stale, share, snapshot)
    return snapshot, until


def reserved_discounts(*, pool_ids: Iterable[Any], at: datetime) -> dict[Any, Decimal]:
    """Each pool's reserved discount in the price version in force at ``at`` (from the offers
    snapshot, brought up to date: the version the dispatcher priced); pools without one are left out."""
    held = pools_held().by_id
    discounts = {}
    for pool_id in pool_ids:
        pool = held.get(pool_id)
        plan = pool.plan_at(at) if pool is not None else None
        if plan is not None:
            discounts[pool_id] = plan.reserved_discount
    return discounts


def lease_list(*, organization: Organization) -> QuerySet[Lease]:
    """Buyers see their leases, providers the leases on their pools, operators all."""
    leases = Lease.objects.select_related("pool", "price_plan", "order")
    if organization.kind == Organization.Kind.BUYER:
        return leases.filter(buyer=organization)
    if organization.kind == Organization.Kind.PROVIDER:
        return leases.filter(provider=organization)
    if organization.kind == Organization.Kind.OPERATOR:
        return leases
    return leases.none()


def order_list(*, organization: Organization) -> QuerySet[Order]:
    orders = Order.objects.select_related("orbit").prefetch_related("leases__pool", "leases__price_plan")
    if organization.kind == Organization.Kind.OPERATOR:
        return orders
    return orders.filter(buyer=organization)


class QuotedUsage(NamedTuple):
    """Usage a quote prices on one pool: its estimated cost in yuan, spread over [start_at, end_at)."""

    pool_id: Any
    estimated_cost: float
    start_at: datetime
    end_at: datetime


def usage_voucher_credits(
    *, buyer: Organization, workload: str, alternatives: Sequence[Sequence[QuotedUsage]], now: datetime
) -> list[int]:
    """What the buyer's vouchers would pay now of each alternative (a quote's placement: its usage on
    each pool), in fen; nothing is reserved. Each usage is one charge line as billing offers a lease's
    usage lines to vouchers (``billing.voucher_credits``): the pool's provider, hub and GPU model, and
    the lease's ``workload``; its period the usage's own, since the usage is still to come."""
    if not alternatives or not redeemable_vouchers(buyer=buyer, at=now).exists():
        return [0] * len(alternatives)
    pools = {
        pool_id: (str(provider_id), hub, gpu_model)
        for pool_id, provider_id, hub, gpu_model in ResourcePool.objects.filter(
            pk__in={usage.pool_id for usages in alternatives for usage in usages}
        ).values_list("pk", "provider_id", "hub_id", "gpu_model_id")
    }
    lines = [
        [
            ChargeLine(
                line_ref=str(index),
                amount=round_to_fen(Decimal(str(usage.estimated_cost))),
                lease_id="",
                pool_id=str(usage.pool_id),
                provider_id=pools[usage.pool_id][0],
                hub=pools[usage.pool_id][1],
                gpu_model=pools[usage.pool_id][2],
                workload=workload,
                period_start=usage.start_at,
                period_end=usage.end_at,
            )
            for index, usage in enumerate(usages)
        ]
        for usages in alternatives
    ]
    return voucher_estimates(buyer=buyer, alternatives=lines, at=now)


def quote_voucher_credits(
    *, buyer: Organization, result: DispatchResult, requirements: Requirements, now: datetime
) -> list[int]:
    """What the buyer's vouchers would pay now of each placement of a quote, in fen; nothing is reserved."""
    return usage_voucher_credits(
        buyer=buyer,
        workload=requirements.workload,
        alternatives=[
            [
                QuotedUsage(allocation.pool_id, allocation.estimated_cost, placement.start_at, placement.end_at)
                for allocation in placement.allocations
            ]
            for placement in result.placements
        ],
        now=now,
    )


def lowest_prices_now(*, now: datetime) -> dict[str, Decimal]:
    """The lowest price per card-hour now in each hub: the first of ``GET offers/?hub=&ordering=price``."""
    return {
        row["hub_id"]: row["lowest"]
        for row in offers_list(now=now).values("hub_id").annotate(lowest=Min("price_now")).order_by()
    }


def lowest_prices_by_model(*, now: datetime) -> dict[tuple[str, str], Decimal]:
    """The lowest price per card-hour now of each GPU model in each hub, by (hub, model): the first of
    ``GET offers/?hub=&gpu_model=&ordering=price``. Prices compare only within a model."""
    rows = offers_list(now=now).values("hub_id", "gpu_model_id").annotate(lowest=Min("price_now")).order_by()
    return {(row["hub_id"], row["gpu_model_id"]): row["lowest"] for row in rows}


def placements_by_hub(*, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Leases placed between ``since`` and ``until``, by hub and UTC hour: leases and cards."""
    rows = (
        Lease.objects.filter(created_at__gte=since, created_at__lt=until)
        .values(hub=F("pool__hub_id"), hour=TruncHour("created_at"))
        .annotate(leases=Count("pk"), cards=Sum("cards"))
        .order_by("hour", "hub")
    )
    return [dict(row) for row in rows]


# An hour's point as the API shows it, in SQL: the snapshot holds the index of every area, and this
# runs for every hourly series (a month of them is 720 rows), so PostgreSQL formats it. The area's
# object is read once per row (jsonb_to_record): reading each member apart took 7 times as long.
_HOURLY_INDEX_SQL = """
SELECT s.gpu_model_id, to_char(s.hour AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       round(a.p10, 4)::text, round(a.median, 4)::text, round(a.p90, 4)::text, a.cards
FROM marketplace_priceindexsnapshot AS s,
     jsonb_to_record(s.index -> %(area)s) AS a (p10 numeric, median numeric, p90 numeric, cards int)
WHERE s.hour >= %(start)s AND s.hour < %(end)s AND a.cards IS NOT NULL {model}
ORDER BY s.gpu_model_id, s.hour
"""


def price_index(
    *, start: datetime, end: datetime, granularity: str, area: str, gpu_model: str | None = None
) -> list[dict[str, Any]]:
    """The compute price index: per GPU model and hour (or local day), the card-hour prices of the
    active offers of ``area`` (a hub's code, east, west or national) weighted by their free cards:
    p10, median and p90 (``marketplace.price_index``) and the free cards offered (by day, the mean
    over the day's snapshots with offers there). An hour reads the index its snapshot holds; a
    day merges the offers of its hours. Points as the API shows them: ``at`` in UTC ISO 8601, prices
    with 4 places rounded half up (``core.money.shown_price``, as PostgreSQL's ``round`` does)."""
    series: dict[str, list[dict[str, Any]]] = {}
    if granularity == "hour":
        params: dict[str, Any] = {"start": start, "end": end, "area": area, "model": gpu_model}
        with connection.cursor() as cursor:
            cursor.execute(
                _HOURLY_INDEX_SQL.format(model="AND s.gpu_model_id = %(model)s" if gpu_model else ""), params
            )
            for model, at, p10, median, p90, cards in cursor.fetchall():
                series.setdefault(model, []).append(
                    {"at": at, "p10": p10, "median": median, "p90": p90, "cards": cards}
                )
        return [{"gpu_model": model, "area": area, "points": points} for model, points in series.items()]
    snapshots = PriceIndexSnapshot.objects.filter(hour__gte=start, hour__lt=end).order_by("gpu_model_id", "hour")
    if gpu_model is not None:
        snapshots = snapshots.filter(gpu_model_id=gpu_model)
    regions = dict(Hub.objects.values_list("code", "region"))
    days: dict[tuple[str, datetime], list[list[Any]]] = defaultdict(list)
    for model, hour, offers in snapshots.values_list("gpu_model_id", "hour", "offers"):
        pairs = [pair for hub, hub_pairs in offers.items() if area in areas_of(hub, regions) for pair in hub_pairs]
        if pairs:
            day = hour.astimezone(local_zone()).replace(hour=0).astimezone(UTC)
            days[(model, day)].append(pairs)
    for (model, day), hours in days.items():
        index = area_index((Decimal(price), cards) for pairs in hours for price, cards in pairs)
        if index is not None:
            series.setdefault(model, []).append(
                {
                    "at": day.isoformat().replace("+00:00", "Z"),
                    **{name: f"{shown_price(index[name]):f}" for name in ("p10", "median", "p90")},
                    "cards": round(index["cards"] / len(hours)),
                }
            )
    return [{"gpu_model": model, "area": area, "points": points} for model, points in series.items()]


def _card_hours_cost(
    cards: int, start: datetime, end: datetime, rate: Callable[[datetime], Decimal], breaks: list[datetime]
) -> Decimal:
    """``cards`` x ``rate`` from ``start`` to ``end``, per card-hour: split at every hour (a
    time-of-use band holds for a local hour, and the billing time zone's hours are UTC's) and at
    ``breaks`` (where the rate's price version changes), each piece at its rate and its share of
    an hour."""
    points = {start, end, *(at for at in breaks if start < at < end)}
    hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while hour < end:
        points.add(hour)
        hour += timedelta(hours=1)
    ordered = sorted(points)
    return sum(
        (cards * rate(since) * Decimal((until - since).total_seconds()) / 3600 for since, until in pairwise(ordered)),
        Decimal(0),
    )


def lease_unlocked_cost(*, lease: Lease, start: datetime, end: datetime) -> Decimal:
    """The expected cost of a lease's unlocked hours from ``start`` to ``end`` (past its price
    lock): each at the version in force then for running leases (``plan_in_force``), with the
    versions known now (a rise announced and still in its notice from when it reaches them)."""
    versions = plans_by_pool(pool_ids=[lease.pool_id], until=end).get(lease.pool_id, [])
    plans = PricePlan.objects.in_bulk([plan_id for _, _, plan_id in versions])
    return _card_hours_cost(
        lease.cards,
        start,
        end,
        lambda at: plans[plan_in_force(versions, at)].rate_at(at),
        [at for at, _, _ in versions],
    )


def price_change_effects(plan: PricePlan, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The active leases of the pool of ``plan`` (a new version, saved or not) that it reaches, in
    id order: those with unlocked hours (an extension past their booked end, ``price_locked_until``)
    left when ``plan`` reaches running leases. Each with when it starts paying ``plan`` (not before
    now, its price lock's end, nor ``plan.running_from``), the change in its expected cost (its
    cards x, per time-of-use band, the new price less the one it would pay without ``plan``, from
    then to its end), and whether the new price (its average over the day, as an order's
    max_price is an average) passes its max_price."""
    now = now or timezone.now()
    effects = []
    leases = list(
        Lease.objects.filter(
            pool_id=plan.pool_id, status__in=Lease.ACTIVE, end_at__gt=F("price_locked_until")
        ).order_by("pk")
    )
    if not leases:
        return []
    until = max(lease.end_at for lease in leases)
    versions = [
        version
        for version in plans_by_pool(pool_ids=[plan.pool_id], until=until).get(plan.pool_id, [])
        if version[2] != plan.pk
    ]
    plans = PricePlan.objects.in_bulk([plan_id for _, _, plan_id in versions])
    for lease in leases:
        takes_effect_at = max(now, plan.running_from, lease.price_locked_until)
        if takes_effect_at >= lease.end_at:
            continue
        # a token order pays by the token: its expected tokens are not known here
        change = (
            Decimal(0)
            if lease.endpoint_id is not None
            else _card_hours_cost(
                lease.cards,
                takes_effect_at,
                lease.end_at,
                lambda at: plan.rate_at(at) - plans[plan_in_force(versions, at)].rate_at(at),
                [at for at, _, _ in versions],
            )
        )
        effects.append(
            {
                "lease": lease.pk,
                "buyer_id": lease.buyer_id,
                "status": lease.status,
                "cards": lease.cards,
                "end_at": lease.end_at,
                "price_locked_until": lease.price_locked_until,
                "takes_effect_at": takes_effect_at,
                "expected_cost_change": change,
                "max_price": lease.max_price,
                "ends_for_max_price": lease.max_price is not None and plan.average_price > lease.max_price,
            }
        )
    return effects


def max_price_ends(*, leases: QuerySet[Lease], now: datetime) -> dict[Any, datetime]:
    """Of ``leases``, those whose price in their unlocked hours (past their price lock, to their
    end) rose above their max_price by ``now``, each with the moment it did: its lock's end, or
    when a version reached running leases. A price is a version's average over the day, as an
    order's max_price is an average. Booked hours are locked: no moment falls inside them."""
    rows = list(
        leases.filter(max_price__isnull=False, price_locked_until__lte=now, end_at__gt=F("price_locked_until"))
        .order_by("pk")
        .values_list("pk", "pool_id", "price_locked_until", "end_at", "max_price")
    )
    if not rows:
        return {}
    versions = plans_by_pool(pool_ids={row[1] for row in rows}, until=now + timedelta(microseconds=1))
    averages = {
        plan.pk: plan.average_price
        for plan in PricePlan.objects.filter(pk__in={plan_id for pool in versions.values() for _, _, plan_id in pool})
    }
    ends = {}
    for lease_id, pool_id, locked_until, end_at, max_price in rows:
        pool_versions = versions.get(pool_id, [])
        moments = {locked_until} | {at for at, _, _ in pool_versions if locked_until < at <= now and at < end_at}
        for moment in sorted(moments):
            if max_price is not None and averages[plan_in_force(pool_versions, moment)] > max_price:
                ends[lease_id] = moment
                break
    return ends
