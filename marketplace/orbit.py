"""In-orbit orders: analyse a dataset a satellite holds, in orbit or on the ground.

Two ways to a result on the ground, both priced and timed from the contact windows:

- ``in_orbit``: compute on the satellite that holds the data, or on a neighbour in its plane
  over the inter-satellite link, then downlink the result at the next contact windows;
- ``ground``: downlink the raw data over as many passes as it takes, then compute in the
  cheapest suitable ground hub (the dispatcher's choice, after the data is down).

The one that meets the deadline at the lower cost wins (the lower cost if there is no deadline);
the quote gives both, with their times to result, costs, steps and the contact windows used.
Estimates in floats, as the dispatcher's: invoices are rated exactly from the metered usage.
"""

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import RuleViolation
from core.money import estimate_in_yuan
from marketplace.dispatch import Allocation, Placement, PoolSnapshot, Requirements, dispatch
from marketplace.models import OrbitOrder, Order, Workload
from marketplace.selectors import pool_snapshots
from marketplace.services import placement_book
from orbit.contacts import Transfer, downlink, transfer_time
from orbit.models import Dataset, Satellite
from orbit.reference_data import GROUND_GB_PER_CARD_HOUR, HUB_CODE
from organizations.models import Organization
from pools.models import ResourcePool
from pools.selectors import price_plan_at

# How far ahead contact windows are searched for a downlink.
DOWNLINK_HORIZON = timedelta(days=3)
MIN_RUN = timedelta(minutes=1)
WORKLOAD = Workload.BATCH_INFERENCE


@dataclass
class OrbitOption:
    plan: str
    result_at: datetime | None = None
    cost: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    placement: Placement | None = None
    requirements: Requirements | None = None
    reason: str = ""  # why this way cannot deliver, if it cannot

    def meets(self, deadline: datetime | None) -> bool:
        return self.result_at is not None and (deadline is None or self.result_at <= deadline)


@dataclass
class OrbitQuote:
    dataset: Dataset
    result_size_gb: Decimal
    deadline: datetime | None
    now: datetime
    options: list[OrbitOption]
    chosen: OrbitOption | None
    why: str

    def render(self) -> dict[str, Any]:
        return {
            "dataset": str(self.dataset.pk),
            "satellite": str(self.dataset.satellite_id),
            "result_size_gb": str(self.result_size_gb),
            "deadline": _iso(self.deadline),
            "chosen": self.chosen.plan if self.chosen else None,
            "why": self.why,
            "options": [
                {
                    "plan": option.plan,
                    "result_at": _iso(option.result_at),
                    "time_to_result_seconds": (
                        round((option.result_at - self.now).total_seconds()) if option.result_at else None
                    ),
                    "estimated_cost": str(estimate_in_yuan(option.cost)) if option.result_at else None,
                    "meets_deadline": option.meets(self.deadline),
                    "reason": option.reason,
                    "steps": option.steps,
                    "contact_windows": option.windows,
                }
                for option in self.options
            ],
        }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at else None


def _hours(size_gb: Decimal, per_hour: Decimal) -> float:
    """Hours of compute, up to the hundredth (orders keep two places), at least a minute."""
    return max(math.ceil(float(size_gb / per_hour) * 100) / 100, MIN_RUN.total_seconds() / 3600)


def _windows(transfer: Transfer, what: str) -> list[dict[str, Any]]:
    return [
        {
            "what": what,
            "station": contact.station,
            "pass_start": _iso(contact.start),
            "pass_end": _iso(contact.end),
            "max_elevation": contact.max_elevation,
            "start": _iso(begin),
            "end": _iso(until),
            "gb": str(gb),
        }
        for contact, begin, until, gb in transfer.windows
    ]


def _step(what: str, start: datetime, end: datetime, cost: float, **more: Any) -> dict[str, Any]:
    return {"step": what, "start": _iso(start), "end": _iso(end), "estimated_cost": str(estimate_in_yuan(cost)), **more}


def _candidates(holder: Satellite) -> list[Satellite]:
    """The holder, then its neighbours in the plane (one slot either way), of its provider."""
    plane = {
        s.plane_slot: s for s in Satellite.objects.select_related("pool").filter(pool__provider=holder.pool.provider_id)
    }
    size = max(plane) + 1 if plane else 1
    order = [holder.plane_slot, (holder.plane_slot + 1) % size, (holder.plane_slot - 1) % size]
    seen, found = set(), []
    for slot in order:
        if slot in plane and slot not in seen:
            seen.add(slot)
            found.append(plane[slot])
    return found


def _in_orbit(dataset: Dataset, result_gb: Decimal, now: datetime) -> OrbitOption:
    best = OrbitOption(plan=OrbitOrder.Plan.IN_ORBIT, reason="no satellite in reach has its computer free")
    for satellite in _candidates(dataset.satellite):
        pool = satellite.pool
        if pool.status != ResourcePool.Status.ACTIVE or pool.free_cards < 1:
            continue
        steps, cursor = [], now
        if satellite.pk != dataset.satellite_id:
            link = min(satellite.isl_mbps, dataset.satellite.isl_mbps)
            cursor = now + transfer_time(dataset.size_gb, link)
            steps.append(_step("inter_satellite_link", now, cursor, 0.0, to=str(satellite.pk)))
        hours = _hours(dataset.size_gb, satellite.process_gb_per_hour)
        plan = price_plan_at(pool_id=pool.pk, at=cursor)
        if plan is None:
            continue
        compute_cost = hours * float(plan.rate_at(cursor))
        compute_end = cursor + timedelta(hours=hours)
        down = downlink(
            satellite.tle_line1,
            satellite.tle_line2,
            start=compute_end,
            size_gb=result_gb,
            mbps=satellite.downlink_mbps,
            horizon=DOWNLINK_HORIZON,
        )
        if down is None:
            continue
        downlink_cost = float(result_gb * satellite.downlink_price_per_gb)
        steps.append(_step("compute_in_orbit", cursor, compute_end, compute_cost, pool=str(pool.pk), hours=hours))
        steps.append(_step("downlink_result", compute_end, down.finished_at, downlink_cost, gb=str(result_gb)))
        option = OrbitOption(
            plan=OrbitOrder.Plan.IN_ORBIT,
            result_at=down.finished_at,
            cost=compute_cost + downlink_cost,
            steps=steps,
            windows=_windows(down, "result"),
            placement=Placement(
                hub=HUB_CODE,
                region=HUB_CODE,
                start_at=cursor,
                end_at=compute_end,
                allocations=(Allocation(pool.pk, 1, compute_cost, 0.0),),
                estimated_cost=compute_cost,
                electricity_cost=0.0,
                latency_ms=None,
                score=compute_cost + downlink_cost,
            ),
            requirements=Requirements(cards=1, duration_hours=hours, workload=WORKLOAD, earliest_start=cursor),
        )
        if best.result_at is None or (option.result_at, option.cost) < (best.result_at, best.cost):
            best = option
    return best


def _ground(
    dataset: Dataset, deadline: datetime | None, now: datetime, ground_pools: list[PoolSnapshot] | None
) -> OrbitOption:
    holder = dataset.satellite
    option = OrbitOption(plan=OrbitOrder.Plan.GROUND)
    down = downlink(
        holder.tle_line1,
        holder.tle_line2,
        start=now,
        size_gb=dataset.size_gb,
        mbps=holder.downlink_mbps,
        horizon=DOWNLINK_HORIZON,
    )
    if down is None:
        option.reason = f"the raw data is not down within {DOWNLINK_HORIZON.days} days of contacts"
        return option
    hours = _hours(dataset.size_gb, GROUND_GB_PER_CARD_HOUR)
    # With room before the deadline, the dispatcher may shift the run to cheaper hours within it.
    room = deadline is not None and deadline - timedelta(hours=hours) >= down.finished_at
    requirements = Requirements(
        cards=1,
        duration_hours=hours,
        workload=WORKLOAD,
        earliest_start=down.finished_at,
        deadline=deadline if room else None,
    )
    result = dispatch(requirements, pool_snapshots(now=now) if ground_pools is None else ground_pools, now)
    if not result.placements:
        option.reason = f"no ground pool can take the analysis: {result.summary_text(requirements)}"
        return option
    placement = result.placements[0]
    downlink_cost = float(dataset.size_gb * holder.downlink_price_per_gb)
    option.result_at = placement.end_at
    option.cost = downlink_cost + placement.estimated_cost
    option.steps = [
        _step("downlink_raw", now, down.finished_at, downlink_cost, gb=str(dataset.size_gb)),
        _step(
            "compute_on_ground",
            placement.start_at,
            placement.end_at,
            placement.estimated_cost,
            hub=placement.hub,
            pool=str(placement.allocations[0].pool_id),
            hours=hours,
        ),
    ]
    option.windows = _windows(down, "raw data")
    option.placement, option.requirements = placement, requirements
    return option


def orbit_quote(
    *,
    dataset: Dataset,
    result_size_gb: Decimal,
    deadline: datetime | None,
    now: datetime,
    ground_pools: list[PoolSnapshot] | None = None,
) -> OrbitQuote:
    """Both ways, and the one chosen: among those that meet the deadline, the cheaper. The ground
    way is dispatched over ``ground_pools`` (the market now, by default)."""
    options = [_in_orbit(dataset, result_size_gb, now), _ground(dataset, deadline, now, ground_pools)]
    meeting = [option for option in options if option.meets(deadline)]
    chosen = min(meeting, key=lambda o: (o.cost, o.result_at)) if meeting else None
    if chosen is None:
        why = "neither way delivers the result by the deadline" if deadline else "neither way can deliver"
    elif len(meeting) == 1 and deadline is not None:
        why = f"only {chosen.plan} delivers the result by the deadline"
    else:
        why = f"{chosen.plan} costs less" + (" and both meet the deadline" if deadline else "")
    return OrbitQuote(dataset, result_size_gb, deadline, now, options, chosen, why)


def dataset_for_order(*, buyer: Organization, dataset_id: Any) -> Dataset:
    """The buyer's own dataset: another's answers as an unknown id does."""
    dataset = Dataset.objects.select_related("satellite", "satellite__pool").filter(pk=dataset_id, buyer=buyer).first()
    if dataset is None:
        message = "None of your datasets has this id; choose one of GET /api/v1/datasets/."
        raise RuleViolation(
            message, code="unknown_dataset", fields={"dataset": [{"code": "unknown_dataset", "message": message}]}
        )
    return dataset


def orbit_quote_for(
    *,
    buyer: Organization,
    dataset_id: Any,
    result_size_gb: Decimal,
    deadline: datetime | None = None,
    now: datetime | None = None,
) -> OrbitQuote:
    now = now or timezone.now()
    if deadline is not None and deadline <= now:
        raise RuleViolation(gettext("The deadline has passed; give a later one."), code="deadline_too_soon")
    dataset = dataset_for_order(buyer=buyer, dataset_id=dataset_id)
    return orbit_quote(dataset=dataset, result_size_gb=result_size_gb, deadline=deadline, now=now)


@transaction.atomic
def orbit_order_place(
    *,
    buyer: Organization,
    dataset_id: Any,
    result_size_gb: Decimal,
    deadline: datetime | None = None,
    now: datetime | None = None,
) -> Order:
    """Place the analysis of a dataset the way its quote chooses: the cards of that way's pool
    (the satellite's computer, or a ground pool after the downlink) reserved with its order."""
    if buyer.orders_blocked_reason:
        raise RuleViolation(buyer.orders_blocked_reason, code="orders_blocked")
    quote = orbit_quote_for(
        buyer=buyer, dataset_id=dataset_id, result_size_gb=result_size_gb, deadline=deadline, now=now
    )
    chosen = quote.chosen
    if chosen is None or chosen.placement is None or chosen.requirements is None or chosen.result_at is None:
        raise RuleViolation(
            gettext("This analysis cannot be placed: %(why)s.") % {"why": quote.why},
            code="deadline_unreachable",
            details=quote.render(),
        )
    requirements = replace(chosen.requirements, deadline=deadline)
    order = placement_book(
        buyer=buyer,
        requirements=requirements,
        placement=chosen.placement,
        warnings=[],
        estimated_cost=chosen.cost,
    )
    if order is None:
        raise RuleViolation(gettext("The chosen pool's cards were taken meanwhile; ask again."), code="no_capacity")
    OrbitOrder.objects.create(
        order=order,
        dataset=quote.dataset,
        result_size_gb=result_size_gb,
        plan=chosen.plan,
        result_at=chosen.result_at,
        quote=quote.render(),
    )
    return order
