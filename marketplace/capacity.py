"""The capacity calendar and bank capacity: what a pool has booked hour by hour ahead, and the
deposited card-hours it offers again.

A pool's cards are booked by its card leases over their windows (``start_at`` to ``end_at``): a
lease placed now holds its cards at once (``ResourcePool.reserved_cards``); a deferred one from its
start (``Lease.holding``), and until then only the calendar keeps them for it. A booking fits when,
in every hour of its window, the cards already booked plus its own stay within the pool's cards
(less what model endpoints hold). The callers hold the pool's row lock (``pools.services.pools_lock``),
so two bookings checked at once are checked one after the other: they never overlap beyond the
pool's cards.

Deposited card-hours (``CapacityDeposit``) are cards a reserved lease keeps booked and pays for:
a lease placed on them (``Lease.deposit``) books nothing more on the calendar.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q, Sum

from marketplace.models import CapacityDeposit, Lease
from pools.models import ResourcePool


def _card_leases(pool_ids: Iterable[Any]) -> Any:
    """The active card leases booking cards of these pools (not token leases, not resales)."""
    return Lease.objects.filter(
        pool_id__in=list(pool_ids), status__in=Lease.ACTIVE, endpoint__isnull=True, deposit__isnull=True
    )


def _peak(windows: list[tuple[datetime, datetime, int]], start: datetime, end: datetime) -> int:
    """The most cards these windows book at once within [start, end)."""
    points: list[tuple[datetime, int]] = []
    for begin, finish, cards in windows:
        begin, finish = max(begin, start), min(finish, end)
        if begin < finish:
            points += [(begin, cards), (finish, -cards)]
    peak = booked = 0
    for _, change in sorted(points, key=lambda point: (point[0], point[1])):  # ends before starts at one moment
        booked += change
        peak = max(peak, booked)
    return peak


def _windows(pool: ResourcePool, start: datetime, end: datetime) -> list[tuple[datetime, datetime, int]]:
    leases = _card_leases([pool.pk]).filter(start_at__lt=end, end_at__gt=start)
    return list(leases.values_list("start_at", "end_at", "cards"))


def endpoint_cards(pool: ResourcePool) -> int:
    """Cards of the pool held by its model endpoints (reserved, but by no lease)."""
    held = _card_leases([pool.pk]).filter(holding=True).aggregate(cards=Sum("cards"))["cards"] or 0
    return max(pool.reserved_cards - held, 0)


def calendar_booked(*, pool: ResourcePool, start: datetime, end: datetime) -> int:
    """The most cards booked at once on the pool within [start, end)."""
    windows = list(
        _card_leases([pool.pk]).filter(start_at__lt=end, end_at__gt=start).values_list("start_at", "end_at", "cards")
    )
    return _peak(windows, start, end)


def calendar_fits(*, pool: ResourcePool, cards: int, start: datetime, end: datetime) -> bool:
    """Whether ``cards`` more fit on the pool in every hour of [start, end). The caller holds the pool's lock."""
    return calendar_booked(pool=pool, start=start, end=end) + cards <= pool.cards - endpoint_cards(pool)


def calendar_hours(*, pool: ResourcePool, start: datetime, hours: int) -> list[tuple[datetime, int]]:
    """Cards booked in each of ``hours`` hours from ``start`` (an hour's most at once)."""
    end = start + timedelta(hours=hours)
    windows = list(
        _card_leases([pool.pk]).filter(start_at__lt=end, end_at__gt=start).values_list("start_at", "end_at", "cards")
    )
    return [
        (start + timedelta(hours=h), _peak(windows, start + timedelta(hours=h), start + timedelta(hours=h + 1)))
        for h in range(hours)
    ]


def _open_deposits(now: datetime) -> Any:
    return CapacityDeposit.objects.filter(start_at__lte=now, end_at__gt=now, lease__status__in=Lease.ACTIVE)


def deposit_free(*, deposit: CapacityDeposit, start: datetime, end: datetime) -> int:
    """Cards of the deposit no resale holds at any moment of [start, end); 0 outside its window."""
    if start < deposit.start_at or end > deposit.end_at:
        return 0
    windows = list(
        Lease.objects.filter(deposit=deposit, status__in=Lease.ACTIVE, start_at__lt=end, end_at__gt=start).values_list(
            "start_at", "end_at", "cards"
        )
    )
    return max(deposit.cards - _peak(windows, start, end), 0)


def bank_capacity(*, now: datetime) -> dict[Any, int]:
    """Per pool, the deposited cards free for another buyer now (the offers add them to the pool's
    free cards; an order placed on them is placed by ``deposit_take``)."""
    deposits = list(_open_deposits(now))
    if not deposits:
        return {}
    resold = dict(
        Lease.objects.filter(deposit__in=deposits, status__in=Lease.ACTIVE, start_at__lte=now, end_at__gt=now)
        .values_list("deposit_id")
        .annotate(cards=Sum("cards"))
        .order_by()
    )
    free: dict[Any, int] = {}
    for deposit in deposits:
        free[deposit.pool_id] = free.get(deposit.pool_id, 0) + max(deposit.cards - resold.get(deposit.pk, 0), 0)
    return {pool: cards for pool, cards in free.items() if cards}


def deposits_covering(*, pool_id: Any, start: datetime, end: datetime) -> list[CapacityDeposit]:
    """The pool's deposits whose window covers [start, end), oldest first, locked (in primary-key
    order, then sorted): two orders for the last deposited cards take them one after the other."""
    locked = list(
        CapacityDeposit.objects.select_for_update(of=("self",))
        .filter(Q(pool_id=pool_id, start_at__lte=start, end_at__gte=end), lease__status__in=Lease.ACTIVE)
        .order_by("pk")
    )
    return sorted(locked, key=lambda deposit: (deposit.created_at, str(deposit.pk)))


def pools_cards_ahead(*, pool_ids: Iterable[Any]) -> dict[Any, int]:
    """Per pool, the most cards a booking ahead could have: its cards less what its model endpoints
    hold (the calendar checks its window at placement)."""
    pools = list(ResourcePool.objects.filter(pk__in=list(pool_ids)).only("pk", "cards", "reserved_cards"))
    held = dict(
        _card_leases([pool.pk for pool in pools])
        .filter(holding=True)
        .values_list("pool_id")
        .annotate(cards=Sum("cards"))
        .order_by()
    )
    return {pool.pk: pool.cards - max(pool.reserved_cards - held.get(pool.pk, 0), 0) for pool in pools}
