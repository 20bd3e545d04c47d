"""Every write of the marketplace: placing orders, starting and ending leases."""

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from core.exceptions import ApplicationError, ConflictError, RuleViolation
from marketplace import hooks
from marketplace.capacity import bank_capacity, calendar_fits, deposit_free, deposits_covering, pools_cards_ahead
from marketplace.dispatch import DispatchResult, Placement, PoolSnapshot, Requirements, dispatch, reason_message
from marketplace.models import CapacityDeposit, Commitment, FeedEvent, Lease, Order, PriceIndexSnapshot
from marketplace.price_index import offers_json, snapshot_index
from marketplace.selectors import (
    lease_unlocked_cost,
    max_price_ends,
    offers_list,
    pool_snapshots,
    price_change_effects,
)
from orbit.reference_data import HUB_CODE as ORBIT_HUB
from organizations.models import Organization
from pools.models import Hub, PricePlan, ResourcePool
from pools.selectors import price_plan_versions_in_force
from pools.services import invalidate_offer_snapshot, pools_lock

logger = logging.getLogger(__name__)

ESTIMATE_PLACES = Decimal("0.0001")


def _requirements_fields(requirements: Requirements) -> dict[str, Any]:
    return {
        "gpu_model_id": requirements.gpu_model,
        "min_memory_gb": requirements.min_memory_gb,
        "cards": requirements.cards,
        "workload": requirements.workload,
        "user_region": requirements.user_region or "",
        "max_latency_ms": requirements.max_latency_ms,
        "duration_hours": Decimal(str(requirements.duration_hours)),
        "earliest_start": requirements.earliest_start,
        "deadline": requirements.deadline,
        "max_price": Decimal(str(requirements.max_price)) if requirements.max_price is not None else None,
        "min_green_share": (
            Decimal(str(requirements.min_green_share)) if requirements.min_green_share is not None else None
        ),
        "allowed_hubs": sorted(requirements.allowed_hubs or []),
        "split": requirements.split,
        "pool_id": requirements.pool,
        "commitment": requirements.commitment,
    }


def check_feasible(requirements: Requirements, now: datetime) -> None:
    """Refuse a deadline that leaves no room for the run (a 400: the request is self-contradictory)."""
    if requirements.deadline is None:
        return
    start = max(now, requirements.earliest_start or now)
    room = (requirements.deadline - start).total_seconds() / 3600
    if room < requirements.duration_hours:
        raise ApplicationError(
            gettext(
                "The deadline leaves %(max)s hours after the earliest start, less than the "
                "%(duration_hours)s hours the work needs; move the deadline or start earlier."
            )
            % {"max": f"{max(room, 0):.2f}", "duration_hours": requirements.duration_hours},
            code="deadline_too_soon",
            fields={"deadline": [{"code": "deadline_too_soon", "message": "Too soon for the duration."}]},
        )


def quote(*, requirements: Requirements, now: datetime | None = None) -> DispatchResult:
    """The dispatcher's ranking for these requirements; nothing is reserved. With a chosen
    pool, the dispatcher weighs that pool alone: a placement on it, or its reason."""
    now = now or timezone.now()
    check_feasible(requirements, now)
    pools = pool_snapshots(now=now)
    if requirements.earliest_start and requirements.earliest_start > now + timedelta(
        seconds=settings.LEASE_START_EARLY_SECONDS
    ):
        # Booked ahead: what the pools hold now says nothing of then; the calendar decides at placement.
        pools = with_bank_capacity(pools, pools_cards_ahead(pool_ids=[pool.id for pool in pools]), replace_free=True)
    elif requirements.commitment == Commitment.ON_DEMAND:
        pools = with_bank_capacity(pools, bank_capacity(now=now))
    if requirements.pool is not None:
        pools = [pool for pool in pools if pool.id == requirements.pool]
        if not pools:
            raise _not_offered()
    return dispatch(requirements, pools, now)


def with_bank_capacity(
    pools: list[PoolSnapshot], cards: dict[Any, int], *, replace_free: bool = False
) -> list[PoolSnapshot]:
    """The snapshots with each pool's deposited free cards added to its own (on-demand orders only:
    a reserved booking takes the pool's own cards), or with ``replace_free`` its cards ahead instead."""
    if not cards:
        return pools
    return [
        replace(pool, free_cards=cards[pool.id] + (0 if replace_free else pool.free_cards))
        if pool.id in cards
        else pool
        for pool in pools
    ]


def _not_offered() -> RuleViolation:
    """One answer for an unknown id and for a pool not in the market (pending, suspended,
    retired, unpriced): it says no more than the offers list does."""
    message = "No pool in the market has this id; choose one of GET /api/v1/offers/."
    return RuleViolation(
        message, code="pool_not_offered", fields={"pool": [{"code": "pool_not_offered", "message": message}]}
    )


def _pool_rejected(result: DispatchResult, requirements: Requirements) -> RuleViolation:
    """The chosen pool's reason, as a quote gives it; a pool the dispatcher placed the order on
    but whose cards another order took first has too few free cards now."""
    reason = result.rejections.get(requirements.pool, "free_cards")
    message = reason_message(reason, requirements)
    return RuleViolation(
        gettext("The chosen pool cannot take this order: %(message)s.") % {"message": message},
        code="pool_rejected",
        details={
            "pool": str(requirements.pool),
            "reason": reason,
            "reasons": [{"reason": reason, "message": message, "pools": 1}],
        },
    )


def _no_capacity(result: DispatchResult, requirements: Requirements) -> RuleViolation:
    return RuleViolation(
        gettext("No pool can take this order now: %(summary_text)s.")
        % {"summary_text": result.summary_text(requirements)},
        code="no_capacity",
        details={"reasons": result.summary(requirements)},
    )


@dataclass(frozen=True)
class _Taken:
    """How one allocation got its cards: held now, booked on the calendar from its start, or taken
    from a deposit (bank capacity)."""

    pool: ResourcePool  # as locked: the new leases refer to it, so the answer reads no pool again
    holding: bool
    deposit: CapacityDeposit | None = None


def _reserve(placement: Placement, requirements: Requirements, now: datetime) -> dict[Any, _Taken] | None:
    """Take the placement's cards under the pools' locks. Returns how each pool's were taken, or
    None if another order got the cards first.

    A placement starting now holds its cards at once (free cards now and the calendar ahead); a
    deferred one only books the calendar, and holds its cards from its start (``lease_start``).
    An on-demand order a pool cannot take on its own cards is placed on a deposit of the pool
    that covers its window, if one has the cards free (``bank_capacity``)."""
    wanted = {allocation.pool_id: allocation.cards for allocation in placement.allocations}
    locked = pools_lock(wanted)
    if len(locked) != len(wanted) or any(pool.status != ResourcePool.Status.ACTIVE for pool in locked):
        return None
    deferred = placement.start_at > now + timedelta(seconds=settings.LEASE_START_EARLY_SECONDS)
    taken: dict[Any, _Taken] = {}
    for pool in locked:
        cards = wanted[pool.pk]
        fits_now = deferred or pool.free_cards >= cards
        if fits_now and calendar_fits(pool=pool, cards=cards, start=placement.start_at, end=placement.end_at):
            taken[pool.pk] = _Taken(pool, holding=not deferred)
            continue
        deposit = None
        if requirements.commitment == Commitment.ON_DEMAND:
            deposit = deposit_take(pool_id=pool.pk, cards=cards, start=placement.start_at, end=placement.end_at)
        if deposit is None:
            return None
        taken[pool.pk] = _Taken(pool, holding=False, deposit=deposit)
    for pool in locked:
        if taken[pool.pk].holding:
            invalidate_offer_snapshot(pool.pk, reserved_cards=pool.reserved_cards + wanted[pool.pk])
    return taken


def deposit_take(*, pool_id: Any, cards: int, start: datetime, end: datetime) -> CapacityDeposit | None:
    """The first deposit of the pool (locked) with ``cards`` free over [start, end), or None."""
    for deposit in deposits_covering(pool_id=pool_id, start=start, end=end):
        if deposit_free(deposit=deposit, start=start, end=end) >= cards:
            return deposit
    return None


# No savepoint inside order_place: nothing is written before the cards are taken, and an error
# after that fails the whole order anyway.
@transaction.atomic(savepoint=False)
def placement_book(
    *,
    buyer: Organization,
    requirements: Requirements,
    placement: Placement,
    warnings: list[str],
    estimated_cost: float | None = None,
    now: datetime | None = None,
) -> Order | None:
    """Reserve the placement's cards and record its order and leases (the order's estimate is the
    placement's unless given), or None if another order got the cards first. Each lease keeps the
    price version the quote priced (in force ``now``)."""
    now = now or timezone.now()
    taken = _reserve(placement, requirements, now)
    if taken is None:
        return None
    # Read with the pools locked: a version made meanwhile waits for this order, which keeps the
    # version it was quoted. A lease refers to it, and its answer shows its version: nothing more.
    plans = price_plan_versions_in_force(pool_ids=list(taken), at=now)
    cost = placement.estimated_cost if estimated_cost is None else estimated_cost
    order = Order.objects.create(
        buyer=buyer,
        estimated_cost=Decimal(str(cost)).quantize(ESTIMATE_PLACES),
        warnings=warnings,
        **_requirements_fields(requirements),
    )
    leases = Lease.objects.bulk_create(
        [
            Lease(
                order=order,
                buyer=buyer,
                provider_id=taken[allocation.pool_id].pool.provider_id,
                pool=taken[allocation.pool_id].pool,
                cards=allocation.cards,
                workload=requirements.workload,
                commitment=requirements.commitment,
                holding=taken[allocation.pool_id].holding,
                deposit=taken[allocation.pool_id].deposit,
                start_at=placement.start_at,
                end_at=placement.end_at,
                price_locked_until=placement.end_at,
                estimated_cost=Decimal(str(allocation.estimated_cost)).quantize(ESTIMATE_PLACES),
                price_plan=plans[allocation.pool_id],
                max_price=order.max_price,
            )
            for allocation in placement.allocations
        ]
    )
    # The order as order_list reads it (leases with their pools and versions, no in-orbit plan),
    # from what is in hand, so that the answer needs no query.
    in_hand = order.leases.all()  # as prefetch_related leaves it: a queryset with its rows
    in_hand._result_cache = sorted(leases, key=lambda lease: lease.created_at, reverse=True)
    in_hand._prefetch_done = True  # type: ignore[attr-defined]
    order._prefetched_objects_cache = {"leases": in_hand}  # type: ignore[attr-defined]
    Order.orbit.related.set_cached_value(order, None)
    logger.info("order placed", extra={"order": str(order.pk), "hub": placement.hub, "cards": order.cards})
    return order


@transaction.atomic
def order_place(*, buyer: Organization, requirements: Requirements, now: datetime | None = None) -> Order:
    """Place an order: the best placement whose cards are still free is reserved, with
    its order and leases, in one transaction. A placement lost to a concurrent order
    is skipped for the next one in rank. An order for a chosen pool is placed there or
    refused with that pool's reason (422 ``pool_rejected``)."""
    now = now or timezone.now()
    if buyer.orders_blocked_reason:
        raise RuleViolation(buyer.orders_blocked_reason, code="orders_blocked")
    result = quote(requirements=requirements, now=now)
    for placement in result.placements:
        order = placement_book(
            buyer=buyer, requirements=requirements, placement=placement, warnings=result.warnings, now=now
        )
        if order is not None:
            return order
    if requirements.pool is not None:
        raise _pool_rejected(result, requirements)
    raise _no_capacity(result, requirements)


@transaction.atomic
def lease_start(*, lease_id: Any, by: str, now: datetime | None = None) -> Lease:
    """Hand the cards over: the lease runs, and bills, from now. Not before its booked start, less
    ``LEASE_START_EARLY_SECONDS``: a lease started days early would run, and bill, to its booked end."""
    now = now or timezone.now()
    lease = Lease.objects.select_for_update().get(pk=lease_id)
    if lease.status != Lease.Status.SCHEDULED:
        raise ConflictError(
            gettext("This lease is %(status)s; only a scheduled lease can start.") % {"status": lease.status},
            code="lease_not_scheduled",
        )
    # A reserved booking bills from its booked start: it never starts early.
    early = 0 if lease.commitment == Commitment.RESERVED else settings.LEASE_START_EARLY_SECONDS
    earliest = lease.start_at - timedelta(seconds=early)
    if now < earliest:
        raise ConflictError(
            gettext("This lease is booked to start at %(isoformat)s; it can start from %(isoformat2)s.")
            % {
                "isoformat": lease.start_at.astimezone(UTC).isoformat(),
                "isoformat2": earliest.astimezone(UTC).isoformat(),
            },
            code="lease_not_due",
        )
    if not lease.holding and lease.deposit_id is None and lease.endpoint_id is None:
        # A deferred lease takes the cards the calendar kept for it.
        (pool,) = pools_lock([lease.pool_id])
        invalidate_offer_snapshot(pool.pk, reserved_cards=pool.reserved_cards + lease.cards)
        lease.holding = True
    lease.status, lease.started_at = Lease.Status.RUNNING, now
    lease.save(update_fields=["status", "started_at", "holding"])
    for hook in hooks.LEASE_START_HOOKS:
        hook(lease, lease.started_at)
    return lease


@transaction.atomic
def lease_end(*, lease_id: Any, status: str, reason: str, by: str, now: datetime | None = None) -> Lease:
    """End an active lease and give its cards back to the pool, exactly once:
    the lease row is locked and only a scheduled or running lease can end."""
    if status in Lease.ACTIVE:
        raise ValueError(f"{status} is not an end status")
    lease = Lease.objects.select_for_update().get(pk=lease_id)
    if not lease.is_active:
        raise ConflictError(
            gettext("This lease already ended (%(status)s, %(end_reason)s).")
            % {"status": lease.status, "end_reason": lease.end_reason},
            code="lease_already_ended",
        )
    lease.status, lease.ended_at, lease.end_reason, lease.ended_by = status, now or timezone.now(), reason, by
    lease.save(update_fields=["status", "ended_at", "end_reason", "ended_by"])
    for hook in hooks.LEASE_END_HOOKS:
        hook(lease, lease.ended_at)
    # A token order's lease holds no cards (its endpoint's are reserved), nor does a deferred lease
    # before its start or a lease on deposited cards (the depositor's lease holds them).
    if lease.endpoint_id is None and lease.holding:
        (pool,) = pools_lock([lease.pool_id])
        invalidate_offer_snapshot(pool.pk, reserved_cards=pool.reserved_cards - lease.cards)
    if not Lease.objects.filter(order_id=lease.order_id, status__in=Lease.ACTIVE).exists():
        Order.objects.filter(pk=lease.order_id, status=Order.Status.PLACED).update(status=Order.Status.ENDED)
    # The cards of leases placed on its deposits leave with it.
    resales = Lease.objects.filter(deposit__lease=lease, status__in=Lease.ACTIVE).order_by("pk")
    for resale in resales.values_list("pk", flat=True):
        lease_end(lease_id=resale, status=status, reason="deposit_lease_ended", by=by, now=lease.ended_at)
    return lease


@transaction.atomic
def lease_terminate(*, lease: Lease, organization: Organization, by: str) -> Lease:
    """The buyer ends its lease (completed, or cancelled if it never started); the
    provider ends a lease on its pool (preempted)."""
    if organization.kind == Organization.Kind.PROVIDER:
        return lease_end(lease_id=lease.pk, status=Lease.Status.PREEMPTED, reason="terminated_by_provider", by=by)
    current = Lease.objects.select_for_update().get(pk=lease.pk)
    if Lease.objects.filter(deposit__lease=current, status__in=Lease.ACTIVE).exists():
        raise ConflictError(
            gettext(
                "Deposited cards of this reserved lease are resold to another buyer; withdraw "
                "what is not resold, and let the booking run to its end (it is billed whole "
                "either way)."
            ),
            code="lease_resold",
        )
    status = Lease.Status.COMPLETED if current.status == Lease.Status.RUNNING else Lease.Status.CANCELLED
    return lease_end(lease_id=lease.pk, status=status, reason="terminated_by_buyer", by=by)


@transaction.atomic
def order_cancel(*, order: Order, by: str) -> Order:
    """Cancel an order whose leases have not started; a running one is terminated instead."""
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.status != Order.Status.PLACED:
        raise ConflictError(
            gettext("This order is already %(status)s.") % {"status": locked.status}, code="order_not_cancellable"
        )
    leases = list(locked.leases.order_by("pk"))
    if any(lease.status == Lease.Status.RUNNING for lease in leases):
        raise ConflictError(
            gettext("A lease of this order is running; terminate the lease instead."), code="order_running"
        )
    for lease in leases:
        if lease.is_active:
            lease_end(lease_id=lease.pk, status=Lease.Status.CANCELLED, reason="order_cancelled", by=by)
    Order.objects.filter(pk=locked.pk).update(status=Order.Status.CANCELLED)
    locked.refresh_from_db()
    return locked


def _end_each(lease_ids: Iterable[Any], **end: Any) -> int:
    """End leases one transaction each; one already ended by another path is skipped."""
    ended = 0
    for lease_id in lease_ids:
        try:
            lease_end(lease_id=lease_id, **end)
            ended += 1
        except ConflictError:
            continue
    return ended


def leases_start_due(*, now: datetime | None = None) -> int:
    """Start the scheduled leases whose time has come (Celery beat, every minute)."""
    now = now or timezone.now()
    started = 0
    due = Lease.objects.filter(status=Lease.Status.SCHEDULED, start_at__lte=now, end_at__gt=now)
    for lease_id in due.values_list("pk", flat=True):
        try:
            lease_start(lease_id=lease_id, by="scheduler", now=now)
            started += 1
        except ApplicationError as exc:  # started by another path, or refused (e.g. no funds): tried again later
            logger.info("lease not started", extra={"lease": str(lease_id), "code": exc.code})
            continue
    return started


def leases_end_expired(*, now: datetime | None = None) -> int:
    """End the leases past their booked end (Celery beat)."""
    now = now or timezone.now()
    running = Lease.objects.filter(status=Lease.Status.RUNNING, end_at__lte=now).values_list("pk", flat=True)
    never_started = Lease.objects.filter(status=Lease.Status.SCHEDULED, end_at__lte=now).values_list("pk", flat=True)
    return _end_each(
        list(running), status=Lease.Status.COMPLETED, reason="booked_time_ended", by="scheduler", now=now
    ) + _end_each(list(never_started), status=Lease.Status.CANCELLED, reason="never_started", by="scheduler", now=now)


def leases_fail_lost_pools(*, now: datetime | None = None, lost_after_seconds: int) -> int:
    """Fail the active leases of pools that were suspended, retired or went silent."""
    now = now or timezone.now()
    active = Lease.objects.filter(status__in=Lease.ACTIVE)
    suspended = active.filter(pool__status__in=[ResourcePool.Status.SUSPENDED, ResourcePool.Status.RETIRED])
    silent_since = now - timedelta(seconds=lost_after_seconds)
    # A satellite is heard only when it passes a station: its silence between passes is no loss.
    silent = active.filter(pool__status=ResourcePool.Status.ACTIVE, pool__last_heartbeat_at__lt=silent_since).exclude(
        pool__hub_id=ORBIT_HUB
    )
    return _end_each(
        list(suspended.values_list("pk", flat=True)),
        status=Lease.Status.FAILED,
        reason="pool_suspended",
        by="system",
        now=now,
    ) + _end_each(
        list(silent.values_list("pk", flat=True)),
        status=Lease.Status.FAILED,
        reason="pool_heartbeat_lost",
        by="system",
        now=now,
    )


@transaction.atomic
def price_index_snapshot(*, now: datetime | None = None) -> int:
    """Take the price index's snapshot of the UTC hour of ``now`` (Celery beat, every 10 minutes,
    so a lost run costs no hour): per GPU model, the active offers (``offers_list``) by hub, each
    distinct card-hour price with the free cards offered at it, and the index of every hub,
    region and the nation. The first snapshot of an hour stands; a later one in the same hour
    changes nothing. Returns the rows written."""
    now = now or timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    if PriceIndexSnapshot.objects.filter(hour=hour).exists():
        return 0
    regions = dict(Hub.objects.values_list("code", "region"))
    offered: dict[str, dict[str, dict[Decimal, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    offers = offers_list(now=now).values_list("gpu_model_id", "hub_id", "price_now", "free_cards")  # type: ignore[misc]  # an annotation
    for model, hub, price, free in offers:
        offered[model][hub][price] += free
    rows = []
    for model, hubs in sorted(offered.items()):
        pairs = {hub: list(prices.items()) for hub, prices in hubs.items()}
        rows.append(
            PriceIndexSnapshot(
                hour=hour,
                gpu_model_id=model,
                offers=offers_json(pairs),
                index=snapshot_index(pairs, regions),
                taken_at=now,
            )
        )
    return len(PriceIndexSnapshot.objects.bulk_create(rows, ignore_conflicts=True))


def _feed_data(effect: dict[str, Any], plan: PricePlan) -> dict[str, Any]:
    return {
        "pool": str(plan.pool_id),
        "price_version": plan.version,
        "effective_from": plan.effective_from.isoformat(),
        "running_from": plan.running_from.isoformat(),
        "takes_effect_at": effect["takes_effect_at"].isoformat(),
        "price_locked_until": effect["price_locked_until"].isoformat(),
        "expected_cost_change": str(effect["expected_cost_change"]),
        "ends_for_max_price": effect["ends_for_max_price"],
    }


def price_rise_notify(plan: PricePlan) -> None:
    """Tell the buyer of each active lease on the pool of a rise (a pools hook, inside the
    transaction that makes the version, so the events commit with it)."""
    if not plan.rise:
        return
    now = timezone.now()
    FeedEvent.objects.bulk_create(
        [
            FeedEvent(
                organization_id=effect["buyer_id"],
                kind=FeedEvent.Kind.PRICE_RISE,
                lease_id=effect["lease"],
                occurred_at=now,
                data=_feed_data(effect, plan),
            )
            for effect in price_change_effects(plan)
        ]
    )


@transaction.atomic
def lease_max_price_raise(*, lease: Lease, max_price: Decimal | None, by: str) -> Lease:
    """The buyer raises its lease's ceiling per card-hour (or lifts it, with None); never lowers it."""
    locked = Lease.objects.select_for_update().get(pk=lease.pk)
    if not locked.is_active:
        raise ConflictError(
            gettext("This lease already ended (%(status)s, %(end_reason)s).")
            % {"status": locked.status, "end_reason": locked.end_reason},
            code="lease_already_ended",
        )
    if locked.max_price is not None and max_price is not None and max_price < locked.max_price:
        message = f"max_price can only be raised (it is {locked.max_price}) or lifted (null)."
        raise RuleViolation(
            message, code="max_price_lowered", fields={"max_price": [{"code": "max_price_lowered", "message": message}]}
        )
    locked.max_price = max_price
    locked.save(update_fields=["max_price"])
    return locked


@transaction.atomic
def lease_extend(*, lease: Lease, end_at: datetime, by: str, now: datetime | None = None) -> Lease:
    """The buyer extends its active lease to ``end_at``: later than its end, at most
    ``LEASE_EXTENSION_MAX_HOURS`` from now, on a pool still active. The lease keeps the cards it
    holds (a pool's reserved cards count active leases, not hours: nothing moves). Its price lock
    stays its booked end: the extended hours pay the price in force (``plan_in_force``), and their
    expected cost at the versions known now is added to its estimate (a prepaid buyer's credit
    hold follows it at the next review). Asking for the end it already has changes nothing (a
    replay)."""
    now = now or timezone.now()
    locked = Lease.objects.select_for_update().get(pk=lease.pk)
    if end_at == locked.end_at:
        return locked
    if not locked.is_active or locked.end_at <= now:
        raise RuleViolation(
            gettext(
                "This lease is %(status)s and its end has passed; only an active lease before "
                "its end can be extended. Place a new order instead."
            )
            % {"status": locked.status},
            code="lease_not_active",
        )
    if locked.endpoint_id is not None:
        raise RuleViolation(
            gettext("A token order's lease bills tokens, not hours, and is not extended; place a new token order."),
            code="lease_not_extendable",
        )
    if end_at < locked.end_at:
        message = f"end_at must be later than the lease's end ({locked.end_at.astimezone(UTC).isoformat()})."
        raise RuleViolation(
            message, code="end_not_later", fields={"end_at": [{"code": "end_not_later", "message": message}]}
        )
    horizon = now + timedelta(hours=settings.LEASE_EXTENSION_MAX_HOURS)
    if end_at > horizon:
        message = (
            f"A lease can be extended to at most {settings.LEASE_EXTENSION_MAX_HOURS} hours from now "
            f"({horizon.astimezone(UTC).isoformat()}); extend it again later."
        )
        raise RuleViolation(
            message, code="extension_too_long", fields={"end_at": [{"code": "extension_too_long", "message": message}]}
        )
    if locked.deposit_id is not None:
        raise RuleViolation(
            gettext(
                "This lease runs on deposited cards, which are its depositor's only to the "
                "deposit's end; place a new order instead."
            ),
            code="lease_not_extendable",
        )
    # The pool locked as a new price version locks it: a version made meanwhile sees this end.
    (pool,) = pools_lock([locked.pool_id])
    if pool.status != ResourcePool.Status.ACTIVE:
        raise RuleViolation(
            gettext("The lease's pool is %(status)s; it takes no extension.") % {"status": pool.status},
            code="pool_not_active",
        )
    if not calendar_fits(pool=pool, cards=locked.cards, start=locked.end_at, end=end_at):
        message = gettext("The pool's cards are booked by other orders in the hours asked for; extend it less far.")
        raise RuleViolation(
            message, code="calendar_full", fields={"end_at": [{"code": "calendar_full", "message": message}]}
        )
    added = lease_unlocked_cost(lease=locked, start=locked.end_at, end=end_at)
    locked.end_at, locked.estimated_cost = end_at, (locked.estimated_cost + added).quantize(ESTIMATE_PLACES)
    locked.save(update_fields=["end_at", "estimated_cost"])
    logger.info("lease extended", extra={"lease": str(locked.pk), "end_at": end_at.isoformat(), "by": by})
    return locked


@transaction.atomic
def lease_update(*, lease: Lease, by: str, **changes: Any) -> Lease:
    """The buyer's PATCH of its lease: its max_price (``lease_max_price_raise``), its end
    (``lease_extend``), or both, in one transaction."""
    if "max_price" in changes:
        lease = lease_max_price_raise(lease=lease, max_price=changes["max_price"], by=by)
    if "end_at" in changes:
        lease = lease_extend(lease=lease, end_at=changes["end_at"], by=by)
    return lease


def leases_end_above_max_price(*, now: datetime | None = None) -> int:
    """End each running lease whose price in its unlocked hours rose above its max_price
    (``max_price_ends``): at the moment it did, billed to then (Celery beat). Its buyer gets a
    feed event."""
    now = now or timezone.now()
    leases = Lease.objects.filter(status=Lease.Status.RUNNING)
    return sum(
        _end_above_max_price(lease_id=lease_id, at=moment)
        for lease_id, moment in max_price_ends(leases=leases, now=now).items()
    )


@transaction.atomic
def _end_above_max_price(*, lease_id: Any, at: datetime) -> int:
    try:
        lease = lease_end(
            lease_id=lease_id, status=Lease.Status.COMPLETED, reason="price_above_max", by="system", now=at
        )
    except ConflictError:  # ended meanwhile by another path
        return 0
    FeedEvent.objects.create(
        organization_id=lease.buyer_id,
        kind=FeedEvent.Kind.PRICE_ABOVE_MAX,
        lease=lease,
        occurred_at=timezone.now(),
        data={"ended_at": at.isoformat(), "max_price": str(lease.max_price)},
    )
    return 1
