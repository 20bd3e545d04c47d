import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from billing.models import (
    Bank,
    BankEvent,
    BankMovement,
    CreditHold,
    FapiaoRequest,
    Invoice,
    InvoiceAdjustment,
    InvoiceLine,
    Leg,
    ProviderStatement,
    UsageMetric,
    UsageRollup,
    UsageRollupDue,
)
from billing.models.ledger import Account
from billing.periods import month_of
from billing.rating import rate, rate_by_hour
from billing.reservations import deposits_earned
from billing.token_electricity import lease_electricity_per_million
from core.money import round_to_fen, share
from core.timezones import local_zone
from marketplace.models import CapacityDeposit, Lease
from organizations.models import Organization

SECONDS_PER_HOUR = Decimal(3600)


def _rollups_for(organization: Organization) -> QuerySet[UsageRollup]:
    """Buyers see the usage of their leases, providers of their pools, operators all of it."""
    if organization.kind == Organization.Kind.OPERATOR:
        return UsageRollup.objects.all()
    party = "buyer" if organization.kind == Organization.Kind.BUYER else "provider"
    return UsageRollup.objects.filter(**{party: organization})


def _period(granularity: str) -> Any:
    """The start of the UTC hour, or of the day in the billing time zone."""
    if granularity == "day":
        return TruncDay("hour", tzinfo=local_zone())
    return TruncHour("hour")


def usage_series(
    *,
    organization: Organization,
    start: datetime,
    end: datetime,
    granularity: str = "hour",
    lease: Any = None,
    pool: Any = None,
    metric: str | None = None,
) -> list[dict[str, Any]]:
    """Usage by lease, pool, metric and hour (UTC) or day (in the billing time zone)."""
    rollups = _rollups_for(organization).filter(hour__gte=start, hour__lt=end)
    if lease:
        rollups = rollups.filter(lease_id=lease)
    if pool:
        rollups = rollups.filter(pool_id=pool)
    if metric:
        rollups = rollups.filter(metric=metric)
    # A bucket may have a late row beside the one its month's invoice billed: summed, as a day's hours are.
    rows = (
        rollups.annotate(period_start=_period(granularity))
        .values("lease_id", "pool_id", "metric", "model", "period_start")
        .annotate(total=Sum("quantity"), event_count=Sum("events"))
    )
    return [
        {
            "lease": row["lease_id"],
            "pool": row["pool_id"],
            "metric": row["metric"],
            "model": row["model"],
            "period_start": row["period_start"],
            "quantity": row["total"],
            "events": row["event_count"],
        }
        for row in rows.order_by("period_start", "lease_id", "metric", "model")
    ]


def card_hours(
    *, organization: Organization, start: datetime, end: datetime, granularity: str = "day", by_pool: bool = False
) -> list[dict[str, Any]]:
    """Card-hours used per period (and per pool): ``usage_series``'s card-seconds summed over
    leases, over 3600, scoped the same way. Summed by stored hour in the database (grouping on
    the column is about twice as fast as truncating every row to a local day), then into days
    in the billing time zone, whose days start on a whole UTC hour."""
    rollups = _rollups_for(organization).filter(hour__gte=start, hour__lt=end, metric=UsageMetric.GPU_SECONDS)
    columns = ["hour", "pool_id"] if by_pool else ["hour"]
    zone = local_zone()
    totals: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for row in rollups.values(*columns).annotate(seconds=Sum("quantity")).order_by():
        hour = row["hour"]
        period = hour if granularity == "hour" else hour.astimezone(zone).replace(hour=0)
        totals[(period, row["pool_id"]) if by_pool else (period,)] += row["seconds"]
    return [
        {"period_start": key[0], **({"pool_id": key[1]} if by_pool else {}), "card_hours": seconds / SECONDS_PER_HOUR}
        for key, seconds in sorted(totals.items(), key=lambda item: (item[0][0], str(item[0][1:])))
    ]


def platform_revenue_by_day(*, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The platform's revenue (its commission less the VAT it owes as the seller) credited in the
    ledger per day (billing time zone), in fen; a voided invoice's reversal counts on the day it was voided."""
    day = TruncDay("entry__posted_at", tzinfo=local_zone())
    rows = (
        Leg.objects.filter(
            account__purpose=Account.Purpose.PLATFORM_REVENUE,
            account__organization__isnull=True,
            entry__posted_at__gte=start,
            entry__posted_at__lt=end,
        )
        .annotate(day=day)
        .values("day")
        .annotate(credited=Sum("amount"))
        .order_by("day")
    )
    return [{"day": row["day"], "revenue": -row["credited"]} for row in rows]


def usage_rollups_due() -> tuple[int, datetime | None]:
    """How many (lease, hour) buckets wait for their rollup, and when the oldest was marked."""
    due = UsageRollupDue.objects.aggregate(count=Count("pk"), oldest=Min("marked_at"))
    return due["count"], due["oldest"]


def invoice_list(*, organization: Organization) -> QuerySet[Invoice]:
    invoices = Invoice.objects.select_related("buyer")
    if organization.kind == Organization.Kind.OPERATOR:
        return invoices
    return invoices.filter(buyer=organization)


def statement_list(*, organization: Organization) -> QuerySet[ProviderStatement]:
    statements = ProviderStatement.objects.all()
    if organization.kind == Organization.Kind.OPERATOR:
        return statements
    return statements.filter(provider=organization)


def invoice_view(invoice: Invoice) -> Invoice:
    """The invoice as shown: a draft gets its lines and totals rated live from the usage so far (and
    the adjustments waiting for the next invoice finalized); token lines get their electricity cost."""
    if invoice.status != Invoice.Status.DRAFT:
        invoice.shown_lines = list(invoice.lines.all())  # type: ignore[attr-defined]
    else:
        from billing.services.invoices import draft_lines

        shown = [line.as_invoice_line(invoice, id=None) for line in draft_lines(invoice)]
        older = Invoice.objects.filter(
            buyer_id=invoice.buyer_id, status=Invoice.Status.DRAFT, period_start__lt=invoice.period_start
        )
        if not older.exists():  # the invoice finalized next bills what is waiting for it
            waiting = InvoiceAdjustment.objects.filter(buyer_id=invoice.buyer_id, invoice__isnull=True)
            shown += [
                adjustment.as_invoice_line(invoice, id=None) for adjustment in waiting.select_related("source_line")
            ]
        invoice.shown_lines = shown  # type: ignore[attr-defined]
        invoice.subtotal = invoice.amount_due = sum(line.amount for line in shown)
        invoice.tax = sum(line.tax for line in shown)
    with_token_electricity(invoice.shown_lines, since=invoice.period_start, until=invoice.period_end)  # type: ignore[attr-defined]
    return invoice


def with_token_electricity(lines: list[Any], *, since: datetime, until: datetime) -> None:
    """Give each token line its order's electricity cost per million tokens over the period."""
    token_leases = [line.lease_id for line in lines if line.unit == InvoiceLine.Unit.MILLION_TOKENS]
    rates = lease_electricity_per_million(lease_ids=token_leases, since=since, until=until) if token_leases else {}
    for line in lines:
        line.electricity_cost_per_million_tokens = rates.get(line.lease_id)


def invoice_due_at(invoice: Invoice) -> datetime | None:
    """When a finalized invoice is due: the first dunning day after its finalization. Unpaid after
    that, it is overdue (``invoices_overdue``)."""
    if invoice.finalized_at is None:
        return None
    return invoice.finalized_at + timedelta(days=settings.BILLING_DUNNING_DAYS[0])


def invoice_owed(invoice: Invoice) -> int:
    """What a finalized or uncollectible invoice still owes, in fen; 0 for any other."""
    if invoice.status not in (Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE):
        return 0
    return max(0, invoice.amount_due - (invoice.amount_paid - invoice.amount_refunded))


def invoice_days_overdue(invoice: Invoice, *, now: datetime) -> int | None:
    """Whole days since the invoice fell due, if it is owed and past due; None otherwise."""
    due = invoice_due_at(invoice)
    if due is None or not invoice_owed(invoice) or (due >= now and invoice.status != Invoice.Status.UNCOLLECTIBLE):
        return None
    return max(0, (now - due).days)


def invoices_overdue_total(invoices: QuerySet[Invoice]) -> int:
    """What ``invoices`` still owe, in fen."""
    owed = invoices.aggregate(owed=Sum(F("amount_due") - F("amount_paid") + F("amount_refunded")))["owed"]
    return int(owed or 0)


def invoices_overdue(*, organization: Organization, now: datetime) -> QuerySet[Invoice]:
    """Unpaid invoices past the first dunning day after finalization, and uncollectible ones."""
    past_due = now - timedelta(days=settings.BILLING_DUNNING_DAYS[0])
    return (
        invoice_list(organization=organization)
        .filter(amount_paid__lt=F("amount_due"))
        .filter(Q(status=Invoice.Status.UNCOLLECTIBLE) | Q(status=Invoice.Status.FINALIZED, finalized_at__lt=past_due))
        .order_by("finalized_at", "pk")
    )


def invoices_set_aside(*, organization: Organization) -> QuerySet[Invoice]:
    """Drafts of closed months that finalizing set aside, with their reason (usage without a
    price), oldest first: each waits for an operator."""
    return (
        invoice_list(organization=organization)
        .filter(status=Invoice.Status.DRAFT)
        .exclude(hold_reason="")
        .order_by("period_start", "pk")
    )


def spend_forecast(*, invoice: Invoice, now: datetime) -> dict[str, Any]:
    """Spend so far in the draft ``invoice``'s period, by lease (its live-rated lines), and the
    forecast to the period's end: each lease still active keeps spending at its rate so far
    until its booked end or the period's end, whichever comes first, and never faster than all
    its cards at its dearest price per card-hour (usage reported for hours before the lease's
    start would otherwise make a rate without bound)."""
    shown = invoice_view(invoice)
    so_far: dict[Any, int] = {}
    dearest: dict[Any, Decimal] = {}
    for line in shown.shown_lines:  # type: ignore[attr-defined]
        so_far[line.lease_id] = so_far.get(line.lease_id, 0) + line.amount
        if line.unit == "card_hour":
            dearest[line.lease_id] = max(dearest.get(line.lease_id, Decimal(0)), line.rate)
    leases = Lease.objects.select_related("pool").in_bulk(list(so_far))
    rows = []
    for lease_id, spent in sorted(so_far.items(), key=lambda item: (-item[1], str(item[0]))):
        lease = leases[lease_id]
        began = max(invoice.period_start, lease.started_at or lease.start_at)
        ends = min(invoice.period_end, lease.end_at) if lease.is_active else now
        elapsed, ahead = (now - began).total_seconds(), max((ends - now).total_seconds(), 0)
        extra = round_to_fen(Decimal(spent) / 100 * Decimal(ahead) / Decimal(elapsed)) if elapsed > 0 else 0
        if lease_id in dearest:
            extra = min(extra, round_to_fen(dearest[lease_id] * lease.cards * Decimal(ahead) / SECONDS_PER_HOUR))
        rows.append({"lease": lease, "so_far": spent, "forecast": spent + extra})
    return {
        "invoice": shown,
        "so_far": shown.subtotal,
        "forecast": sum(row["forecast"] for row in rows),
        "leases": rows,
    }


def bank_balance(*, organization: Organization, at: datetime | None = None) -> int:
    """The buyer's compute-bank credit left, in fen: what is left of its grants that have not expired."""
    from billing.services.bank.state import bank_state

    return bank_state(buyer_id=organization.pk, at=at or timezone.now()).balance


def bank_summary(*, buyer: Organization, at: datetime) -> dict[str, Any]:
    """What ``GET bank/`` shows: the amounts, the spendable grants in burn order, holds, latest events."""
    from billing.services.bank.state import bank_state, low_balance_threshold, spendable_grants

    bank = Bank.objects.filter(organization=buyer).first() or Bank(organization=buyer)
    state = bank_state(buyer_id=buyer.pk, at=at)
    grants = sorted(
        spendable_grants(buyer_id=buyer.pk, at=at),
        key=lambda grant: (grant.expires_at is None, grant.expires_at or 0, grant.priority, grant.created_at),
    )
    holds = CreditHold.objects.filter(buyer=buyer, status=CreditHold.Status.ACTIVE).order_by("created_at")
    for hold in holds:
        hold.held = state.held_by_lease.get(hold.lease_id, 0)  # type: ignore[attr-defined]
    return {
        "currency": bank.currency,
        "mode": bank.mode,
        "balance": state.balance,
        "held": state.held,
        "pending_usage": state.pending_usage,
        "available": state.available,
        "low_balance_threshold": low_balance_threshold(bank.low_balance_threshold),
        "auto_top_up_threshold": bank.auto_top_up_threshold,
        "auto_top_up_amount": bank.auto_top_up_amount,
        "grants": grants,
        "holds": list(holds),
        "events": list(BankEvent.objects.filter(buyer=buyer)[:20]),
    }


def bank_movements(*, buyer: Organization) -> QuerySet[BankMovement]:
    return BankMovement.objects.filter(buyer=buyer).select_related("grant")


def provider_accrued(*, organization: Organization, now: datetime) -> dict[str, Any]:
    """A provider's earnings so far in the month of ``now``, before any invoice is finalized: its
    usage this month rated as the buyers' invoices will rate it, less the platform's commission."""
    period_start, period_end = month_of(now)
    rollups = UsageRollup.objects.filter(provider=organization, late=False, hour__gte=period_start, hour__lt=period_end)
    gross = sum(line.amount for line in rate(rollups, period_start=period_start))
    commission = share(gross, settings.PLATFORM_COMMISSION_RATE)[0] if gross else 0
    return {"period_start": period_start, "gross": gross, "commission": commission, "net": gross - commission}


def spend_by_day(*, invoice: Invoice) -> dict[Any, Decimal]:
    """The draft ``invoice``'s usage rated hour by hour and summed by local day (a ``date``), in exact
    yuan: what the buyer spent each day of the period so far."""
    rollups = UsageRollup.objects.filter(
        buyer_id=invoice.buyer_id, hour__gte=invoice.period_start, hour__lt=invoice.period_end
    )
    days: dict[Any, Decimal] = defaultdict(Decimal)
    for hours in rate_by_hour(rollups).values():
        for hour, amount in hours.items():
            days[hour.astimezone(local_zone()).date()] += amount
    return dict(days)


def fapiao_waiting() -> QuerySet[FapiaoRequest]:
    """Fapiao requests an operator has still to issue, oldest first."""
    return (
        FapiaoRequest.objects.filter(status=FapiaoRequest.Status.REQUESTED)
        .select_related("invoice", "buyer")
        .order_by("requested_at", "pk")
    )


def fapiao_numbers_by_invoice(invoice_ids: Iterable[Any]) -> dict[str, str]:
    """For the issuer's documents: each invoice's fapiao numbers (by the invoice's id as a string, as
    redemptions name it), issued ones as they are, reversed ones with the red-letter fapiao that
    reversed them; an invoice without one is absent."""
    numbers: dict[str, list[str]] = defaultdict(list)
    requests = (
        FapiaoRequest.objects.filter(
            invoice_id__in=_uuids(invoice_ids),
            status__in=(FapiaoRequest.Status.ISSUED, FapiaoRequest.Status.REVERSED),
        )
        .order_by("issued_at", "pk")
        .values_list("invoice_id", "status", "code", "number", "red_number")
    )
    for invoice_id, status, code, number, red_number in requests:
        shown = f"{code}-{number}" if code else number
        if status == FapiaoRequest.Status.REVERSED:
            shown += f" (reversed by {red_number})"
        numbers[str(invoice_id)].append(shown)
    return {invoice_id: "; ".join(found) for invoice_id, found in numbers.items()}


def _uuids(values: Iterable[Any]) -> set[uuid.UUID]:
    """Those of ``values`` that are UUIDs (a voucher's claim may name an invoice by another reference)."""
    found = set()
    for value in values:
        try:
            found.add(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except ValueError:
            continue
    return found


# Card-hours of reserved bookings within [start, end) (a booking cancelled before its start books
# none; one preempted or failed books to that end), and card-hours used within it: by the holders
# (their leases' rollups in their booked hours) and by resale (leases placed on deposits).
_RESERVED_CAPACITY = """
WITH booked AS (
    SELECT l.pool_id, sum(l.cards * extract(epoch FROM
        least(CASE WHEN l.status IN ('preempted', 'failed') THEN least(l.ended_at, l.price_locked_until)
                   ELSE l.price_locked_until END, %(end)s) - greatest(l.start_at, %(start)s)) / 3600) AS hours
    FROM marketplace_lease AS l
    WHERE l.commitment = 'reserved' AND l.endpoint_id IS NULL AND l.start_at < %(end)s
      AND l.price_locked_until > %(start)s AND NOT (l.status = 'cancelled' AND l.ended_at < l.start_at)
      AND (%(buyer)s::uuid IS NULL OR l.buyer_id = %(buyer)s::uuid)
      AND (%(provider)s::uuid IS NULL OR l.provider_id = %(provider)s::uuid)
    GROUP BY 1
), used AS (
    SELECT r.pool_id,
           sum(r.quantity) FILTER (WHERE l.commitment = 'reserved' AND r.hour < l.price_locked_until) / 3600 AS used,
           sum(r.quantity) FILTER (WHERE l.deposit_id IS NOT NULL) / 3600 AS resold
    FROM billing_usagerollup AS r JOIN marketplace_lease AS l ON l.id = r.lease_id
    LEFT JOIN marketplace_capacitydeposit AS d ON d.id = l.deposit_id
    WHERE r.metric = 'gpu_seconds' AND r.hour >= %(start)s AND r.hour < %(end)s
      AND (l.commitment = 'reserved' OR l.deposit_id IS NOT NULL)
      AND (%(buyer)s::uuid IS NULL OR l.buyer_id = %(buyer)s::uuid OR d.depositor_id = %(buyer)s::uuid)
      AND (%(provider)s::uuid IS NULL OR l.provider_id = %(provider)s::uuid)
    GROUP BY 1
)
SELECT coalesce(b.pool_id, u.pool_id), coalesce(b.hours, 0), coalesce(u.used, 0), coalesce(u.resold, 0)
FROM booked AS b FULL JOIN used AS u ON u.pool_id = b.pool_id
"""


def reserved_capacity(
    *, start: datetime, end: datetime, buyer: Any = None, provider: Any = None
) -> dict[Any, dict[str, Decimal]]:
    """Per pool, reserved card-hours ``booked`` within [start, end), ``used`` by their holders and
    ``resold`` to other buyers from deposits, and their ``utilization`` (used and resold over booked);
    a buyer's or a provider's, or the nation's. Key None: the total."""
    params = {
        "start": start,
        "end": end,
        "buyer": str(buyer.pk) if buyer else None,
        "provider": str(provider.pk) if provider else None,
    }
    rows: dict[Any, dict[str, Decimal]] = {}
    total = {"booked": Decimal(0), "used": Decimal(0), "resold": Decimal(0)}
    with connection.cursor() as cursor:
        cursor.execute(_RESERVED_CAPACITY, params)
        for pool_id, booked, used, resold in cursor.fetchall():
            row = {"booked": Decimal(booked), "used": Decimal(used), "resold": Decimal(resold)}
            rows[pool_id] = row
            for key, value in row.items():
                total[key] += value
    rows[None] = total
    for row in rows.values():
        row["utilization"] = (row["used"] + row["resold"]) / row["booked"] if row["booked"] else Decimal(0)
    return rows


def deposits_overview(*, buyer: Organization) -> list[dict[str, Any]]:
    """The buyer's deposits, newest first, with card-hours deposited, resold and credit earned."""
    deposits = list(CapacityDeposit.objects.filter(depositor=buyer).select_related("pool").order_by("-created_at")[:20])
    earned = deposits_earned([deposit.pk for deposit in deposits])
    return [
        {
            "deposit": deposit,
            "hours": Decimal((deposit.end_at - deposit.start_at).total_seconds()) / 3600 * deposit.cards,
            "resold": earned.get(deposit.pk, (Decimal(0), 0))[0],
            "earned": earned.get(deposit.pk, (Decimal(0), 0))[1],
        }
        for deposit in deposits
    ]
