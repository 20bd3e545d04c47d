"""Reserved capacity in the day's replay: a share of every pool's cards is booked reserved for the
whole day by buyers who use only part of it; the day's on-demand orders are then placed by the
dispatcher twice, without deposits (the unused booked cards stay idle) and with them (each
holder deposits what it will not use, offered to the dispatcher as bank capacity beside the pool's
own free cards, as ``marketplace.services.with_bank_capacity`` does).

It reports the utilization of booked capacity (card-hours used, by the holders and by resale, over
card-hours booked) each way, the on-demand orders placed each way, and what depositors earned:
resold card-hours at the price the dispatcher placed them at, less the platform's share.
"""

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from marketplace.dispatch import PoolSnapshot, dispatch
from marketplace.simulation import SimOrder

DAY_HOURS = 24


@dataclass
class ReservedResult:
    booked_card_hours: float = 0.0
    used_by_holders: float = 0.0
    resold_card_hours: float = 0.0
    on_demand_placed: int = 0
    on_demand_unplaced: int = 0
    resale_revenue: float = 0.0
    depositors_earned: float = 0.0

    def utilization(self, *, with_resale: bool) -> float:
        used = self.used_by_holders + (self.resold_card_hours if with_resale else 0.0)
        return used / self.booked_card_hours if self.booked_card_hours else 0.0


def _bookings(pools: Sequence[PoolSnapshot], *, seed: int, reserved_share: float, unused_share: float) -> list[Any]:
    """(pool id, cards booked for the day, cards the holder leaves unused) per pool with a booking."""
    rng = random.Random(seed)  # noqa: S311 - simulated demand, not secrets
    bookings = []
    for pool in pools:
        booked = int(pool.free_cards * reserved_share)
        if booked <= 0:
            continue
        unused = min(booked, round(booked * unused_share * rng.uniform(0.5, 1.5)))
        bookings.append((pool.id, booked, unused))
    return bookings


def _place_all(
    orders: Sequence[SimOrder], pools: dict[Any, PoolSnapshot], bank: dict[Any, int]
) -> tuple[int, int, float, float]:
    """Place the orders in time order on the pools' own free cards and, beyond them, on ``bank``
    cards (deposits), holding each until the placement's end. Returns placed, unplaced, resold
    card-hours and their revenue."""
    own = {pool_id: pool.free_cards for pool_id, pool in pools.items()}
    deposited = dict(bank)
    releases: list[tuple[datetime, int, Any, int, int]] = []
    placed = unplaced = 0
    resold = revenue = 0.0
    for index, order in enumerate(orders):
        while releases and releases[0][0] <= order.at:
            _, _, pool_id, from_own, from_bank = heapq.heappop(releases)
            own[pool_id] += from_own
            deposited[pool_id] = deposited.get(pool_id, 0) + from_bank
        snapshot = [replace(pool, free_cards=own[pid] + deposited.get(pid, 0)) for pid, pool in pools.items()]
        placements = dispatch(order.requirements, snapshot, order.at).placements
        if not placements:
            unplaced += 1
            continue
        placed += 1
        placement = placements[0]
        hours = order.requirements.duration_hours
        for allocation in placement.allocations:
            from_own = min(own[allocation.pool_id], allocation.cards)
            from_bank = allocation.cards - from_own
            own[allocation.pool_id] -= from_own
            deposited[allocation.pool_id] = deposited.get(allocation.pool_id, 0) - from_bank
            if from_bank:
                resold += from_bank * hours
                revenue += allocation.estimated_cost * from_bank / allocation.cards
            heapq.heappush(releases, (placement.end_at, index, allocation.pool_id, from_own, from_bank))
    return placed, unplaced, resold, revenue


def simulate_reserved(
    *,
    pools: Sequence[PoolSnapshot],
    orders: Sequence[SimOrder],
    seed: int,
    reserved_share: float,
    unused_share: float,
    platform_share: Decimal,
) -> tuple[ReservedResult, ReservedResult]:
    """(without deposits, with deposits) over the same day of on-demand orders."""
    bookings = _bookings(pools, seed=seed, reserved_share=reserved_share, unused_share=unused_share)
    booked = {pool_id: cards for pool_id, cards, _ in bookings}
    left = {pool.id: replace(pool, free_cards=pool.free_cards - booked.get(pool.id, 0)) for pool in pools}
    results = []
    for bank in ({}, {pool_id: unused for pool_id, _, unused in bookings}):
        result = ReservedResult(
            booked_card_hours=sum(cards for _, cards, _ in bookings) * DAY_HOURS,
            used_by_holders=sum(cards - unused for _, cards, unused in bookings) * DAY_HOURS,
        )
        placed, unplaced, resold, revenue = _place_all(orders, left, bank)
        result.on_demand_placed, result.on_demand_unplaced = placed, unplaced
        result.resold_card_hours, result.resale_revenue = resold, revenue
        result.depositors_earned = revenue * (1 - float(platform_share))
        results.append(result)
    return results[0], results[1]


def reserved_figures(without: ReservedResult, with_deposits: ReservedResult) -> dict[str, Any]:
    """The figures ``simulate_dispatch --reserved-share`` prints."""
    return {
        "booked_card_hours": round(with_deposits.booked_card_hours, 1),
        "used_by_holders_card_hours": round(with_deposits.used_by_holders, 1),
        "utilization_without_deposits": round(without.utilization(with_resale=False), 4),
        "utilization_with_deposits": round(with_deposits.utilization(with_resale=True), 4),
        "resold_card_hours": round(with_deposits.resold_card_hours, 1),
        "on_demand_placed_without_deposits": without.on_demand_placed,
        "on_demand_placed_with_deposits": with_deposits.on_demand_placed,
        "resale_revenue": round(with_deposits.resale_revenue, 2),
        "depositors_earned": round(with_deposits.depositors_earned, 2),
    }
