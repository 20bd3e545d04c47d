"""Rating: usage rollups times the price version in force in each hour.

Card-seconds are billed per card-hour at the plan's price for the local hour
(time-of-use band); tokens per million at the plan's token prices for the
model times the same band's factor (``PricePlan.token_rate``). Rates stay exact Decimals; each invoice line rounds once
(``core.money.round_to_fen``).
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from django.db import connection
from django.db.models import Case, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import ExtractHour

from billing.models import InvoiceLine, UsageMetric, UsageRollup
from billing.vat import line_vat
from core.money import round_to_fen
from core.timezones import local_zone
from pools.models import PricePlan
from pools.tariffs import hour_bands

SECONDS_PER_HOUR = Decimal(3600)
TOKENS_PER_UNIT = Decimal(1_000_000)


@dataclass
class RatedLine:
    kind: str
    lease_id: Any
    pool_id: Any
    provider_id: Any
    price_plan_id: Any
    metric: str
    model: str
    band: str
    unit: str
    used: Decimal = Decimal(0)  # card-seconds or tokens, summed exactly
    per_unit: Decimal = Decimal(1)  # of them in one billed unit (3,600 per card-hour, 1,000,000 per million tokens)
    rate: Decimal = Decimal(0)

    @property
    def quantity(self) -> Decimal:
        return self.used / self.per_unit

    @property
    def exact_amount(self) -> Decimal:
        # Multiplied before it is divided: a quotient such as 57 / 3,600 has no exact decimal, and
        # rounding it first can put an amount of exactly half a fen below the half.
        with localcontext(prec=50):
            return self.used * self.rate / self.per_unit

    @property
    def amount(self) -> int:
        return round_to_fen(self.exact_amount)

    def as_invoice_line(self, invoice: Any, **fields: Any) -> InvoiceLine:
        """The (unsaved) invoice line showing this rated usage, its VAT split out (``billing.vat``)."""
        vat = line_vat(unit=self.unit, amount=self.amount)
        return InvoiceLine(
            vat_rate=vat.rate,
            tax=vat.tax,
            invoice=invoice,
            kind=self.kind,
            lease_id=self.lease_id,
            pool_id=self.pool_id,
            provider_id=self.provider_id,
            price_plan_id=self.price_plan_id,
            metric=self.metric,
            model=self.model,
            band=self.band,
            unit=self.unit,
            quantity=self.quantity,
            rate=self.rate,
            amount=self.amount,
            **fields,
        )


# A rollup row of a reserved lease's booked hours: billed by the booking (``billing.reservations``),
# never as usage (the statements below say the same in SQL).
RESERVED_BOOKED = Q(lease__commitment="reserved", hour__lt=F("lease__price_locked_until"))


def unbilled_rollups(*, buyer_id: Any, period_start: datetime, period_end: datetime) -> QuerySet[UsageRollup]:
    """What the buyer's invoice for this period bills: the period's rows, and what late rows of
    earlier periods hold that no invoice has billed yet."""
    return UsageRollup.objects.filter(
        Q(late=False, hour__gte=period_start) | (Q(late=True) & ~Q(quantity=F("billed_quantity"))),
        buyer_id=buyer_id,
        hour__lt=period_end,
    ).exclude(RESERVED_BOOKED)


_GROUP = ("kind", "lease_id", "pool_id", "provider_id", "price_plan_id", "metric", "model", "local_hour")


def rate(rollups: QuerySet[UsageRollup], *, period_start: datetime) -> list[RatedLine]:
    """Lines per lease, metric, model, price version and rate; usage before
    ``period_start`` becomes adjustment lines (late usage of a closed period)."""
    groups = (
        rollups.exclude(price_plan__isnull=True)
        .annotate(
            local_hour=ExtractHour("hour", tzinfo=local_zone()),
            kind=Case(
                When(Q(hour__lt=period_start), then=Value(InvoiceLine.Kind.ADJUSTMENT)),
                default=Value(InvoiceLine.Kind.USAGE),
            ),
        )
        .values(*_GROUP)
        .annotate(unbilled=Sum(F("quantity") - F("billed_quantity")))
        .order_by()
    )
    return _lines(list(groups))


def line_key(line: RatedLine | InvoiceLine) -> tuple[Any, ...]:
    """What tells the lines of an invoice apart: rated lines and stored invoice lines alike."""
    return (line.kind, str(line.lease_id), str(line.price_plan_id), line.metric, line.model, line.band, line.rate)


def rate_by_hour(rollups: QuerySet[UsageRollup]) -> dict[tuple[Any, ...], dict[datetime, Decimal]]:
    """The usage lines of a period's own rows (``rate`` without adjustments), hour by hour: for
    each line (``line_key``), the exact amount of each UTC hour of usage in it."""
    groups = (
        rollups.filter(late=False)
        .exclude(price_plan__isnull=True)
        .annotate(local_hour=ExtractHour("hour", tzinfo=local_zone()), kind=Value(InvoiceLine.Kind.USAGE))
        .values(*_GROUP, "hour")
        .annotate(unbilled=Sum("quantity"))
        .order_by()
    )
    by_hour: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
    for row in groups:
        by_hour[row.pop("hour")].append(row)
    amounts: dict[tuple[Any, ...], dict[datetime, Decimal]] = defaultdict(dict)
    for hour, rows in by_hour.items():
        for line in _lines(rows):
            amounts[line_key(line)][hour] = line.exact_amount
    return amounts


# The batch of invoices is given as arrays of their columns (``_columns``).
# Each invoice's own period: read, never written.
_PERIOD_USAGE = """
WITH batch AS (
    SELECT * FROM unnest(%(invoices)s::uuid[], %(buyers)s::uuid[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
        AS b (invoice_id, buyer_id, period_start, period_end)
)
SELECT b.invoice_id, 'usage', r.lease_id, r.pool_id, r.provider_id, r.price_plan_id, r.metric, r.model,
       extract(hour FROM r.hour AT TIME ZONE %(zone)s)::int, sum(r.quantity)
FROM batch AS b JOIN billing_usagerollup AS r
  ON r.buyer_id = b.buyer_id AND r.hour >= b.period_start AND r.hour < b.period_end
WHERE NOT r.late AND NOT EXISTS (
    SELECT 1 FROM marketplace_lease AS rl
    WHERE rl.id = r.lease_id AND rl.commitment = 'reserved' AND r.hour < rl.price_locked_until
)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""

# Late rows, locked in id order: what a rollup adds at the same moment waits, and is either
# billed now or left for the next invoice, never lost.
_LOCK_LATE = """
WITH batch AS (
    SELECT * FROM unnest(%(invoices)s::uuid[], %(buyers)s::uuid[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
        AS b (invoice_id, buyer_id, period_start, period_end)
)
SELECT b.invoice_id, r.id, 'adjustment', r.lease_id, r.pool_id, r.provider_id, r.price_plan_id, r.metric, r.model,
       extract(hour FROM r.hour AT TIME ZONE %(zone)s)::int, r.quantity - r.billed_quantity
FROM batch AS b JOIN billing_usagerollup AS r ON r.buyer_id = b.buyer_id AND r.hour < b.period_end
WHERE r.late AND r.quantity <> r.billed_quantity AND NOT EXISTS (
    SELECT 1 FROM marketplace_lease AS rl
    WHERE rl.id = r.lease_id AND rl.commitment = 'reserved' AND r.hour < rl.price_locked_until
)
ORDER BY r.id
FOR UPDATE OF r
"""


@dataclass
class Unbilled:
    """What an invoice bills: its lines, and the late rows among them, to mark billed; and its
    usage without a price (rows an earlier release stored so), which it cannot bill."""

    lines: list[RatedLine]
    late_rows: list[Any]
    unpriced: list[dict[str, Any]]


def rate_unbilled(*, invoices: Sequence[Any]) -> dict[Any, Unbilled]:
    """Rate what each of these invoices bills (``unbilled_rollups``); lock the late rows it takes.

    The caller holds the invoices locked: the rollups of their periods no longer
    change (they share-lock the invoice while they write). Of a buyer's invoices,
    the oldest takes the late rows. ``late_rows_bill`` marks them billed.
    """
    oldest = {}
    for invoice in sorted(invoices, key=lambda invoice: invoice.period_end, reverse=True):
        oldest[invoice.buyer_id] = invoice
    zone = {"zone": str(local_zone())}
    rows: dict[Any, list[dict[str, Any]]] = {invoice.pk: [] for invoice in invoices}
    late: dict[Any, list[Any]] = {invoice.pk: [] for invoice in invoices}
    with connection.cursor() as cursor:
        cursor.execute(_PERIOD_USAGE, {**_columns(invoices), **zone})
        for invoice_id, *row in cursor.fetchall():
            rows[invoice_id].append(dict(zip((*_GROUP, "unbilled"), row, strict=True)))
        cursor.execute(_LOCK_LATE, {**_columns(list(oldest.values())), **zone})
        for invoice_id, rollup_id, *row in cursor.fetchall():
            rows[invoice_id].append(dict(zip((*_GROUP, "unbilled"), row, strict=True)))
            late[invoice_id].append(rollup_id)
    unbilled = {}
    for invoice_id, invoice_rows in rows.items():
        priced = [row for row in invoice_rows if row["price_plan_id"] is not None]
        unpriced = [row for row in invoice_rows if row["price_plan_id"] is None and row["unbilled"]]
        unbilled[invoice_id] = Unbilled(_lines(priced), late[invoice_id], unpriced)
    return unbilled


def late_rows_bill(*, rollup_ids: list[Any]) -> None:
    """Mark these late rows billed (locked by ``rate_unbilled`` in this transaction)."""
    UsageRollup.objects.filter(pk__in=rollup_ids, late=True).update(billed_quantity=F("quantity"))


def _columns(invoices: Sequence[Any]) -> dict[str, list[Any]]:
    """The invoices as the arrays the batch statements read."""
    return {
        "invoices": [invoice.pk for invoice in invoices],
        "buyers": [invoice.buyer_id for invoice in invoices],
        "starts": [invoice.period_start for invoice in invoices],
        "ends": [invoice.period_end for invoice in invoices],
    }


# A price version never changes once made: each process keeps the ones it has read.
_plans: dict[Any, tuple[PricePlan, list[str]]] = {}


def _plans_with_bands(plan_ids: set[Any]) -> dict[Any, tuple[PricePlan, list[str]]]:
    missing = plan_ids - set(_plans)
    if missing:
        if len(_plans) > 50_000:
            _plans.clear()
        for plan in PricePlan.objects.filter(pk__in=missing).select_related("pool__hub"):
            _plans[plan.pk] = (plan, hour_bands(plan.pool.hub.tariff))
    return {plan_id: _plans[plan_id] for plan_id in plan_ids}


def _lines(rows: list[dict[str, Any]]) -> list[RatedLine]:
    plans = _plans_with_bands({row["price_plan_id"] for row in rows})
    lines: dict[tuple[Any, ...], RatedLine] = {}
    for row in rows:
        plan, bands = plans[row["price_plan_id"]]
        if row["metric"] == UsageMetric.GPU_SECONDS:
            unit, band = InvoiceLine.Unit.CARD_HOUR, bands[row["local_hour"]]
            unit_rate = Decimal(plan.hour_prices[row["local_hour"]])
            per_unit = SECONDS_PER_HOUR
        else:
            side = "input" if row["metric"] == UsageMetric.INPUT_TOKENS else "output"
            unit, band = InvoiceLine.Unit.MILLION_TOKENS, bands[row["local_hour"]]
            unit_rate = plan.token_rate(row["model"], side, band)
            per_unit = TOKENS_PER_UNIT
        key = (row["kind"], row["lease_id"], row["metric"], row["model"], plan.pk, unit_rate, band)
        line = lines.get(key)
        if line is None:
            line = lines[key] = RatedLine(
                kind=row["kind"],
                lease_id=row["lease_id"],
                pool_id=row["pool_id"],
                provider_id=row["provider_id"],
                price_plan_id=plan.pk,
                metric=row["metric"],
                model=row["model"],
                band=band,
                unit=unit,
                per_unit=per_unit,
                rate=unit_rate,
            )
        line.used += row["unbilled"]
    # Lines of one band and two price versions (an hour split at a version's start) oldest version first.
    return sorted(
        lines.values(),
        key=lambda line: (
            line.kind,
            str(line.lease_id),
            line.metric,
            line.model,
            line.band,
            plans[line.price_plan_id][0].effective_from,
        ),
    )
