"""Replay a day of orders against the national pools: the dispatcher against a naive baseline.

Demand follows the grid's shape: real-time inference from the east's user
regions on a daily curve, and batch inference and training with deadlines, at
about 3 card-hours of inference to 1 of training. Both policies place the
same orders on the same pools, in memory (nothing is written); capacity is
held from placement to the booked end, as in the service.

Two baselines:
- naive: what a buyer without a grid does: the nearest east hub to its users,
  starting at once, on the cheapest pool there with the cards free;
- cost-only: what a buyer with a cost optimizer (SkyPilot) does: the cheapest
  pool now anywhere that meets the order's latency bound, starting at once
  (``marketplace.dispatch.cheapest_now``).
"""

import heapq
import random
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from core.timezones import local_zone
from marketplace.dispatch import REALTIME, Placement, PoolSnapshot, Requirements, cheapest_now, dispatch

EAST_REGIONS = ("beijing", "shanghai", "hangzhou", "guangzhou", "shenzhen", "chengdu", "chongqing", "wuhan", "xian")
# Relative real-time inference demand by local hour: quiet at night, busy late morning and evening.
DAILY_CURVE = (
    0.25, 0.2, 0.15, 0.15, 0.15, 0.2, 0.35, 0.6, 0.85, 1.0, 1.0, 0.95,
    0.85, 0.9, 0.95, 0.95, 0.9, 0.85, 0.9, 1.0, 1.0, 0.9, 0.6, 0.4,
)  # fmt: skip
# Order counts chosen so that card-hours split about 2:1:1 between real-time
# inference, batch inference and training: 3 units of inference to 1 of training.
KIND_WEIGHTS = (0.94, 0.056, 0.004)
INFERENCE_MODELS = ("H20", "910B", "L40S", "4090-24G", "A800-80G")
TRAINING_MODELS = ("H800-80G", "H100-80G", "910B", "A800-80G", "H200-141G")


@dataclass(frozen=True)
class SimOrder:
    at: datetime
    requirements: Requirements
    home_region: str  # where the buyer's users (or offices) are


@dataclass
class PolicyResult:
    name: str
    placed: int = 0
    unplaced: int = 0
    buyer_cost: float = 0.0
    electricity_cost: float = 0.0
    card_hours: float = 0.0
    west_card_hours: float = 0.0
    latency_violations: int = 0
    placement_ms: list[float] = field(default_factory=list)

    @property
    def cost_per_card_hour(self) -> float:
        return self.buyer_cost / self.card_hours if self.card_hours else 0.0

    @property
    def electricity_per_card_hour(self) -> float:
        return self.electricity_cost / self.card_hours if self.card_hours else 0.0

    @property
    def west_share(self) -> float:
        return self.west_card_hours / self.card_hours if self.card_hours else 0.0

    def placement_percentile(self, share: float) -> float:
        ordered = sorted(self.placement_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "orders_placed": self.placed,
            "orders_unplaced": self.unplaced,
            "card_hours": round(self.card_hours, 1),
            "buyer_cost": round(self.buyer_cost, 2),
            "cost_per_card_hour": round(self.cost_per_card_hour, 4),
            "electricity_per_card_hour": round(self.electricity_per_card_hour, 4),
            "west_share": round(self.west_share, 4),
            "latency_violations": self.latency_violations,
            "placement_ms_median": round(statistics.median(self.placement_ms), 3) if self.placement_ms else 0.0,
            "placement_ms_p99": round(self.placement_percentile(0.99), 3),
        }


def generate_orders(*, day: datetime, seed: int, orders: int, models: Iterable[str]) -> list[SimOrder]:
    """A day of demand starting at local midnight ``day``; only GPU models in ``models`` are asked for."""
    rng = random.Random(seed)  # noqa: S311 - simulated demand, not secrets
    available = set(models)
    inference_models = [m for m in INFERENCE_MODELS if m in available] or sorted(available)
    training_models = [m for m in TRAINING_MODELS if m in available] or sorted(available)
    hours = list(range(24))
    result: list[SimOrder] = []
    for _ in range(orders):
        region = rng.choice(EAST_REGIONS)
        kind = rng.choices(("realtime", "batch", "training"), weights=KIND_WEIGHTS)[0]
        if kind == "realtime":
            hour = rng.choices(hours, weights=DAILY_CURVE)[0]
            at = day + timedelta(hours=hour, minutes=rng.randrange(60))
            req = Requirements(
                cards=rng.choice((1, 2, 4, 8)),
                duration_hours=rng.choice((1.0, 2.0, 3.0, 4.0)),
                workload=REALTIME,
                gpu_model=rng.choice(inference_models),
                user_region=region,
                max_latency_ms=rng.choice((10, 15, 20)),
            )
        else:
            at = day + timedelta(hours=rng.randrange(24), minutes=rng.randrange(60))
            if kind == "batch":
                cards, duration, slack = rng.choice((8, 16, 32)), rng.choice((2.0, 4.0, 6.0)), rng.choice((12, 18, 24))
                model = rng.choice(inference_models)
            else:
                cards, duration, slack = (
                    rng.choice((32, 64, 128)),
                    rng.choice((6.0, 12.0, 24.0)),
                    rng.choice((24, 36, 48)),
                )
                model = rng.choice(training_models)
            req = Requirements(
                cards=cards,
                duration_hours=duration,
                workload="batch_inference" if kind == "batch" else "training",
                gpu_model=model,
                deadline=at + timedelta(hours=duration + slack),
            )
        result.append(SimOrder(at=at, requirements=req, home_region=region))
    result.sort(key=lambda order: order.at)
    return result


def naive_placement(
    req: Requirements, home_region: str, pools: Sequence[PoolSnapshot], now: datetime
) -> Placement | None:
    """The nearest east hub to the buyer's users, start at once, the cheapest pool there with the cards."""
    east = [p for p in pools if p.region == "east" and not p.stale and p.gpu_model == req.gpu_model]
    hubs = sorted(
        {p.hub for p in east},
        key=lambda hub: (min(p.latency_ms.get(home_region, 999) for p in east if p.hub == hub), hub),
    )
    for hub in hubs:
        candidates = [p for p in east if p.hub == hub and p.free_cards >= req.cards]
        if candidates:
            # By price alone (the dispatcher's score also weighs electricity, green power, reliability).
            placement = cheapest_now(replace(req, allowed_hubs=frozenset({hub})), candidates, now)
            if placement is not None:
                return placement
    return None


def _account(result: PolicyResult, placement: Placement, req: Requirements, pools: dict[Any, PoolSnapshot]) -> None:
    card_hours = placement.cards * req.duration_hours
    result.placed += 1
    result.buyer_cost += placement.estimated_cost
    result.electricity_cost += placement.electricity_cost
    result.card_hours += card_hours
    if placement.region == "west":
        result.west_card_hours += card_hours
    if req.workload == REALTIME:
        latency = pools[placement.allocations[0].pool_id].latency_ms.get(req.user_region or "", 10**6)
        if latency > (req.max_latency_ms or 0):
            result.latency_violations += 1


def run_policy(
    name: str,
    orders: Sequence[SimOrder],
    pools: Sequence[PoolSnapshot],
    place: Callable[[SimOrder, list[PoolSnapshot]], Placement | None],
    progress: Callable[[int, int], None] | None = None,
) -> PolicyResult:
    """Place every order in time order, holding cards until each placement's end."""
    current = {pool.id: pool for pool in pools}
    releases: list[tuple[datetime, int, Any, int]] = []
    result = PolicyResult(name=name)
    for index, order in enumerate(orders):
        while releases and releases[0][0] <= order.at:
            _, _, pool_id, cards = heapq.heappop(releases)
            current[pool_id] = replace(current[pool_id], free_cards=current[pool_id].free_cards + cards)
        snapshot = list(current.values())
        started = time.perf_counter()
        placement = place(order, snapshot)
        result.placement_ms.append((time.perf_counter() - started) * 1000)
        if placement is None:
            result.unplaced += 1
        else:
            _account(result, placement, order.requirements, current)
            for allocation in placement.allocations:
                pool = current[allocation.pool_id]
                current[allocation.pool_id] = replace(pool, free_cards=pool.free_cards - allocation.cards)
                heapq.heappush(releases, (placement.end_at, index, allocation.pool_id, allocation.cards))
        if progress and (index + 1) % 500 == 0:
            progress(index + 1, len(orders))
    return result


def simulate(
    *,
    pools: Sequence[PoolSnapshot],
    day: datetime,
    seed: int,
    orders: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[PolicyResult, PolicyResult, PolicyResult]:
    """The three policies over the same day of orders: (dispatcher, naive baseline, cost-only optimizer)."""
    day = day.astimezone(local_zone()).replace(hour=0, minute=0, second=0, microsecond=0)
    demand = generate_orders(day=day, seed=seed, orders=orders, models={pool.gpu_model for pool in pools})

    def grid(order: SimOrder, snapshot: list[PoolSnapshot]) -> Placement | None:
        placements = dispatch(order.requirements, snapshot, order.at).placements
        return placements[0] if placements else None

    def baseline(order: SimOrder, snapshot: list[PoolSnapshot]) -> Placement | None:
        return naive_placement(order.requirements, order.home_region, snapshot, order.at)

    def cost_only(order: SimOrder, snapshot: list[PoolSnapshot]) -> Placement | None:
        return cheapest_now(order.requirements, snapshot, order.at)

    def report(name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(name, done, total)) if progress else None

    return (
        run_policy("dispatcher", demand, pools, grid, report("dispatcher")),
        run_policy("baseline", demand, pools, baseline, report("baseline")),
        run_policy("cost_only", demand, pools, cost_only, report("cost_only")),
    )
