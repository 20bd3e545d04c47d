"""The dispatcher: (requirements, pool snapshot, time) -> ranked placements.

A pure function, like a cluster scheduler: a filter stage drops the pools that
cannot take the order, each with a reason; a score stage prices the rest over
the hours they would run and ranks them, the electricity burnt weighed in
(``ELECTRICITY_WEIGHT``). Deferrable work (a deadline) is shifted to the
cheapest window that still ends before the deadline, valley hours mostly, and
may go west; real-time inference stays within ``max_latency_ms`` of its users.

Prices and tariffs are per local (Asia/Shanghai) hour and repeat daily, so the
cost of any run is the difference of a cumulative price function, computed in
O(1); and the cheapest start of a run lies where its start or its end meets a
price change, so only those starts are tried. Floats are used for ranking
speed: these are estimates, never money; invoices are rated exactly elsewhere.
"""

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.utils.translation import gettext, gettext_lazy

from core.timezones import local_zone

MAX_PLACEMENTS = 10

REALTIME = "realtime_inference"

# Score weights: the score is the expected cost, made worse by latency (for
# real-time work), unreliability and brown power. Lower is better.
LATENCY_WEIGHT_PER_MS = 0.005
GREEN_WEIGHT = 0.05
RELIABILITY_WEIGHT = 2.0
# The grid's own aim (docs/architecture.md: shifting load between regions and hours cuts the
# electricity per token): a yuan of electricity the placement burns weighs as much as this many
# yuan of the buyer's price, in the pool chosen and in the start chosen for deferrable work.
# Electricity is about 3% of a card-hour's price, so the buyer's price still leads: on the
# national scenario buyers pay about 1% more per card-hour than with a cost-only optimizer
# (the cheapest pool now), for 16% less electricity (simulate_dispatch, docs/benchmarks.md).
ELECTRICITY_WEIGHT = 30.0

REASONS = {  # in the request's language when said (a 422's message, a quote's reasons)
    "stale": gettext_lazy("no recent heartbeat"),
    "gpu_model": gettext_lazy("other GPU model"),
    "memory": gettext_lazy("too little GPU memory"),
    "hub_not_allowed": gettext_lazy("hub not allowed"),
    "latency": gettext_lazy("latency over {max_latency_ms} ms"),
    "green_share": gettext_lazy("green share under {min_green_share}"),
    "free_cards": gettext_lazy("not enough free cards"),
    "price": gettext_lazy("price over {max_price} per card-hour"),
}


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    id: Any
    provider_id: Any
    hub: str
    region: str
    gpu_model: str
    memory_gb: int
    power_watts: int
    green_share: float
    pue: float
    hour_prices: Sequence[float]  # price per card-hour, by local hour 0..23
    tariff_kwh: Sequence[float]  # the hub's electricity price, yuan per kWh, by local hour
    latency_ms: Mapping[str, int]
    # What changes from one placement to the next comes last.
    free_cards: int
    stale: bool
    reliability: float = 1.0


@dataclass(frozen=True)
class Requirements:
    cards: int
    duration_hours: float
    workload: str
    gpu_model: str | None = None
    min_memory_gb: int | None = None
    user_region: str | None = None
    max_latency_ms: int | None = None
    earliest_start: datetime | None = None
    deadline: datetime | None = None
    max_price: float | None = None
    min_green_share: float | None = None
    allowed_hubs: frozenset[str] | None = None
    split: bool = False
    # The offer the buyer chose: only this pool is considered (see ``marketplace.services.quote``).
    pool: Any | None = None
    # on_demand or reserved (take-or-pay): how the leases bill, not where they go.
    commitment: str = "on_demand"

    @property
    def deferrable(self) -> bool:
        return self.workload != REALTIME and self.deadline is not None


@dataclass(frozen=True)
class Allocation:
    pool_id: Any
    cards: int
    estimated_cost: float
    electricity_cost: float


@dataclass(frozen=True)
class Placement:
    hub: str
    region: str
    start_at: datetime
    end_at: datetime
    allocations: tuple[Allocation, ...]
    estimated_cost: float
    electricity_cost: float
    latency_ms: int | None
    score: float

    @property
    def cards(self) -> int:
        return sum(allocation.cards for allocation in self.allocations)


@dataclass
class DispatchResult:
    placements: list[Placement]
    rejections: dict[Any, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self, requirements: Requirements) -> list[dict[str, Any]]:
        """How many pools were turned down for each reason, most common first."""
        counts = Counter(self.rejections.values())
        return [
            {"reason": reason, "message": reason_message(reason, requirements), "pools": count}
            for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ]

    def summary_text(self, requirements: Requirements) -> str:
        parts = [
            gettext("%(pools)s pools: %(reason)s") % {"pools": row["pools"], "reason": row["message"]}
            for row in self.summary(requirements)
        ]
        return "; ".join(parts) if parts else gettext("no pools in the market")


def reason_message(reason: str, requirements: Requirements) -> str:
    return str(REASONS[reason]).format(
        max_latency_ms=requirements.max_latency_ms,
        min_green_share=requirements.min_green_share,
        max_price=requirements.max_price,
    )


# --- time and cost -----------------------------------------------------------


class _PriceCurve:
    """The integral of an hourly, daily-repeating price from a reference midnight."""

    __slots__ = ("changes", "day_total", "prefix", "prices")

    def __init__(self, prices: Sequence[float]) -> None:
        self.prices = prices
        prefix = [0.0]
        for price in prices:
            prefix.append(prefix[-1] + price)
        self.prefix = prefix
        self.day_total = prefix[24]
        self.changes = frozenset(hour for hour in range(24) if prices[hour] != prices[hour - 1])  # local hours

    def cumulative(self, hours: float) -> float:
        days, rest = divmod(hours, 24.0)
        hour = int(rest)
        return days * self.day_total + self.prefix[hour] + self.prices[hour] * (rest - hour)

    def between(self, start: float, hours: float) -> float:
        """``cumulative(start + hours) - cumulative(start)``, the same sums written out (the hottest
        call of a quote: a call less per end)."""
        prefix, prices, day_total = self.prefix, self.prices, self.day_total
        days, rest = divmod(start + hours, 24.0)
        hour = int(rest)
        end = days * day_total + prefix[hour] + prices[hour] * (rest - hour)
        days, rest = divmod(start, 24.0)
        hour = int(rest)
        return end - (days * day_total + prefix[hour] + prices[hour] * (rest - hour))


@lru_cache(maxsize=65536)
def _cheapest_inside(
    curve: _PriceCurve, duration: float, first: int, last: int, first_end: int, last_end: int
) -> tuple[float, float] | None:
    """The cheapest run of ``duration`` hours, as (cost, start), of those starting at a price change
    in whole hours ``first`` to ``last``, or ending at one in ``first_end`` to ``last_end``; None
    if there is no such run. Keyed by whole hours: every window that holds the same price changes
    shares it, whatever its exact ends."""
    best = None
    changes = curve.changes
    starts = itertools.chain(
        (hour for hour in range(first, last + 1) if hour % 24 in changes),
        (end - duration for end in range(first_end, last_end + 1) if end % 24 in changes),
    )
    for start in starts:
        key = (curve.between(start, duration), start)
        if best is None or key < best:
            best = key
    return best


@lru_cache(maxsize=65536)  # a simulated day repeats windows exactly (orders by the minute)
def _cheapest_start(curve: _PriceCurve, earliest: float, latest: float, duration: float) -> float:
    """The start in [earliest, latest] of the cheapest run of ``duration`` hours on ``curve``
    (the earliest of equals). Only starts where the run's start or end meets a price change, and
    the window's ends, can be cheapest; prices repeat daily, so one day of starts is enough. The
    starts strictly inside the window are ranked once per set of whole hours they fall on
    (``_cheapest_inside``); the window's ends, which move with the clock, on each call."""
    latest = min(latest, earliest + 24.0)
    low_end, high_end = earliest + duration, latest + duration
    best = _cheapest_inside(
        curve,
        duration,
        math.floor(earliest) + 1,
        math.ceil(latest) - 1,
        math.floor(low_end) + 1,
        math.ceil(high_end) - 1,
    )
    for start in (earliest, latest):
        key = (curve.between(start, duration), start)
        if best is None or key < best:
            best = key
    return best[1]  # type: ignore[index]  # the window's ends were tried


def _hours_since(reference: datetime, at: datetime) -> float:
    return (at - reference).total_seconds() / 3600.0


# --- the dispatcher ----------------------------------------------------------


def _filter(pool: PoolSnapshot, req: Requirements) -> str | None:
    """The first reason this pool cannot take the order, or None. Free cards are
    checked later, since a split order may combine pools."""
    if pool.stale:
        return "stale"
    if req.gpu_model is not None and pool.gpu_model != req.gpu_model:
        return "gpu_model"
    if req.min_memory_gb is not None and pool.memory_gb < req.min_memory_gb:
        return "memory"
    if req.allowed_hubs and pool.hub not in req.allowed_hubs:
        return "hub_not_allowed"
    if req.workload == REALTIME:
        latency = pool.latency_ms.get(req.user_region or "")
        if latency is None or req.max_latency_ms is None or latency > req.max_latency_ms:
            return "latency"
    if req.min_green_share is not None and pool.green_share < req.min_green_share:
        return "green_share"
    return None


class _Costs:
    """What pricing a pool takes that no order changes: its price and tariff curves, the energy a
    card draws in an hour (at the pool's PUE), the weight of its green share and reliability, and
    its id as text (the tie-break). Worked out once per snapshot (``_costs``): the snapshots are
    kept from one quote to the next (``selectors.pool_snapshots``)."""

    __slots__ = ("curve", "kwh", "name", "pool", "scored", "tariff", "weight")

    def __init__(self, pool: PoolSnapshot) -> None:
        self.pool = pool
        self.curve = _curve(tuple(pool.hour_prices))
        self.tariff = _curve(tuple(pool.tariff_kwh))
        self.kwh = pool.power_watts / 1000.0 * pool.pue
        self.weight = (1 - GREEN_WEIGHT * pool.green_share) * (1 + RELIABILITY_WEIGHT * (1 - pool.reliability))
        self.name = str(pool.id)
        # Price and weighted electricity together, by local hour: where deferrable work starts.
        self.scored = _curve(_scored_hours(tuple(pool.hour_prices), tuple(pool.tariff_kwh), self.kwh))


# By id() of the snapshot, which each entry holds (so that id is not reused while it is kept).
_costs_held: dict[int, _Costs] = {}


def _costs(pool: PoolSnapshot) -> _Costs:
    costs = _costs_held.get(id(pool))
    if costs is None or costs.pool is not pool:
        if len(_costs_held) >= 16384:
            _costs_held.clear()
        costs = _costs_held[id(pool)] = _Costs(pool)
    return costs


@dataclass(slots=True)
class _Priced:
    pool: PoolSnapshot
    costs: _Costs
    start: float
    price_integral: float  # sum of price per card-hour over the run, for one card
    electricity_integral: float  # kWh price over the run, for one card
    per_card_score: float

    def at(self, start: float, req: Requirements) -> "_Priced":
        """The same pool run from another start."""
        return _priced(self.pool, self.costs, start, req)


def _priced(pool: PoolSnapshot, costs: _Costs, start: float, req: Requirements) -> _Priced:
    price_integral = costs.curve.between(start, req.duration_hours)
    electricity = costs.tariff.between(start, req.duration_hours)
    weight = costs.weight
    if req.workload == REALTIME and req.user_region:
        weight *= 1 + LATENCY_WEIGHT_PER_MS * pool.latency_ms.get(req.user_region, 0)
    return _Priced(
        pool,
        costs,
        start,
        price_integral,
        electricity * costs.kwh,
        price_integral * weight + ELECTRICITY_WEIGHT * electricity * costs.kwh,
    )


@lru_cache(maxsize=4096)
def _curve(prices: tuple[float, ...]) -> _PriceCurve:
    """Curves are shared by every pool, and every call, with the same hourly prices."""
    return _PriceCurve(prices)


@lru_cache(maxsize=4096)
def _scored_hours(prices: tuple[float, ...], tariff: tuple[float, ...], kwh: float) -> tuple[float, ...]:
    """A card-hour's price plus its weighted electricity, by local hour."""
    return tuple(price + ELECTRICITY_WEIGHT * kwh * kwh_price for price, kwh_price in zip(prices, tariff, strict=True))


def _price(pool: PoolSnapshot, req: Requirements, window: tuple[float, float]) -> _Priced:
    costs = _costs(pool)
    earliest, latest = window
    # Deferrable work starts where price and weighted electricity together are lowest.
    start = _cheapest_start(costs.scored, earliest, latest, req.duration_hours) if req.deferrable else earliest
    return _priced(pool, costs, start, req)


def dispatch(req: Requirements, pools: Iterable[PoolSnapshot], now: datetime) -> DispatchResult:
    """Rank the ways to place ``req`` on ``pools`` at ``now``; nothing is reserved."""
    reference = now.astimezone(local_zone()).replace(hour=0, minute=0, second=0, microsecond=0)
    earliest = _hours_since(reference, max(now, req.earliest_start or now))
    latest = _hours_since(reference, req.deadline) - req.duration_hours if req.deadline else earliest
    result = DispatchResult(placements=[])
    if req.workload != REALTIME and req.max_latency_ms is not None:
        result.warnings.append("max_latency_ms is ignored for batch and training work.")

    window = (earliest, latest)
    rejections = result.rejections
    eligible: list[_Priced] = []
    for pool in pools:
        reason = _filter(pool, req)
        if reason is None:
            too_small = not req.split and pool.free_cards < req.cards
            if too_small and req.max_price is None:  # too few cards, whatever the run would cost: not priced
                rejections[pool.id] = "free_cards"
                continue
            priced = _price(pool, req, window)
            if req.max_price is not None and priced.price_integral / req.duration_hours > req.max_price:
                reason = "price"
            elif too_small:
                reason = "free_cards"
            else:
                eligible.append(priced)
                continue
        rejections[pool.id] = reason

    if req.split:
        placements, short = _split_placements(eligible, req, reference)
        for priced in short:
            result.rejections[priced.pool.id] = "free_cards"
    else:
        best = heapq.nsmallest(MAX_PLACEMENTS, eligible, key=lambda p: (p.per_card_score, p.start, p.costs.name))
        placements = [_placement([(priced, req.cards)], req, reference) for priced in best]
    placements.sort(key=lambda placement: (placement.score, placement.start_at, str(placement.allocations[0].pool_id)))
    result.placements = placements[:MAX_PLACEMENTS]
    return result


def cheapest_now(req: Requirements, pools: Iterable[PoolSnapshot], now: datetime) -> Placement | None:
    """A cost-only optimizer, as a buyer with SkyPilot would run one: the pool that is
    cheapest to run on from now, anywhere the filters (latency bound included) allow,
    with the cards free; no time shifting and no other score."""
    reference = now.astimezone(local_zone()).replace(hour=0, minute=0, second=0, microsecond=0)
    earliest = _hours_since(reference, max(now, req.earliest_start or now))
    immediate = replace(req, deadline=None, earliest_start=None)
    best: _Priced | None = None
    for pool in pools:
        if pool.free_cards < req.cards or _filter(pool, immediate) is not None:
            continue
        priced = _price(pool, immediate, (earliest, earliest))
        if req.max_price is not None and priced.price_integral / req.duration_hours > req.max_price:
            continue
        if best is None or (priced.price_integral, str(pool.id)) < (best.price_integral, str(best.pool.id)):
            best = priced
    return _placement([(best, req.cards)], immediate, reference) if best else None


def _placement(parts: Sequence[tuple[_Priced, int]], req: Requirements, reference: datetime) -> Placement:
    first = parts[0][0]
    start_at = reference + timedelta(hours=first.start)
    allocations = tuple(
        Allocation(
            pool_id=priced.pool.id,
            cards=cards,
            estimated_cost=priced.price_integral * cards,
            electricity_cost=priced.electricity_integral * cards,
        )
        for priced, cards in parts
    )
    latency = first.pool.latency_ms.get(req.user_region) if req.user_region else None
    return Placement(
        hub=first.pool.hub,
        region=first.pool.region,
        start_at=start_at,
        end_at=start_at + timedelta(hours=req.duration_hours),
        allocations=allocations,
        estimated_cost=sum(a.estimated_cost for a in allocations),
        electricity_cost=sum(a.electricity_cost for a in allocations),
        latency_ms=latency,
        score=sum(priced.per_card_score * cards for priced, cards in parts),
    )


def _split_placements(
    eligible: list[_Priced], req: Requirements, reference: datetime
) -> tuple[list[Placement], list[_Priced]]:
    """Whole-pool placements where one pool suffices, else the cheapest pools of one
    hub combined, all starting together (at the cheapest start of the hub's best pool)."""
    # Of the whole-pool placements only the first MAX_PLACEMENTS in dispatch's order can be shown:
    # only those are made (their score and start as _placement works them out).
    whole = heapq.nsmallest(
        MAX_PLACEMENTS,
        (p for p in eligible if p.pool.free_cards >= req.cards),
        key=lambda p: (p.per_card_score * req.cards, reference + timedelta(hours=p.start), p.costs.name),
    )
    placements = [_placement([(p, req.cards)], req, reference) for p in whole]
    by_hub: dict[str, list[_Priced]] = {}
    for priced in eligible:
        by_hub.setdefault(priced.pool.hub, []).append(priced)
    short: list[_Priced] = []
    for hub_pools in by_hub.values():
        hub_pools.sort(key=lambda p: (p.per_card_score, p.costs.name))
        start = hub_pools[0].start
        parts: list[tuple[_Priced, int]] = []
        needed = req.cards
        for priced in hub_pools:
            if needed == 0:
                break
            if priced.pool.free_cards <= 0:
                continue
            take = min(needed, priced.pool.free_cards)
            parts.append((priced.at(start, req), take))
            needed -= take
        if needed == 0 and len(parts) > 1:
            placements.append(_placement(parts, req, reference))
        elif needed > 0:
            short.extend(hub_pools)
    if placements:
        short = []
    return placements, short
