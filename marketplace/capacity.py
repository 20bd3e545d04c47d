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

from django.db import connection
from django.db.models import Sum

from core.rows import Rows
from marketplace.models import CapacityDeposit, Lease
from pools.models import ResourcePool

_ACTIVE = [status.value for status in Lease.ACTIVE]  # as SQL's parameter


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


# What calendar_fits reads, in one round trip (it runs under the pool's lock for every booking): the
# most cards the pool's card leases (``_card_leases``) book at once within [start, end), as ``_peak``
# finds it (a running sum over the clipped windows' starts and ends, an end before a start at one
# moment), and the cards those leases hold now. The peak is summed where the rows are: a busy pool has
# hundreds of windows, and loading their times into Python cost ten times the query.
_FITS_SQL = f"""
WITH booking AS (
    SELECT greatest(start_at, %(start)s) AS begins, least(end_at, %(end)s) AS ends, cards, holding,
        start_at < %(end)s AND end_at > %(start)s AS within
    FROM {Lease._meta.db_table}
    WHERE pool_id = %(pool)s AND status = ANY(%(active)s) AND endpoint_id IS NULL AND deposit_id IS NULL
        AND ((start_at < %(end)s AND end_at > %(start)s) OR holding)
), change AS (
    SELECT begins AS at, cards FROM booking WHERE within
    UNION ALL
    SELECT ends, -cards FROM booking WHERE within
)
SELECT coalesce(max(booked), 0), (SELECT coalesce(sum(cards), 0) FROM booking WHERE holding)
FROM (SELECT sum(cards) OVER (ORDER BY at, cards ROWS UNBOUNDED PRECEDING) AS booked FROM change) running
"""  # noqa: S608  # the table's name, not input


def calendar_fits(*, pool: ResourcePool, cards: int, start: datetime, end: datetime) -> bool:
    """Whether ``cards`` more fit on the pool in every hour of [start, end): the most cards booked at
    once within it, plus ``cards``, within the pool's cards less those its model endpoints hold (its
    reserved cards that no card lease holds). The caller holds the pool's lock."""
    with connection.cursor() as cursor:
        cursor.execute(_FITS_SQL, {"pool": pool.pk, "start": start, "end": end, "active": _ACTIVE})
        peak, held = cursor.fetchone()
    endpoints = max(pool.reserved_cards - held, 0)
    return peak + cards <= pool.cards - endpoints


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


# bank_capacity in one round trip (every quote, order and offers list reads it): the open deposits
# of active leases, each less the cards its resales running now hold, summed by pool.
_BANK_SQL = f"""
SELECT d.pool_id, sum(greatest(d.cards - coalesce(resold.cards, 0), 0))
FROM {CapacityDeposit._meta.db_table} d
JOIN {Lease._meta.db_table} booking ON booking.id = d.lease_id AND booking.status = ANY(%(active)s)
LEFT JOIN LATERAL (
    SELECT sum(l.cards) AS cards FROM {Lease._meta.db_table} l
    WHERE l.deposit_id = d.id AND l.status = ANY(%(active)s) AND l.start_at <= %(now)s AND l.end_at > %(now)s
) resold ON true
WHERE d.start_at <= %(now)s AND d.end_at > %(now)s
GROUP BY d.pool_id
"""  # noqa: S608  # the tables' names, not input


def bank_capacity(*, now: datetime) -> dict[Any, int]:
    """Per pool, the deposited cards free for another buyer now (the offers add them to the pool's
    free cards; an order placed on them is placed by ``deposit_take``)."""
    with connection.cursor() as cursor:
        cursor.execute(_BANK_SQL, {"now": now, "active": _ACTIVE})
        return {pool: int(cards) for pool, cards in cursor.fetchall() if cards}


# select_for_update(of=("self",)) over the deposits of active leases, as plain SQL: an order whose
# pool's own cards are taken looks here under the pool's lock, and compiling the ORM's query cost
# more than running it.
_DEPOSIT_ROWS = Rows(CapacityDeposit, alias="d")
_DEPOSITS_COVERING_SQL = f"""
SELECT {_DEPOSIT_ROWS.columns} FROM {CapacityDeposit._meta.db_table} d
JOIN {Lease._meta.db_table} booking ON booking.id = d.lease_id AND booking.status = ANY(%(active)s)
WHERE d.pool_id = %(pool)s AND d.start_at <= %(start)s AND d.end_at >= %(end)s
ORDER BY d.id FOR UPDATE OF d
"""  # noqa: S608  # the tables' names and columns, not input


def deposits_covering(*, pool_id: Any, start: datetime, end: datetime) -> list[CapacityDeposit]:
    """The pool's deposits whose window covers [start, end), oldest first, locked (in primary-key
    order, then sorted): two orders for the last deposited cards take them one after the other."""
    locked = _DEPOSIT_ROWS.fetch(
        _DEPOSITS_COVERING_SQL, {"pool": pool_id, "start": start, "end": end, "active": _ACTIVE}
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
