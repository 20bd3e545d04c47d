"""Reserved capacity in billing: take-or-pay lines, cancellation fees, and resale of deposited
card-hours.

- A reserved lease bills its booked hours (``start_at`` to ``price_locked_until``), used or not, at
  its price version's hour prices less ``reserved_discount``, one line per band and rate, in the
  month each hour falls in (kind ``reserved``). Its usage in those hours still rolls up (the
  provider's statement, plausibility, dashboards) but is billed by no usage line
  (``billing.rating.RESERVED_BOOKED``); usage after them (an extension) bills as usage. A booking the
  provider preempts or whose pool fails bills to its end only.
- A reserved booking cancelled before its start bills ``RESERVED_CANCEL_FEE_RATE`` of its booked
  cost instead, in the month of the cancellation (kind ``cancel_fee``).
- A lease placed on a deposit (``Lease.deposit``) bills its usage at the deposit's price when
  lower (kind ``resale``). At the reseller's finalization the line's amount is split: the platform
  keeps ``DEPOSIT_PLATFORM_SHARE``, the depositor's bank gets the rest as a ``capacity_deposit``
  grant (``DepositResale``, one per line); the provider, paid by the reservation, gets none of it.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from django.conf import settings
from django.db.models import Q

from billing.models import DepositResale, InvoiceLine, UsageMetric
from billing.periods import month_of
from billing.rating import SECONDS_PER_HOUR, RatedLine, _plans_with_bands
from core.money import share
from marketplace.models import Commitment, Lease
from pools.tariffs import local_hour

BOOKED_METRIC = "booked_seconds"


def _cancelled_early(lease: Lease) -> bool:
    return lease.status == Lease.Status.CANCELLED and lease.ended_at is not None and lease.ended_at < lease.start_at


def _billed_until(lease: Lease) -> datetime:
    """The end of the hours a booking bills: its booked end, or when the provider or its pool ended it."""
    if lease.status in (Lease.Status.PREEMPTED, Lease.Status.FAILED) and lease.ended_at is not None:
        return max(min(lease.ended_at, lease.price_locked_until), lease.start_at)
    return lease.price_locked_until


def _pieces(start: datetime, end: datetime) -> Iterable[tuple[datetime, int]]:
    """[start, end) cut at each whole hour: (moment, seconds) per piece."""
    at = start
    while at < end:
        following = min(at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1), end)
        yield at, int((following - at).total_seconds())
        at = following


def reserved_leases(buyer_ids: Iterable[Any], start: datetime, end: datetime) -> list[Lease]:
    """The buyers' reserved card leases with booked hours or a cancellation within [start, end)
    (a booking cancelled this month may have been due to start in a later one)."""
    return list(
        Lease.objects.filter(buyer_id__in=list(buyer_ids), commitment=Commitment.RESERVED, endpoint__isnull=True)
        .filter(Q(start_at__lt=end, price_locked_until__gt=start) | Q(ended_at__gte=start, ended_at__lt=end))
        .order_by("pk")
    )


def booked_lines(*, buyer_id: Any, period_start: datetime, period_end: datetime) -> list[RatedLine]:
    """The take-or-pay and cancellation-fee lines of a buyer's month."""
    leases = reserved_leases([buyer_id], period_start, period_end)
    plans = _plans_with_bands({lease.price_plan_id for lease in leases})
    lines: list[RatedLine] = []
    for lease in leases:
        plan, bands = plans[lease.price_plan_id]
        by_rate: dict[tuple[str, Decimal], RatedLine] = {}
        if _cancelled_early(lease):
            if not (period_start <= lease.ended_at < period_end):  # type: ignore[operator]
                continue
            window = (lease.start_at, lease.price_locked_until)
        else:
            window = (max(lease.start_at, period_start), min(_billed_until(lease), period_end))
        for at, seconds in _pieces(*window):
            hour = local_hour(at)
            rate = Decimal(plan.hour_prices[hour]) * (1 - plan.reserved_discount)
            key = (bands[hour], rate)
            line = by_rate.get(key)
            if line is None:
                line = by_rate[key] = RatedLine(
                    kind=InvoiceLine.Kind.RESERVED,
                    lease_id=lease.pk,
                    pool_id=lease.pool_id,
                    provider_id=lease.provider_id,
                    price_plan_id=plan.pk,
                    metric=BOOKED_METRIC,
                    model="",
                    band=bands[hour],
                    unit=InvoiceLine.Unit.CARD_HOUR,
                    per_unit=SECONDS_PER_HOUR,
                    rate=rate,
                )
            line.used += Decimal(seconds * lease.cards)
        if _cancelled_early(lease):
            lines.append(_cancel_fee(lease, list(by_rate.values())))
        else:
            lines += sorted(by_rate.values(), key=lambda line: (line.band, line.rate))
    return lines


def _cancel_fee(lease: Lease, booked: list[RatedLine]) -> RatedLine:
    """One line: the booked card-hours at ``RESERVED_CANCEL_FEE_RATE`` of their mean reserved price."""
    used = sum((line.used for line in booked), Decimal(0))
    with localcontext(prec=50):
        cost = sum((line.exact_amount for line in booked), Decimal(0))
        rate = (cost * settings.RESERVED_CANCEL_FEE_RATE * SECONDS_PER_HOUR / used).quantize(Decimal("1e-10"))
    first = booked[0]
    return RatedLine(
        kind=InvoiceLine.Kind.CANCEL_FEE,
        lease_id=lease.pk,
        pool_id=lease.pool_id,
        provider_id=lease.provider_id,
        price_plan_id=first.price_plan_id,
        metric=BOOKED_METRIC,
        model="",
        band="",
        unit=InvoiceLine.Unit.CARD_HOUR,
        used=used,
        per_unit=SECONDS_PER_HOUR,
        rate=rate,
    )


def resale_lines(lines: Sequence[RatedLine]) -> list[RatedLine]:
    """Usage lines of leases placed on deposits become resale lines, at the deposit's price when lower."""
    lease_ids = {line.lease_id for line in lines if line.metric == UsageMetric.GPU_SECONDS}
    if not lease_ids:
        return list(lines)
    deposits = {
        lease_id: price
        for lease_id, price in Lease.objects.filter(pk__in=lease_ids, deposit__isnull=False).values_list(
            "pk", "deposit__price"
        )
    }
    for line in lines:
        if line.lease_id in deposits and line.kind in (InvoiceLine.Kind.USAGE, InvoiceLine.Kind.ADJUSTMENT):
            line.kind = InvoiceLine.Kind.RESALE
            price = deposits[line.lease_id]
            if price is not None and price < line.rate:
                line.rate = price
    return list(lines)


def resale_split(amount: int) -> tuple[int, int]:
    """(the platform's share, the depositor's credit) of a resale line's amount."""
    return share(amount, settings.DEPOSIT_PLATFORM_SHARE)


def resales_record(*, lines: Sequence[InvoiceLine], now: datetime) -> list[DepositResale]:
    """A ``DepositResale`` for each saved resale line (its grant is made by the caller, after the
    invoice's entries are posted)."""
    resold = [line for line in lines if line.kind == InvoiceLine.Kind.RESALE]
    if not resold:
        return []
    deposit_of = dict(Lease.objects.filter(pk__in={line.lease_id for line in resold}).values_list("pk", "deposit_id"))
    rows = []
    for line in resold:
        platform, credit = resale_split(line.amount)
        rows.append(
            DepositResale(
                deposit_id=deposit_of[line.lease_id],
                line=line,
                card_hours=line.quantity,
                amount=line.amount,
                platform=platform,
                credit=credit,
                created_at=now,
            )
        )
    return DepositResale.objects.bulk_create(rows)


def deposits_earned(deposit_ids: Iterable[Any]) -> dict[Any, tuple[Decimal, int]]:
    """Per deposit: card-hours resold (on finalized invoices) and fen credited."""
    totals: dict[Any, tuple[Decimal, int]] = defaultdict(lambda: (Decimal(0), 0))
    for deposit_id, hours, credit in DepositResale.objects.filter(deposit_id__in=list(deposit_ids)).values_list(
        "deposit_id", "card_hours", "credit"
    ):
        before = totals[deposit_id]
        totals[deposit_id] = (before[0] + hours, before[1] + credit)
    return dict(totals)


def reserved_months(*, closed_before: datetime) -> set[tuple[Any, datetime]]:
    """(buyer, a moment in the month) for each month before ``closed_before`` that a reserved
    booking bills: its booked hours, or its cancellation fee. Bookings of the last two months."""
    since = closed_before - timedelta(days=62)
    months: set[tuple[Any, datetime]] = set()
    leases = Lease.objects.filter(commitment=Commitment.RESERVED, endpoint__isnull=True).filter(
        Q(start_at__lt=closed_before, price_locked_until__gt=since)
        | Q(status=Lease.Status.CANCELLED, ended_at__gte=since, ended_at__lt=closed_before)
    )
    for lease in leases.only("buyer_id", "start_at", "price_locked_until", "status", "ended_at"):
        if _cancelled_early(lease):
            if lease.ended_at < closed_before:  # type: ignore[operator]
                months.add((lease.buyer_id, lease.ended_at))  # type: ignore[arg-type]
            continue
        at, end = max(lease.start_at, since), min(_billed_until(lease), closed_before)
        while at < end:
            months.add((lease.buyer_id, at))
            at = month_of(at)[1]
    return months
